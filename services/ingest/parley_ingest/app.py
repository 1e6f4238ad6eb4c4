"""Composition root of ingest: runtime, routes (Meta webhooks, send API), store, error shapes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from pathlib import Path
from typing import cast

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from faststream.kafka import KafkaBroker
from opentelemetry.sdk.trace import TracerProvider
from parley_common.runtime import build_runtime, make_app
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley_ingest import seat_orders
from parley_ingest.api import api_router, request_validation_handler
from parley_ingest.contacts import ContactBook
from parley_ingest.flows import FlowRoute, flow_handler, flows_router, seats_api_router
from parley_ingest.metrics import IngestMetrics
from parley_ingest.publishing import RecordWriter
from parley_ingest.services import BodyBudget, IngestServices
from parley_ingest.settings import IngestSettings
from parley_ingest.store import IdempotencyStore, RateWindows
from parley_ingest.webhooks import WebhookIntake, WebhookRoute, webhook_router

log = logging.getLogger("parley.ingest")

MIGRATIONS = Path(__file__).parent / "migrations"
PURGE_INTERVAL_S = 600.0
# How long a reply naming no one can still find the sender of the message it answers.
INBOUND_CONTACT_DAYS = 30


class ApiBodyLimit:
    """413 for send-API bodies over the limit, by Content-Length or while streaming; 503 when the
    process already holds ``budget``'s worth of request bodies (given back when the request ends).

    (The webhook route checks its own 3 MB limit on the stream it reads, from the same budget.)
    """

    def __init__(self, app: ASGIApp, *, limit: int, budget: BodyBudget, prefix: str = "/v1/") -> None:
        self.app = app
        self.limit = limit
        self.budget = budget
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await _send_413(send)
                    return
                declared = int(value)
        seen = 0
        started = False
        held = 0
        if declared is not None:  # held as a whole before the app reads any of it
            if not self.budget.take(declared):
                await _send_busy(send)
                return
            held = declared

        async def limited_receive() -> Message:
            nonlocal seen, held
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                seen += size
                if seen > self.limit:
                    raise _BodyTooLarge
                if declared is None:  # a streamed body: held as it arrives
                    if not self.budget.take(size):
                        raise _Busy
                    held += size
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _send_413(send)
        except _Busy:
            if not started:
                await _send_busy(send)
        finally:
            self.budget.give(held)


class IngestApp(FastAPI):
    """Ingest's FastAPI app, with Meta's webhook POSTs answered before FastAPI's own stack.

    ``POST /webhooks/meta[/{app_id}]`` goes straight to the bare ASGI ``WebhookRoute``: no
    routing table, dependency solving, middleware chain or FastAPI request span (the route
    opens its own server span). Everything else, lifespan included, is FastAPI as usual.
    Why, with the CPU each way costs per webhook: docs/adr/0010-ingest-hot-path.md.
    """

    webhook_route: WebhookRoute | None = None
    flow_route: FlowRoute | None = None  # POST /flows/{phone_number_id}, the same way (ADR 0112)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.webhook_route
        if route is not None:
            serves, app_id = route.match(scope)
            if serves:
                await route(scope, receive, send, app_id)
                return
        flows = self.flow_route
        if flows is not None and (number := flows.match(scope)) is not None:
            await flows(scope, receive, send, number)
            return
        await super().__call__(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class _Busy(Exception):
    pass


async def _send_413(send: Send) -> None:
    await _send_json(send, 413, b'{"detail":"body too large"}')


async def _send_busy(send: Send) -> None:
    await _send_json(send, 503, b'{"detail":"too many request bytes in flight, retry"}', [(b"retry-after", b"1")])


async def _send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    settings: IngestSettings | None = None, *, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    settings = settings or IngestSettings()
    rt = build_runtime(
        "ingest",
        settings,
        migrations=[("ingest", MIGRATIONS)],
        tracer_provider=tracer_provider,
        linger_ms=settings.kafka_linger_ms,
    )
    svc = IngestServices(
        rt=rt,
        settings=settings,
        metrics=IngestMetrics.register(rt.registry),
        writer=RecordWriter(
            rt.producer, timeout_s=settings.produce_timeout_s, breaker_s=settings.kafka_breaker_s
        ),
        tracer=rt.tracer_provider.get_tracer("parley.ingest"),
        bodies=BodyBudget(settings.max_inflight_body_bytes),
        store=IdempotencyStore(rt.require_pool, ttl_hours=settings.idempotency_ttl_hours),
        rate_windows=RateWindows(rt.require_pool),
        contacts=ContactBook(rt.require_pool),
    )
    tasks: list[asyncio.Task[None]] = []

    async def start_store() -> None:
        tasks.append(asyncio.create_task(_purge_forever(svc.store, svc.rate_windows, svc.contacts)))
        tasks.append(asyncio.create_task(_tune_gc_once_started(rt.broker, settings)))

    async def stop_store() -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    rt.on_start.append(start_store)
    rt.on_stop.append(stop_store)
    if settings.seats_follow_orders:
        seat_orders.register(rt, rt.registry)
    intake = WebhookIntake(svc)
    flows = flow_handler(svc)
    app = make_app(rt, title="Parley ingest",
                   routers=[webhook_router(svc, intake), api_router(svc), flows_router(flows), seats_api_router(svc)],
                   app_class=IngestApp)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_middleware(ApiBodyLimit, limit=settings.max_api_bytes, budget=svc.bodies)
    ingest_app = cast(IngestApp, app)
    ingest_app.webhook_route = WebhookRoute(intake)
    ingest_app.flow_route = FlowRoute(flows)
    ingest_app.state.ingest = svc
    return ingest_app


async def _tune_gc_once_started(broker: KafkaBroker, settings: IngestSettings) -> None:
    """After start-up (the broker's producer and metadata included), freeze what is alive into
    the permanent generation so full collections skip it; optionally collect gen0 less often."""
    deadline = asyncio.get_running_loop().time() + 60
    while not broker.running and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (no start event)
        await asyncio.sleep(0.05)
    if settings.gc_gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, gen1, gen2)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    log.info("garbage collector tuned", extra={"frozen_objects": gc.get_freeze_count(),
                                                "thresholds": gc.get_threshold()})


async def _purge_forever(store: IdempotencyStore, rate_windows: RateWindows, contacts: ContactBook) -> None:
    while True:
        try:
            purged = await store.purge_expired()
            if purged:
                log.info("purged expired idempotency keys", extra={"count": purged})
            await rate_windows.purge(time.time())
            await contacts.purge_inbound(INBOUND_CONTACT_DAYS)
        except Exception:
            log.exception("purging idempotency keys, rate windows or inbound contacts failed")
        await asyncio.sleep(PURGE_INTERVAL_S)
