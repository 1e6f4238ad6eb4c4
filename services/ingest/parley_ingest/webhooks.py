"""Meta's webhook endpoint: verify on the raw bytes, normalise every item, write all, then 200.

Order of checks: size (413, without reading a body over the limit), signature on the raw bytes
(401; nothing reaches Kafka), JSON (400), then everything goes to Kafka: the raw bytes, every
event bound to a tenant of the verifying app, and a dead letter for each event no such tenant
owns (ADR 0100) and each part that does not match Meta's shape (still 200: Meta must not retry a
payload that will never parse). 503 when Kafka does not acknowledge, so Meta retries.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from parley_common.contracts import ContactMerged
from parley_common.meta import InvalidWebhookJson, NormalisedWebhook, decode_webhook, normalise_webhook
from parley_common.meta.signature import find_signing_app, signature_matches
from starlette.types import Receive, Scope, Send

from parley_ingest.contacts import stamp, work_of_webhook
from parley_ingest.domain.records import merge_records, webhook_records
from parley_ingest.publishing import KafkaUnavailable, RecordTooLarge
from parley_ingest.services import BodyBudget, DirectoryTenants, IngestServices

log = logging.getLogger("parley.ingest.webhooks")

SIGNATURE_HEADER = "x-hub-signature-256"
TEXT_PLAIN = b"text/plain; charset=utf-8"
APPLICATION_JSON = b"application/json"
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
_SPAN_ATTRIBUTES = {"http.request.method": "POST", "http.route": "/webhooks/meta/{app_id}"}
_SPAN_ATTRIBUTES_ANY_APP = {"http.request.method": "POST", "http.route": "/webhooks/meta"}

_WEBHOOK_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "X-Hub-Signature-256",
            "in": "header",
            "required": True,
            "description": "sha256=<hex HMAC-SHA256 of the raw body with the Meta app secret>",
            "schema": {"type": "string"},
        }
    ],
    "requestBody": {
        "required": True,
        "description": "Meta's webhook envelope, at most 3 MB; verified on the raw bytes",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "object": {"type": "string"},
                        "entry": {"type": "array", "items": {"type": "object"}},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "Every record of the webhook is acknowledged by Kafka",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"events": {"type": "integer"}, "problems": {"type": "integer"}},
                    }
                }
            },
        },
        "400": {"description": "The body is not JSON"},
        "401": {"description": "Missing or wrong X-Hub-Signature-256"},
        "413": {"description": "Body over 3 MB"},
        "503": {"description": "Kafka is unavailable; Meta retries"},
    },
}


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class _Busy(Exception):
    """The process holds as many request bytes as it may (``max_inflight_body_bytes``)."""


@dataclass(frozen=True)
class WebhookAnswer:
    """What a webhook POST is answered with, whichever HTTP layer carries it."""

    status: int
    body: bytes
    content_type: bytes = TEXT_PLAIN
    retry_after: bool = False

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", self.content_type), (b"content-length", b"%d" % len(self.body))]
        if self.retry_after:
            headers.append((b"retry-after", b"1"))
        return headers

    def response(self) -> Response:
        headers = {"Retry-After": "1"} if self.retry_after else None
        return Response(self.body, status_code=self.status, headers=headers,
                        media_type=self.content_type.decode())


async def _read_body(declared: str | None, chunks: AsyncIterator[bytes], limit: int, budget: BodyBudget) -> bytes:
    """The whole body, or ``_TooLarge`` as soon as it is known to exceed ``limit`` (by its
    Content-Length before reading anything, else while counting the stream). Every byte read is
    taken from ``budget`` (``_Busy`` when it is spent); the caller gives back ``len(body)``."""
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            if not budget.take(len(chunk)):
                size -= len(chunk)
                raise _Busy
            parts.append(chunk)
    except BaseException:
        budget.give(size)
        raise
    return parts[0] if len(parts) == 1 else b"".join(parts)


class WebhookIntake:
    """The webhook POST itself, independent of the HTTP layer (FastAPI route or bare ASGI)."""

    def __init__(self, svc: IngestServices) -> None:
        self.svc = svc

    def _answer(self, span: Span, outcome: str, status: int, body: bytes, **kw: Any) -> WebhookAnswer:
        self.svc.metrics.webhook_requests.labels(outcome).inc()
        span.set_attribute("http.response.status_code", status)
        return WebhookAnswer(status, body, **kw)

    async def receive(
        self,
        app_id: str | None,
        signature: str | None,
        content_length: str | None,
        chunks: AsyncIterator[bytes],
        *,
        parent: Context | None = None,
    ) -> WebhookAnswer:
        svc = self.svc
        started = time.perf_counter()
        with svc.tracer.start_as_current_span(
            "webhook receive", context=parent, kind=SpanKind.SERVER,
            attributes=_SPAN_ATTRIBUTES if app_id is not None else _SPAN_ATTRIBUTES_ANY_APP,
        ) as span:
            try:
                raw = await _read_body(content_length, chunks, svc.settings.max_webhook_bytes, svc.bodies)
            except _TooLarge:
                return self._answer(span, "too_large", 413, b"payload too large")
            except _Busy:
                return self._answer(span, "busy", 503, b"too many request bytes in flight, retry", retry_after=True)
            try:
                return await self._accept(span, app_id, signature, raw, started)
            finally:
                svc.bodies.give(len(raw))

    async def _accept(self, span: Span, app_id: str | None, signature: str | None, raw: bytes,
                      started: float) -> WebhookAnswer:
        svc = self.svc
        directory = svc.tenants
        verified: str | None
        if app_id is not None:
            app = directory.apps.get(app_id)
            verified = app_id if app and signature_matches(raw, signature, app.app_secrets) else None
        else:
            verified = find_signing_app(
                raw, signature, {a.app_id: a.app_secrets for a in directory.apps.values()}
            )
        if verified is None:
            return self._answer(span, "bad_signature", 401, b"invalid signature")
        span.set_attribute("parley.meta_app_id", verified)
        received_at = datetime.now(UTC)
        try:
            document = decode_webhook(raw)
        except InvalidWebhookJson:
            return self._answer(span, "invalid_json", 400, b"body is not valid JSON")
        normalised = normalise_webhook(
            document, received_at=received_at, tenants=DirectoryTenants(directory, verified)
        )
        merges: list[ContactMerged] = []
        # Every customer's contact decided once, here (ADR 0117); it travels with the events.
        work, numbers = work_of_webhook(normalised)
        try:
            resolved = await svc.contacts.resolve(work, phone_number_ids=numbers)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            return self._answer(span, "database_unavailable", 503, b"database unavailable, retry",
                                retry_after=True)
        normalised, merges = stamp(normalised, resolved), resolved.merges
        records = webhook_records(raw, normalised, app_id=verified, received_at=received_at)
        records += merge_records(merges)
        try:
            await svc.writer.write_all(records)
        except RecordTooLarge:
            # webhook_records keeps every record within Kafka's limit; should a producer or
            # broker still refuse one for its size, that is this request's fault, not an outage
            return self._answer(span, "too_large", 413, b"a record of this webhook is too large for Kafka")
        except KafkaUnavailable as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            log.warning(
                "webhook not acknowledged by Kafka", extra={"app_id": verified, "error": str(exc)}
            )
            return self._answer(
                span, "kafka_unavailable", 503, b"Kafka unavailable, retry", retry_after=True
            )
        if merges:
            try:
                await svc.contacts.announced(merges)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("contact merges announced but not marked; they will be announced again")
        _count(svc, normalised)
        span.set_attribute("parley.events", normalised.event_count)
        span.set_attribute("parley.shape_problems", len(normalised.problems))
        answer = self._answer(
            span,
            "accepted",
            200,
            orjson.dumps({"events": normalised.event_count, "problems": len(normalised.problems)}),
            content_type=APPLICATION_JSON,
        )
        svc.metrics.webhook_seconds.observe(time.perf_counter() - started)
        return answer


class WebhookRoute:
    """``POST /webhooks/meta`` and ``POST /webhooks/meta/{app_id}`` as a bare ASGI handler.

    ``match`` picks the requests it serves; everything else goes on to FastAPI. Measured (ADR
    0010): FastAPI's routing, dependency solving, middleware stack and native request span cost
    more per single-message webhook than verifying, normalising and producing it. Behaviour is
    that of the FastAPI routes (which stay registered: they document the route in OpenAPI and
    serve it wherever this handler is not in front).
    """

    PREFIX = "/webhooks/meta"

    def __init__(self, intake: WebhookIntake) -> None:
        self.intake = intake

    def match(self, scope: Scope) -> tuple[bool, str | None]:
        """(serves it, app id) for an HTTP POST to one of the two webhook paths."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False, None
        path: str = scope["path"]
        if path == self.PREFIX:
            return True, None
        if path.startswith(self.PREFIX + "/"):
            app_id = path[len(self.PREFIX) + 1 :]
            if app_id and "/" not in app_id:
                return True, app_id
        return False, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app_id: str | None) -> None:
        signature = content_length = None
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"x-hub-signature-256":
                signature = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name in _TRACE_HEADERS:
                carrier[name.decode("latin-1")] = value.decode("latin-1")

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                body = message.get("body", b"")
                if body:
                    yield body
                if not message.get("more_body", False):
                    return

        try:
            answer = await self.intake.receive(
                app_id, signature, content_length, chunks(), parent=propagate.extract(carrier) if carrier else None
            )
        except _Disconnected:
            return  # the client is gone; nothing was written to Kafka and nobody to answer
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.asgi_headers()})
        await send({"type": "http.response.body", "body": answer.body})


def webhook_router(svc: IngestServices, intake: WebhookIntake | None = None) -> APIRouter:
    router = APIRouter(tags=["meta webhooks"])
    intake = intake or WebhookIntake(svc)

    async def receive(request: Request, app_id: str | None) -> Response:
        answer = await intake.receive(
            app_id, request.headers.get(SIGNATURE_HEADER), request.headers.get("content-length"),
            request.stream(),
        )
        return answer.response()

    @router.post(
        "/webhooks/meta/{app_id}",
        summary="Receive a webhook of one Meta app",
        openapi_extra=_WEBHOOK_OPENAPI,
        response_class=Response,
    )
    async def receive_for_app(app_id: str, request: Request) -> Response:
        return await receive(request, app_id)

    @router.post(
        "/webhooks/meta",
        summary="Receive a webhook of any configured Meta app",
        openapi_extra=_WEBHOOK_OPENAPI,
        response_class=Response,
    )
    async def receive_any_app(request: Request) -> Response:
        return await receive(request, None)

    def _handshake(
        app_ids: list[str], mode: str | None, token: str | None, challenge: str | None
    ) -> Response:
        ok = False
        for app_id in app_ids:
            app = svc.tenants.apps.get(app_id)
            expected = app.verify_token if app else None
            if expected and token is not None:
                ok |= hmac.compare_digest(expected.encode(), token.encode())
        if mode == "subscribe" and ok and challenge is not None:
            return PlainTextResponse(challenge)
        return PlainTextResponse("verification failed", status_code=403)

    handshake_responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "The challenge, echoed",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        403: {"description": "Unknown verify token or mode"},
    }

    @router.get(
        "/webhooks/meta/{app_id}",
        summary="Meta's subscription handshake for one app",
        response_class=PlainTextResponse,
        responses=handshake_responses,
    )
    async def handshake_for_app(
        app_id: str,
        mode: str | None = Query(default=None, alias="hub.mode"),
        token: str | None = Query(default=None, alias="hub.verify_token"),
        challenge: str | None = Query(default=None, alias="hub.challenge"),
    ) -> Response:
        return _handshake([app_id], mode, token, challenge)

    @router.get(
        "/webhooks/meta",
        summary="Meta's subscription handshake (any configured app)",
        response_class=PlainTextResponse,
        responses=handshake_responses,
    )
    async def handshake_any_app(
        mode: str | None = Query(default=None, alias="hub.mode"),
        token: str | None = Query(default=None, alias="hub.verify_token"),
        challenge: str | None = Query(default=None, alias="hub.challenge"),
    ) -> Response:
        return _handshake(list(svc.tenants.apps), mode, token, challenge)

    return router


def _count(svc: IngestServices, normalised: NormalisedWebhook) -> None:
    """Events per kind; events that no tenant of the verifying app owns (dead-lettered, not
    published: ADR 0100) are counted as unknown."""
    m = svc.metrics
    for kind, events in (("message", normalised.messages), ("status", normalised.statuses),
                         ("account_event", normalised.account_events), ("payment", normalised.payments),
                         ("cart", normalised.carts)):
        if events:
            m.webhook_events.labels(kind).inc(len(events))
            unknown = sum(1 for e in events if e.tenant_id is None)
            if unknown:
                m.unknown_number_events.labels(kind).inc(unknown)
    if normalised.problems:
        m.shape_problems.inc(len(normalised.problems))
        for p in normalised.problems:
            log.warning(
                "webhook part does not match Meta's shape; dead-lettered",
                extra={"where": p.where, "reason": p.reason},
            )
