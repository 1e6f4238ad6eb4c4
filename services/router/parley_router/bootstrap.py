"""The router built whole: the async half of its composition root (``app.py``).

Called by the app's start hook once the runtime opened the database pool and the producer: it
builds the store, the tenant model registry (with the store it keeps tenant models in), the
message router and the routing service (with its endpoint dispatcher), warms the language and
intent models before the first batch, and registers the Kafka subscriber before the broker starts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from faststream.kafka.annotations import KafkaMessage
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.deadletter import raw_records, undecoded
from parley_common.endpoint_calls import EndpointOutbox, TenantEndpointClient
from parley_common.runtime import Runtime
from parley_common.topics import MESSAGES_IN, consumer_group

from parley_router.corpora import load_examples
from parley_router.domain.defaults import load_defaults
from parley_router.domain.language import LanguageIdentifier
from parley_router.domain.pipeline import MessageRouter
from parley_router.handlers import RouterService
from parley_router.model_registry import ModelRegistry
from parley_router.models import default_model
from parley_router.settings import RouterSettings
from parley_router.store import RouterStore


@dataclass(frozen=True)
class RouterParts:
    store: RouterStore
    registry: ModelRegistry  # the default model and each tenant's own
    service: RouterService  # routes wa.messages.in; its dispatcher calls the tenants' endpoints


async def bootstrap(rt: Runtime, settings: RouterSettings, endpoints: TenantEndpointClient) -> RouterParts:
    store = RouterStore(rt.require_pool())
    default = await asyncio.to_thread(default_model, settings.model_cache_dir)  # trained once, then cached
    registry = ModelRegistry(default, load_examples(), store=store)
    router = MessageRouter(load_defaults(), LanguageIdentifier(), registry.for_tenant,
                           settings.confidence_threshold, encoder_gate=settings.encoder_gate)
    outbox = EndpointOutbox(rt.require_pool(), "router.webhook_outbox")
    service = RouterService(rt, router, store, rt.producer, outbox, endpoints, settings)
    # Load lingua's language models and touch the classifier before the first batch arrives.
    await asyncio.to_thread(router.understand, [])
    await asyncio.to_thread(router.encoder.load)
    await asyncio.to_thread(router.languages.detect_many, ["hello there", "x" * 80])

    @rt.broker.subscriber(MESSAGES_IN.name, group_id=consumer_group("parley-router"), batch=True,
                          max_records=settings.batch_max_records, batch_timeout_ms=settings.batch_timeout_ms,
                          decoder=undecoded, **CONSUMER_DEFAULTS)
    async def on_inbound(msg: KafkaMessage) -> None:
        await service.consume(raw_records(msg))

    return RouterParts(store, registry, service)
