"""Composition root of billing: runtime, HTTP API, order consumers; the metering store and its
Kafka subscribers are built whole by :func:`parley_billing.bootstrap.bootstrap` when the app starts."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from parley_common.runtime import build_runtime, make_app

from parley_billing import api, order_api, order_handlers
from parley_billing.bootstrap import bootstrap
from parley_billing.observed import MonthGauges, start_watching, stop_watching
from parley_billing.settings import BillingSettings
from parley_billing.store import MIGRATIONS, RateCache, tenant_lookup


def create_app(settings: BillingSettings | None = None, *, tracer_provider: TracerProvider | None = None,
               clock: api.Clock = api.utc_now) -> FastAPI:
    """``clock`` is "now" for finalising months and for estimates without a date (tests pin it)."""
    settings = settings or BillingSettings()
    rt = build_runtime("billing", settings, migrations=[("billing", MIGRATIONS)], tracer_provider=tracer_provider)
    lookup = tenant_lookup(lambda: rt.tenants)
    rates = RateCache()
    month = MonthGauges(rt.registry)
    watching: list[asyncio.Task[None]] = []
    app = make_app(rt, title="Parley billing", routers=[api.build_router(rt, rates, settings, lookup, clock),
                                                        order_api.build_router(rt)])

    async def build() -> None:  # the pool and the producer are open; the broker starts after this
        parts = await bootstrap(rt, settings, lookup, rates)
        app.state.metering = parts.metering
        # failure counters of the Kafka consumers (tests, diagnostics); the order consumers' as orders:<topic>
        app.state.consumer_guards = {**parts.guards, **{f"orders:{k}": g for k, g in order_guards.items()}}
        start_watching(month, rt.require_pool, lambda: rt.tenants.tenants.values(), watching,
                       settings.month_metrics_interval_s, housekeeping=parts.links.prune)

    async def stop() -> None:
        await stop_watching(watching)

    rt.on_start.append(build)
    rt.on_stop.append(stop)
    order_guards = order_handlers.register(rt, rt.registry, settings)
    return app
