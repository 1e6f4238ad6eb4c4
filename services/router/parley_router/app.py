"""Composition root of the router: broker, subscriber, models, store, tenant and ops HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from faststream.kafka.annotations import KafkaMessage
from opentelemetry.sdk.trace import TracerProvider
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.deadletter import raw_records, undecoded
from parley_common.endpoint_calls import EndpointOutbox, TenantEndpointClient, WebhookDispatcher
from parley_common.runtime import build_runtime, make_app
from parley_common.topics import MESSAGES_IN, consumer_group

from parley_router.api import IntentLimits, build_router
from parley_router.corpora import load_examples
from parley_router.domain.defaults import load_defaults
from parley_router.domain.language import LanguageIdentifier
from parley_router.domain.pipeline import MessageRouter
from parley_router.handlers import SERVICE, RouterService
from parley_router.model_registry import ModelRegistry
from parley_router.models import default_model
from parley_router.settings import RouterSettings
from parley_router.store import RouterStore

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("parley.router")


def create_app(settings: RouterSettings | None = None, *,
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    settings = settings or RouterSettings()
    rt = build_runtime(SERVICE, settings, migrations=[("router", MIGRATIONS)],
                       tracer_provider=tracer_provider)
    examples = load_examples()
    registry = ModelRegistry(default_model(settings.model_cache_dir), examples, store=None)
    router = MessageRouter(load_defaults(), LanguageIdentifier(), registry.for_tenant,
                           settings.confidence_threshold, encoder_gate=settings.encoder_gate)
    endpoints = TenantEndpointClient(timeout_s=settings.webhook_timeout_s,
                                     connections_per_tenant=settings.webhook_per_tenant_concurrency)
    service = RouterService(rt, router, None, rt.producer)
    tasks: list[asyncio.Task[Any]] = []

    subscriber = rt.broker.subscriber(
        MESSAGES_IN.name, group_id=consumer_group("parley-router"), batch=True, max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms, decoder=undecoded, **CONSUMER_DEFAULTS)

    @subscriber
    async def on_inbound(msg: KafkaMessage) -> None:
        await service.consume(raw_records(msg))

    async def sync_models_forever() -> None:
        while True:
            await asyncio.sleep(settings.model_poll_interval_s)
            try:
                await registry.refresh_api_intents()
                await registry.sync(rt.tenants.tenants.values(), service.routing_of)
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

    async def start() -> None:
        store = RouterStore(rt.require_pool())
        service.store = store
        registry.attach_store(store)
        # Load lingua's language models and touch the classifier before the first batch arrives.
        await asyncio.to_thread(router.understand, [])
        await asyncio.to_thread(router.encoder.load)
        await asyncio.to_thread(router.languages.detect_many, ["hello there", "x" * 80])
        service.dispatcher = WebhookDispatcher(
            EndpointOutbox(rt.require_pool(), "router.webhook_outbox"), endpoints, service.endpoint_target,
            service.dead_letter_call, rt.registry,
            attempts=settings.webhook_attempts, backoff_s=settings.webhook_backoff_s,
            backoff_cap_s=settings.webhook_backoff_cap_s, per_tenant=settings.webhook_per_tenant_concurrency,
            max_in_flight=settings.webhook_max_in_flight, poll_interval_s=settings.webhook_poll_interval_s,
            lease_s=settings.webhook_timeout_s * 2 + 30, metric="parley_router_webhook_attempts_total")
        service.dispatcher.start()
        await registry.refresh_api_intents()
        await registry.sync(rt.tenants.tenants.values(), service.routing_of)
        tasks.append(asyncio.create_task(sync_models_forever()))
        if settings.prune_interval_s > 0:
            tasks.append(asyncio.create_task(prune_forever(store)))

    async def stop() -> None:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if service.dispatcher is not None:
            await service.dispatcher.stop()
        await registry.close()
        await endpoints.aclose()

    rt.on_start.append(start)
    rt.on_stop.append(stop)
    app = make_app(rt, title="Parley router", routers=[build_router(
        rt, registry, service.routing_of, IntentLimits(settings.max_tenant_intents, settings.max_examples_per_intent,
                                                       settings.max_examples_per_tenant))])
    app.state.router_service = service
    app.state.model_registry = registry
    return app
