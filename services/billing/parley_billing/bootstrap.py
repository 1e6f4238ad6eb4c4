"""Billing built whole: the async half of its composition root (``app.py``).

Called by the app's lifespan once the runtime opened the database pool and the producer, it
builds the metering store and the send-span links with the pool in hand and registers the Kafka
subscribers on the broker (their failure guards dead-letter through the producer) before the
broker starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_common.deadletter import ConsumerGuard
from parley_common.runtime import Runtime

from parley_billing import handlers
from parley_billing.settings import BillingSettings
from parley_billing.store import Metering, RateCache, TenantLookup
from parley_billing.trace_links import SendSpanLinks


@dataclass(frozen=True)
class BillingParts:
    metering: Metering
    links: SendSpanLinks
    guards: dict[str, ConsumerGuard]  # the Kafka consumers' failure guards, by topic base name


async def bootstrap(rt: Runtime, settings: BillingSettings, lookup: TenantLookup, rates: RateCache) -> BillingParts:
    pool = rt.require_pool()
    metering = Metering(pool, lookup, parallel=settings.parallel_transactions, rates=rates)
    links = SendSpanLinks(rt.tracer_provider.get_tracer("parley.billing"), pool)
    guards = handlers.register(rt.broker, rt.producer, metering, settings, rt.registry, links,
                               tenants=lambda: rt.tenants, not_ready=rt.not_ready)
    return BillingParts(metering, links, guards)
