"""Order events out of billing (ADR 0113): onto ``wa.orders`` and to the tenant's endpoints.

The fold that changes an order writes its event into ``billing.order_events`` (same
transaction). The relay takes unrelayed events in the order they were written (rows locked with
``SKIP LOCKED``, so replicas share the work), publishes them to ``wa.orders`` (keyed by the
number: one order's events stay in order), and in one transaction queues the calls they cause in
``billing.webhook_outbox`` and marks them relayed. A crash between the publish and the commit
publishes again: consumers drop repeats by ``event_id``.

The calls are made by the shared dispatcher of ADR 0105 (``parley_common.endpoint_calls``):
signed ``X-Parley-Signature: t=…,v1=…`` and ``X-Parley-Event-Id``, addresses checked, retried
with backoff on 5xx/408/429/transport errors, dead-lettered (``wa.deadletter``) after the last
attempt or at once on any other answer, at most a few in flight per tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
from parley_common.deadletter import dead_letter_record, publish_dead_letter
from parley_common.endpoint_calls import (
    EndpointOutbox,
    EndpointTarget,
    PendingDelivery,
    TenantEndpointClient,
    WebhookDispatcher,
    delivery_id,
)
from parley_common.producer import JSON_HEADERS, Record
from parley_common.runtime import Runtime
from parley_common.topics import ORDERS
from pydantic import ValidationError

from parley_billing.domain.order_events import CONVERSIONS_ENDPOINT, TenantOrderSettings, calls_for

log = logging.getLogger("parley.billing.order_events")
RELAY_POLL_S = 1.0
OUTBOX_TABLE = "billing.webhook_outbox"


def order_settings(rt: Runtime, tenant_id: str) -> TenantOrderSettings | None:
    """The tenant's ``settings.orders`` now (None: no such tenant, or settings that do not parse)."""
    tenant = rt.tenants.tenants.get(tenant_id)
    if tenant is None:
        return None
    try:
        return TenantOrderSettings.from_tenant_settings(tenant.settings)
    except ValidationError as exc:
        log.error("invalid orders settings; no endpoint calls for this tenant",
                  extra={"tenant_id": tenant_id, "errors": exc.error_count()})
        return None


async def relay_order_events(rt: Runtime, *, limit: int = 200) -> int:
    """Relay one batch of order events; returns how many."""
    pool = rt.require_pool()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT event_id, tenant_id, phone_number_id, body FROM billing.order_events WHERE relayed_at IS NULL"
            " ORDER BY created_at, event_id LIMIT $1 FOR UPDATE SKIP LOCKED", limit)
        if not rows:
            return 0
        # acknowledged by Kafka (in order per number) before the rows are marked
        await rt.producer.send_all([
            Record(ORDERS.name, str(r["phone_number_id"]).encode(), orjson.dumps(r["body"]),
                   (("x-parley-event-id", str(r["event_id"]).encode()),
                    ("x-parley-tenant", str(r["tenant_id"]).encode())))
            for r in rows], headers=JSON_HEADERS)
        calls: list[tuple[str, str, str, str, str, bytes]] = []
        for r in rows:
            settings = order_settings(rt, r["tenant_id"])
            if settings is None:
                continue
            for endpoint, call_id, body in calls_for(r["body"], settings):
                if endpoint == CONVERSIONS_ENDPOINT:
                    first = await conn.fetchval(
                        "INSERT INTO billing.order_conversions (tenant_id, reference_id, conversion_id)"
                        " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
                        r["tenant_id"], r["body"]["reference_id"], call_id)
                    if not first:
                        continue  # an ad converts once per order
                calls.append((delivery_id(call_id, endpoint), r["tenant_id"], endpoint, r["phone_number_id"],
                              call_id, body))
        if calls:
            await conn.executemany(
                f"INSERT INTO {OUTBOX_TABLE} (delivery_id, tenant_id, endpoint, phone_number_id, event_id, body)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id) DO NOTHING", calls)
        await conn.execute("UPDATE billing.order_events SET relayed_at = now() WHERE event_id = ANY($1::text[])",
                           [r["event_id"] for r in rows])
    return len(rows)


async def relay_order_events_forever(rt: Runtime, wake: asyncio.Event, dispatcher: Callable[[], Any] | None = None
                                     ) -> None:
    """Relay whenever facts were stored (``wake``) or at least every second."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), RELAY_POLL_S)
        wake.clear()
        try:
            while await relay_order_events(rt):
                if dispatcher is not None:
                    dispatcher()
        except (asyncpg.PostgresError, OSError, RuntimeError) as exc:
            log.warning("order events not relayed yet", extra={"error": type(exc).__name__})
        except Exception:
            log.exception("relaying order events failed")


def build_dispatcher(rt: Runtime, client: TenantEndpointClient, *, attempts: int, backoff_s: float,
                     backoff_cap_s: float, per_tenant: int, max_in_flight: int, poll_interval_s: float,
                     timeout_s: float) -> WebhookDispatcher:
    """The shared dispatcher over billing's outbox; endpoints read from ``settings.orders``."""

    def target_of(tenant_id: str, name: str) -> EndpointTarget | None:
        settings = order_settings(rt, tenant_id)
        endpoint = settings.endpoint_named(name) if settings else None
        if settings is None or endpoint is None:
            return None
        return EndpointTarget(endpoint.url, endpoint.secret_ref, settings.endpoint_policy.policy())

    async def dead_letter(p: PendingDelivery, exc: BaseException) -> None:
        await publish_dead_letter(rt.producer, dead_letter_record(
            service="billing", topic=ORDERS.name, value=p.body, key=p.phone_number_id.encode(), exc=exc,
            attempts=min(p.attempt, attempts), event_id=f"billing:webhook:{p.delivery_id}",
            headers={"endpoint": p.endpoint, "tenant_id": p.tenant_id}))

    return WebhookDispatcher(
        EndpointOutbox(rt.require_pool(), OUTBOX_TABLE), client, target_of, dead_letter, rt.registry,
        attempts=attempts, backoff_s=backoff_s, backoff_cap_s=backoff_cap_s, per_tenant=per_tenant,
        max_in_flight=max_in_flight, poll_interval_s=poll_interval_s, lease_s=timeout_s * 2 + 30,
        metric="parley_billing_endpoint_attempts_total")
