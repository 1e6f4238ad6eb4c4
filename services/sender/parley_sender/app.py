"""Composition root of the sender: runtime, store, Cloud API client, subscribers, HTTP routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from parley_common.runtime import build_runtime, make_app
from parley_common.topics import MESSAGES_OUT, MESSAGES_OUT_RETRY, consumer_group

from parley_sender.api import router as api_router
from parley_sender.cloudapi import CloudApiClient
from parley_sender.consuming import GROUP as SEND_GROUP
from parley_sender.consuming import SendConsumer
from parley_sender.delivery import Metrics, Sender
from parley_sender.effects import Effects
from parley_sender.handlers import register
from parley_sender.observed import show_in_doubt_deadline, watch_in_doubt
from parley_sender.pacing import NumberStates
from parley_sender.settings import SenderSettings
from parley_sender.store import MIGRATIONS, SenderStore
from parley_sender.sweeper import InDoubtSweeper


def create_app(
    settings: SenderSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    settings = settings or SenderSettings()
    rt = build_runtime(
        "sender", settings, migrations=[("sender", MIGRATIONS)], tracer_provider=tracer_provider
    )
    client = CloudApiClient(
        base_override=settings.graph_api_base,
        version_override=settings.graph_api_version,
        timeout_s=settings.http_timeout_s,
        connect_timeout_s=settings.http_connect_timeout_s,
        max_connections=settings.http_max_connections,
    )
    sender: Sender
    effects = Effects(
        broker=rt.broker,
        store=lambda: sender.store,
        producer=rt.producer,
    )
    sender = Sender(
        settings=settings,
        store=None,  # type: ignore[arg-type]  # opened by open_store, before anything consumes
        client=client,
        tenants=lambda: rt.tenants,
        metrics=Metrics.create(rt.registry),
        effects=effects,
        numbers=NumberStates(idle_s=settings.number_idle_s),
        tracer=rt.tracer_provider.get_tracer("parley.sender"),
    )
    register(sender, not_ready=rt.not_ready)
    sweeper = InDoubtSweeper(sender)
    show_in_doubt_deadline(rt.registry, settings.in_doubt_deadline_s)

    watching: list[asyncio.Task[None]] = []

    async def open_store() -> None:
        sender.store = SenderStore(rt.require_pool())
        watching.append(asyncio.create_task(watch_in_doubt(sender.metrics, sender.store)))
        if rt.ops is not None:  # the send requests' own consumer, for the consumer-lag gauge
            rt.ops.watch(consumer_group(SEND_GROUP), [MESSAGES_OUT.name, MESSAGES_OUT_RETRY.name])

    async def close() -> None:
        for task in watching:
            task.cancel()
        await sender.numbers.close()
        await client.aclose()

    rt.on_start.append(open_store)
    rt.on_stop.append(close)
    app = make_app(rt, title="Parley sender", routers=[api_router(sender)])
    app.state.sender = sender

    # The send requests' consumer starts once everything else runs (the store, the producer and the
    # broker it dead-letters through) and stops first: its in-flight calls are recorded and their
    # offsets committed while all of that is still up.
    consumer = SendConsumer(sender)
    app.state.send_consumer = consumer
    app.state.sweeper = sweeper
    runtime_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with runtime_lifespan(a):
            await consumer.start()
            sweeper.start()
            try:
                yield
            finally:
                await sweeper.stop()
                await consumer.stop()

    app.router.lifespan_context = lifespan
    return app
