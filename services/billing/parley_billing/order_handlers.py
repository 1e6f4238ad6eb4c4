"""Kafka subscribers for orders: payment updates and carts (wa.commerce), and the business's
``order_details`` / ``order_status`` messages (wa.messages.out). ADR 0111.

Each record becomes at most one order fact, stored once; offsets are committed after the batch
is stored (a replay finds the facts already there). Failures go through
``parley_common.deadletter.ConsumerGuard`` (ADR 0075): an unreachable database is retried with
backoff (not ready meanwhile); a record that can never be a fact goes to the dead-letter topic on
its own. A payment update for an order Parley never saw is stored (the
order is ``unknown``), counted and logged by its reference id: kept and reported, not dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.deadletter import ConsumerGuard, raw_records, undecoded
from parley_common.endpoint_calls import TenantEndpointClient, WebhookDispatcher
from parley_common.producer import JSON_HEADERS, Record, trace_headers
from parley_common.runtime import Runtime
from parley_common.topics import COMMERCE, MESSAGES_OUT, Topic, consumer_group
from prometheus_client import CollectorRegistry, Counter

from parley_billing import order_store
from parley_billing.domain.orders import OrderError, fulfilment_fact, lookup_fact, payment_fact, requested_fact
from parley_billing.order_relay import build_dispatcher, relay_order_events_forever
from parley_billing.settings import BillingSettings

log = logging.getLogger("parley.billing.orders")
GROUP = "parley-billing"
NOTICE_SWEEP_S = 15.0
# Only these outbound records can be order facts; everything else is skipped before parsing.
_ORDER_MARKERS = (b'"order_details"', b'"order_status"')


def register(rt: Runtime, registry: CollectorRegistry, settings: BillingSettings) -> dict[str, ConsumerGuard]:
    """The order subscribers, each under a failure guard (ADR 0075); returns the guards by topic."""
    broker: KafkaBroker = rt.broker
    facts = Counter("parley_billing_order_facts", "New order facts stored, by kind", ["kind"], registry=registry)
    orphans = Counter("parley_billing_orphan_payments",
                      "Payment updates for a reference_id with no order_details (kept, state unknown)",
                      registry=registry)
    bad = Counter("parley_billing_order_bad_records", "Order records dead-lettered, by topic", ["topic"],
                  registry=registry)
    batch = {"batch": True, "max_records": settings.order_batch_max_records,
             "batch_timeout_ms": settings.batch_timeout_ms,
             "decoder": undecoded, **CONSUMER_DEFAULTS}
    guards = {t.base: ConsumerGuard(rt.producer, service="billing", consumer=f"billing:orders:{t.base}",
                                    not_ready=rt.not_ready) for t in (COMMERCE, MESSAGES_OUT)}
    stored = asyncio.Event()  # a new fact was stored: the order event relay looks now

    def tenant_of(record: dict[str, Any]) -> str:
        """The record's own tenant, bound where it entered Parley and owning its number
        (``TenantDirectory.resolve``, ADR 0100); else ``UnboundEvent``: dead-lettered, never stored."""
        tenant_id, number = record.get("tenant_id"), record.get("phone_number_id")
        return rt.tenants.resolve(tenant_id if isinstance(tenant_id, str) else None,
                                  number if isinstance(number, str) else "").tenant_id

    async def each(topic: Topic, msg: Any, handle: Callable[[dict[str, Any]], Any],
                   wanted: Callable[[bytes], bool] = lambda _: True) -> None:
        """Each wanted record of the batch becomes at most one fact, under the topic's guard: an
        unreachable database is retried with backoff (the facts already stored are not stored
        twice); a record that can never be a fact is narrowed down to and dead-lettered alone."""
        records = [r for r in raw_records(msg) if wanted(r.value if isinstance(r.value, bytes) else b"")]

        async def handle_all(batch: Sequence[Any]) -> None:
            for rec in batch:
                record = orjson.loads(rec.value if isinstance(rec.value, bytes) else b"")
                if type(record) is not dict:
                    raise OrderError("record is not a JSON object")
                await handle(record)

        guard = guards[topic.base]
        dead_before = guard.dead_lettered
        await guard.run(records, handle_all)
        if guard.dead_lettered > dead_before:
            bad.labels(topic.name).inc(guard.dead_lettered - dead_before)
        stored.set()

    async def on_commerce_record(record: dict[str, Any]) -> None:
        pool = rt.require_pool()
        tenant = tenant_of(record)
        if record.get("kind") == "cart":
            if await order_store.record_cart(pool, tenant, record):
                facts.labels("cart").inc()
            return
        if record.get("kind") != "payment":
            raise OrderError(f"unknown commerce record kind {record.get('kind')!r}")
        reference_id, fact = payment_fact(record)
        result = await order_store.record_fact(pool, tenant, reference_id, fact)
        if result.new:
            facts.labels("payment").inc()
            if result.view is not None and result.view.state == "unknown":
                orphans.inc()
                log.warning("payment update for an order Parley has not seen; kept as unknown",
                            extra={"tenant_id": tenant, "reference_id": reference_id,
                                   "payment_status": record.get("status")})

    async def on_outbound_record(record: dict[str, Any]) -> None:
        found = requested_fact(record) or fulfilment_fact(record)
        if found is None:
            return
        reference_id, fact = found
        result = await order_store.record_fact(rt.require_pool(), tenant_of(record), reference_id, fact)
        if result.new:
            facts.labels(fact.kind).inc()

    @broker.subscriber(COMMERCE.name, group_id=consumer_group(GROUP), **batch)
    async def on_commerce(msg: KafkaMessage) -> None:
        await each(COMMERCE, msg, on_commerce_record)

    @broker.subscriber(MESSAGES_OUT.name, group_id=consumer_group(GROUP), **batch)
    async def on_outbound(msg: KafkaMessage) -> None:
        await each(MESSAGES_OUT, msg, on_outbound_record,
                   lambda body: any(m in body for m in _ORDER_MARKERS))

    tasks: list[asyncio.Task[None]] = []
    s = settings
    client = TenantEndpointClient(timeout_s=s.endpoint_timeout_s,
                                  connections_per_tenant=s.endpoint_per_tenant_concurrency)
    dispatchers: list[WebhookDispatcher] = []

    async def start_sweep() -> None:
        dispatcher = build_dispatcher(
            rt, client, attempts=s.endpoint_attempts, backoff_s=s.endpoint_backoff_s,
            backoff_cap_s=s.endpoint_backoff_cap_s, per_tenant=s.endpoint_per_tenant_concurrency,
            max_in_flight=s.endpoint_max_in_flight, poll_interval_s=s.endpoint_poll_interval_s,
            timeout_s=s.endpoint_timeout_s)
        dispatcher.start()
        dispatchers.append(dispatcher)
        tasks.append(asyncio.create_task(_publish_notices_forever(rt)))
        tasks.append(asyncio.create_task(relay_order_events_forever(rt, stored, dispatcher.wake)))
        if s.order_lookup_interval_s > 0:
            tasks.append(asyncio.create_task(_settle_forever(rt, interval_s=s.order_lookup_interval_s,
                                                             pending_for_s=s.order_lookup_after_s)))

    async def stop_sweep() -> None:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for d in dispatchers:
            await d.stop()
        await client.aclose()

    rt.on_start.append(start_sweep)
    rt.on_stop.append(stop_sweep)
    return guards


GRAPH_API = "https://graph.facebook.com"


async def settle_pending_orders(rt: Runtime, client: httpx.AsyncClient, *, pending_for_s: float) -> int:
    """Orders pending past the deadline are looked up with Meta's payment lookup API (the source
    of truth) and what it answers is folded in like a payment update. Returns new facts stored."""
    stored = 0
    for row in await order_store.orders_to_look_up(rt.require_pool(), pending_for_s=pending_for_s):
        app = rt.tenants.app_for_tenant(row["tenant_id"])
        if app is None or not app.access_token or not row["configuration"] or not row["phone_number_id"]:
            continue
        url = (f"{(app.graph_api_base or GRAPH_API).rstrip('/')}/{app.graph_api_version}/{row['phone_number_id']}"
               f"/payments/{row['configuration']}/{row['reference_id']}")
        try:
            r = await client.get(url, headers={"Authorization": f"Bearer {app.access_token}"})
        except httpx.HTTPError as exc:
            log.warning("payment lookup failed", extra={"tenant_id": row["tenant_id"],
                                                        "reference_id": row["reference_id"],
                                                        "error": type(exc).__name__})
            continue
        if r.status_code != 200:
            log.warning("payment lookup refused", extra={"tenant_id": row["tenant_id"],
                                                         "reference_id": row["reference_id"], "status": r.status_code})
            continue
        for payment in r.json().get("payments") or []:
            if isinstance(payment, dict) and payment.get("reference_id") == row["reference_id"]:
                fact = lookup_fact(row["reference_id"], payment, datetime.now(UTC))
                result = await order_store.record_fact(rt.require_pool(), row["tenant_id"], row["reference_id"], fact)
                stored += result.new
    return stored


async def _settle_forever(rt: Runtime, *, interval_s: float, pending_for_s: float) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            await asyncio.sleep(interval_s)
            try:
                settled = await settle_pending_orders(rt, client, pending_for_s=pending_for_s)
                if settled:
                    log.info("pending orders settled by Meta's payment lookup", extra={"facts": settled})
            except (asyncpg.PostgresError, OSError, RuntimeError) as exc:
                log.warning("payment lookups postponed", extra={"error": type(exc).__name__})
            except Exception:
                log.exception("payment lookups failed")


async def publish_notice(rt: Runtime, tenant_id: str, reference_id: str, key: str, notice: dict[str, Any]) -> None:
    """Publish a refund's order_status notice (acknowledged by Kafka), then mark it published.

    The notice's message id is derived from the refund, so publishing it twice sends it once."""
    await rt.producer.send_all([Record(
        MESSAGES_OUT.name, str(notice["phone_number_id"]).encode(), orjson.dumps(notice),
        (*JSON_HEADERS, ("x-parley-event-id", str(notice["event_id"]).encode()),
         ("x-parley-tenant", tenant_id.encode())))], headers=trace_headers())
    await order_store.mark_notice_published(rt.require_pool(), tenant_id, reference_id, key)


async def _publish_notices_forever(rt: Runtime) -> None:
    """Notices whose publish did not happen (crash or Kafka down after the commit) go out later."""
    while True:
        await asyncio.sleep(NOTICE_SWEEP_S)
        try:
            for row in await order_store.unpublished_notices(rt.require_pool()):
                await publish_notice(rt, row["tenant_id"], row["reference_id"], row["idempotency_key"],
                                     row["notice"])
        except (asyncpg.PostgresError, OSError, RuntimeError) as exc:
            log.warning("refund notices not published yet", extra={"error": type(exc).__name__})
        except Exception:
            log.exception("publishing refund notices failed")
