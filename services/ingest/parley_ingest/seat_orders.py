"""Ingest's one Kafka consumer: order events (``wa.orders``) sell or release the seats held for
the order (ADR 0112, 0113).

Billing decides what an order is; ingest owns the seat tables the Flows endpoint writes. Each
``OrderEvent`` is applied by ``SeatStore.follow_order`` (idempotent: selling sold seats or
releasing released holds changes nothing), offsets committed after. Failures go through
``ConsumerGuard`` (ADR 0075) with a readiness set of its own: a seat consumer backing off from
an unreachable database must not take ingest's webhook endpoint out of the load balancer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from faststream.kafka.annotations import KafkaMessage
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.deadletter import ConsumerGuard, raw_records, undecoded
from parley_common.runtime import Runtime
from parley_common.topics import ORDERS, consumer_group
from prometheus_client import CollectorRegistry, Counter

from parley_ingest.domain.seat_orders import seat_action
from parley_ingest.seats import SeatStore

log = logging.getLogger("parley.ingest.seat_orders")
GROUP = "parley-ingest"


class OrderEventError(ValueError):
    """A wa.orders record that is not an order event (names the field)."""


def _event_time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            at = None
        if at is not None and at.tzinfo is not None:
            return at
    raise OrderEventError("occurred_at must be an ISO 8601 time with a zone")


def register(rt: Runtime, registry: CollectorRegistry, *, batch_max_records: int = 500,
             batch_timeout_ms: int = 100) -> ConsumerGuard:
    seats = Counter("parley_ingest_seats_following_orders", "Seats sold or released by order events",
                    ["action"], registry=registry)
    guard = ConsumerGuard(rt.producer, service="ingest", consumer="ingest:orders", not_ready=set())

    async def handle(records: Sequence[Any]) -> None:
        store = SeatStore(rt.require_pool())
        for rec in records:
            event = orjson.loads(rec.value if isinstance(rec.value, bytes) else b"")
            if type(event) is not dict:
                raise OrderEventError("record is not a JSON object")
            action = seat_action(event)
            if action is None:
                continue
            reference_id, event_id = event.get("reference_id"), event.get("event_id")
            if not isinstance(reference_id, str) or not reference_id or not isinstance(event_id, str):
                raise OrderEventError("an order event needs reference_id and event_id")
            tenant_id, number = event.get("tenant_id"), event.get("phone_number_id")
            # the event's own tenant, owning its number (ADR 0100); else UnboundEvent, dead-lettered
            tenant = rt.tenants.resolve(tenant_id if isinstance(tenant_id, str) else None,
                                        number if isinstance(number, str) else "").tenant_id
            changed = await store.follow_order(tenant, reference_id, action, event_id,
                                               _event_time(event.get("occurred_at")))
            if changed:
                seats.labels(action).inc(len(changed))
                log.info("seats follow the order's payment", extra={"tenant_id": tenant, "reference_id": reference_id,
                                                                    "action": action, "seats": len(changed)})

    @rt.broker.subscriber(ORDERS.name, group_id=consumer_group(GROUP), batch=True, max_records=batch_max_records,
                          batch_timeout_ms=batch_timeout_ms, decoder=undecoded, **CONSUMER_DEFAULTS)
    async def on_order_events(msg: KafkaMessage) -> None:
        await guard.run(raw_records(msg), handle)

    return guard
