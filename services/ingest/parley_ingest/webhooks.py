"""Meta's webhook endpoint: verify on the raw bytes, normalise every item, write all, then 200.

Order of checks: size (413, without reading a body over the limit), signature on the raw bytes
(401; nothing reaches Kafka), JSON (400), then everything goes to Kafka: the raw bytes, every
event, and a dead letter for each part that does not match Meta's shape (still 200: Meta must
not retry a payload that will never parse). 503 when Kafka does not acknowledge, so Meta retries.
"""

from __future__ import annotations

import hmac
import logging
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from opentelemetry.trace import SpanKind, Status, StatusCode
from parley_common.meta import InvalidWebhookJson, NormalisedWebhook, decode_webhook, normalise_webhook
from parley_common.meta.signature import find_signing_app, signature_matches
from parley_common.tenancy.directory import TenantDirectory

from parley_ingest.domain.records import webhook_records
from parley_ingest.publishing import KafkaUnavailable
from parley_ingest.services import DirectoryTenants, IngestServices

log = logging.getLogger("parley.ingest.webhooks")

SIGNATURE_HEADER = "x-hub-signature-256"

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


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, or ``_TooLarge`` as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise _TooLarge
        if int(declared) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_router(svc: IngestServices) -> APIRouter:
    router = APIRouter(tags=["meta webhooks"])
    m = svc.metrics

    def _answer(outcome: str, status: int, body: str) -> Response:
        m.webhook_requests.labels(outcome).inc()
        return PlainTextResponse(body, status_code=status)

    async def receive(request: Request, app_id: str | None) -> Response:
        started = time.perf_counter()
        with svc.tracer.start_as_current_span("webhook receive", kind=SpanKind.SERVER) as span:
            try:
                raw = await _read_body(request, svc.settings.max_webhook_bytes)
            except _TooLarge:
                span.set_attribute("http.response.status_code", 413)
                return _answer("too_large", 413, "payload too large")
            directory = svc.tenants
            signature = request.headers.get(SIGNATURE_HEADER)
            verified: str | None
            if app_id is not None:
                app = directory.apps.get(app_id)
                verified = app_id if app and signature_matches(raw, signature, app.app_secrets) else None
            else:
                verified = find_signing_app(
                    raw, signature, {a.app_id: a.app_secrets for a in directory.apps.values()}
                )
            if verified is None:
                span.set_attribute("http.response.status_code", 401)
                return _answer("bad_signature", 401, "invalid signature")
            span.set_attribute("parley.meta_app_id", verified)
            received_at = datetime.now(UTC)
            try:
                document = decode_webhook(raw)
            except InvalidWebhookJson:
                span.set_attribute("http.response.status_code", 400)
                return _answer("invalid_json", 400, "body is not valid JSON")
            normalised = normalise_webhook(
                document, received_at=received_at, tenants=DirectoryTenants(directory, verified)
            )
            records = webhook_records(raw, normalised, app_id=verified, received_at=received_at)
            try:
                await svc.writer.write_all(records)
            except KafkaUnavailable as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute("http.response.status_code", 503)
                log.warning(
                    "webhook not acknowledged by Kafka", extra={"app_id": verified, "error": str(exc)}
                )
                response = _answer("kafka_unavailable", 503, "Kafka unavailable, retry")
                response.headers["Retry-After"] = "1"
                return response
            _count(svc, normalised, directory)
            span.set_attribute("parley.events", normalised.event_count)
            span.set_attribute("parley.shape_problems", len(normalised.problems))
            span.set_attribute("http.response.status_code", 200)
            m.webhook_requests.labels("accepted").inc()
            m.webhook_seconds.observe(time.perf_counter() - started)
            return JSONResponse({"events": normalised.event_count, "problems": len(normalised.problems)})

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


def _count(svc: IngestServices, normalised: NormalisedWebhook, directory: TenantDirectory) -> None:
    """Events per kind; events whose number is not registered (or, for account events, whose
    number and WABA are not) are published anyway and counted as unknown."""
    m = svc.metrics
    for kind, events in (("message", normalised.messages), ("status", normalised.statuses)):
        if events:
            m.webhook_events.labels(kind).inc(len(events))
            unknown = sum(1 for e in events if e.phone_number_id not in directory.numbers)
            if unknown:
                m.unknown_number_events.labels(kind).inc(unknown)
    if normalised.account_events:
        m.webhook_events.labels("account_event").inc(len(normalised.account_events))
        unknown = sum(1 for e in normalised.account_events if e.tenant_id is None)
        if unknown:
            m.unknown_number_events.labels("account_event").inc(unknown)
    if normalised.problems:
        m.shape_problems.inc(len(normalised.problems))
        for p in normalised.problems:
            log.warning(
                "webhook part does not match Meta's shape; dead-lettered",
                extra={"where": p.where, "reason": p.reason},
            )
