"""Composition root of the router: runtime, tenant HTTP, background model sync and pruning; the
store, models, routing service and its subscriber are built whole by
:func:`parley_router.bootstrap.bootstrap` when the app starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from parley_common.endpoint_calls import TenantEndpointClient
from parley_common.runtime import build_runtime, make_app

from parley_router.api import IntentLimits, build_router
from parley_router.bootstrap import RouterParts, bootstrap
from parley_router.handlers import SERVICE
from parley_router.settings import RouterSettings
from parley_router.store import RouterStore

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("parley.router")


def create_app(settings: RouterSettings | None = None, *,
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    settings = settings or RouterSettings()
    rt = build_runtime(SERVICE, settings, migrations=[("router", MIGRATIONS)],
                       tracer_provider=tracer_provider)
    endpoints = TenantEndpointClient(timeout_s=settings.webhook_timeout_s,
                                     connections_per_tenant=settings.webhook_per_tenant_concurrency)
    app = make_app(rt, title="Parley router", routers=[build_router(
        IntentLimits(settings.max_tenant_intents, settings.max_examples_per_intent,
                     settings.max_examples_per_tenant))])
    tasks: list[asyncio.Task[Any]] = []

    async def sync_models_forever(parts: RouterParts) -> None:
        while True:
            await asyncio.sleep(settings.model_poll_interval_s)
            try:
                await parts.registry.refresh_api_intents()
                await parts.registry.sync(rt.tenants.tenants.values(), parts.service.routing_of)
            except Exception:
                log.exception("tenant model sync failed; retrying on the next poll")

    async def prune_forever(store: RouterStore) -> None:
        # The dedupe table only needs to outlive redeliveries (Meta retries, topic retention).
        while True:
            try:
                status = await store.prune_routed(settings.routed_retention_days)
                log.info("pruned routed wamids", extra={"status": status,
                                                       "retention_days": settings.routed_retention_days})
            except Exception:
                log.exception("pruning router.routed failed; retrying later")
            await asyncio.sleep(settings.prune_interval_s)

    async def start() -> None:  # the pool and the producer are open; the broker starts after this
        parts = await bootstrap(rt, settings, endpoints)
        app.state.router_parts = parts
        app.state.router_service = parts.service
        app.state.model_registry = parts.registry
        parts.service.dispatcher.start()
        await parts.registry.refresh_api_intents()
        await parts.registry.sync(rt.tenants.tenants.values(), parts.service.routing_of)
        tasks.append(asyncio.create_task(sync_models_forever(parts)))
        if settings.prune_interval_s > 0:
            tasks.append(asyncio.create_task(prune_forever(parts.store)))

    async def stop() -> None:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        parts: RouterParts | None = getattr(app.state, "router_parts", None)
        if parts is not None:
            await parts.service.dispatcher.stop()
            await parts.registry.close()
        await endpoints.aclose()

    rt.on_start.append(start)
    rt.on_stop.append(stop)
    return app
