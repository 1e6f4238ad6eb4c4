"""Composition root of billing: runtime, metering store, Kafka batch subscribers, HTTP API."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from parley_common.runtime import build_runtime, make_app

from parley_billing import api, handlers, order_api, order_handlers
from parley_billing.observed import MonthGauges, start_watching, stop_watching
from parley_billing.settings import BillingSettings
from parley_billing.store import MIGRATIONS, Metering, tenant_lookup
from parley_billing.trace_links import SendSpanLinks


def create_app(settings: BillingSettings | None = None, *, tracer_provider: TracerProvider | None = None,
               clock: api.Clock = api.utc_now) -> FastAPI:
    """``clock`` is "now" for finalising months and for estimates without a date (tests pin it)."""
    settings = settings or BillingSettings()
    rt = build_runtime("billing", settings, migrations=[("billing", MIGRATIONS)], tracer_provider=tracer_provider)
    lookup = tenant_lookup(lambda: rt.tenants)
    metering = Metering(None, lookup, parallel=settings.parallel_transactions)  # pool attached at start

    month = MonthGauges(rt.registry)
    watching: list[asyncio.Task[None]] = []

    links = SendSpanLinks(rt.tracer_provider.get_tracer("parley.billing"))

    async def attach_pool() -> None:
        metering.pool = links.pool = rt.require_pool()
        start_watching(month, rt.require_pool, lambda: rt.tenants.tenants.values(), watching,
                       settings.month_metrics_interval_s, housekeeping=links.prune)

    async def stop() -> None:
        await stop_watching(watching)

    rt.on_start.append(attach_pool)
    rt.on_stop.append(stop)
    guards = handlers.register(rt.broker, metering, settings, rt.registry, links, tenants=lambda: rt.tenants,
                               not_ready=rt.not_ready)
    order_guards = order_handlers.register(rt, rt.registry, settings)
    app = make_app(rt, title="Parley billing", routers=[api.build_router(rt, metering, settings, lookup, clock),
                                                        order_api.build_router(rt)])
    app.state.metering = metering
    # failure counters of the Kafka consumers (tests, diagnostics); the order consumers' as orders:<topic>
    app.state.consumer_guards = {**guards, **{f"orders:{k}": g for k, g in order_guards.items()}}
    return app
