"""Composition root of the sender: runtime, Cloud API client, HTTP routes; the objects that need
the open pool and producer are built whole by :func:`parley_sender.bootstrap.bootstrap` when the
app starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from parley_common.runtime import build_runtime, make_app
from parley_common.topics import MESSAGES_OUT, MESSAGES_OUT_RETRY, consumer_group

from parley_sender.api import router as api_router
from parley_sender.bootstrap import bootstrap
from parley_sender.cloudapi import CloudApiClient
from parley_sender.consuming import GROUP as SEND_GROUP
from parley_sender.consuming import SendConsumer
from parley_sender.delivery import Metrics
from parley_sender.observed import show_in_doubt_deadline, watch_in_doubt
from parley_sender.settings import SenderSettings
from parley_sender.store import MIGRATIONS
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
    metrics = Metrics.create(rt.registry)
    show_in_doubt_deadline(rt.registry, settings.in_doubt_deadline_s)
    app = make_app(rt, title="Parley sender", routers=[api_router()])
    watching: list[asyncio.Task[None]] = []

    async def build() -> None:  # the pool and the producer are open; the broker starts after this
        parts = await bootstrap(rt, settings, client, metrics)
        app.state.sender = parts.sender
        app.state.send_consumer = parts.send_consumer
        app.state.sweeper = parts.sweeper
        watching.append(asyncio.create_task(watch_in_doubt(metrics, parts.sender.store)))
        if rt.ops is not None:  # the send requests' own consumer, for the consumer-lag gauge
            rt.ops.watch(consumer_group(SEND_GROUP), [MESSAGES_OUT.name, MESSAGES_OUT_RETRY.name])

    async def close() -> None:
        for task in watching:
            task.cancel()
        if hasattr(app.state, "sender"):
            await app.state.sender.numbers.close()
        await client.aclose()

    rt.on_start.append(build)
    rt.on_stop.append(close)

    # The send requests' consumer starts once everything else runs (the store, the producer it
    # writes results and dead letters through, the broker) and stops first: its in-flight calls
    # are recorded and their offsets committed while all of that is still up.
    runtime_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with runtime_lifespan(a):
            consumer: SendConsumer = a.state.send_consumer
            sweeper: InDoubtSweeper = a.state.sweeper
            await consumer.start()
            sweeper.start()
            try:
                yield
            finally:
                await sweeper.stop()
                await consumer.stop()

    app.router.lifespan_context = lifespan
    return app
