"""The business send API: ``POST /v1/messages`` and ``POST /v1/messages/batch``.

Per-tenant API keys (Bearer); a key acts only on its own tenant's numbers (403 otherwise).
Per-tenant request rate limits (429 with Retry-After). An optional ``Idempotency-Key``: a repeat
within the TTL returns the first answer, the same key with another body is 409. 202 once every
OutboundMessage is acknowledged by Kafka on ``wa.messages.out``.
"""

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse
from parley_common.broker import MAX_RECORD_BYTES
from parley_common.contracts import OutboundMessage
from parley_common.runtime import TenantDep
from parley_common.tenancy.models import Tenant
from parley_common.topics import MESSAGES_OUT

from parley_ingest.domain.contacts import Contact
from parley_ingest.domain.records import JSON, OutRecord
from parley_ingest.domain.send_requests import (
    Accepted,
    BatchAccepted,
    FieldProblem,
    Problem,
    SendBatchRequest,
    SendMessageRequest,
    ValidationFailed,
    new_message_id,
    request_fingerprint,
)
from parley_ingest.publishing import KafkaUnavailable, RecordTooLarge
from parley_ingest.services import IngestServices
from parley_ingest.store import IdempotencyStore, RateWindows

log = logging.getLogger("parley.ingest.api")

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat within 24 h returns the first answer; the same key with another body is 409",
    ),
]


class TenantRateLimits:
    """Per-tenant request rates, counted in PostgreSQL (``RateWindows``) so that a tenant's limit
    holds across every ingest replica; ``limits`` notation ("50/second"), a tenant's
    ``settings.ingest_rate_limit`` overriding the default."""

    def __init__(self, default: str, windows: RateWindows) -> None:
        self._default = parse(default)
        self._windows = windows
        self._parsed: dict[str, RateLimitItem] = {}

    def _limit_for(self, tenant: Tenant) -> RateLimitItem:
        spec = tenant.settings.get("ingest_rate_limit")
        if not isinstance(spec, str):
            return self._default
        if spec not in self._parsed:
            if len(self._parsed) >= 1024:  # one entry per distinct setting: bounded even if settings churn
                self._parsed.clear()
            try:
                self._parsed[spec] = parse(spec)
            except ValueError:
                log.error("invalid ingest_rate_limit in tenant settings", extra={"tenant": tenant.tenant_id})
                self._parsed[spec] = self._default
        return self._parsed[spec]

    async def retry_after(self, tenant: Tenant) -> int | None:
        """None when the request may go ahead (and counts it); else seconds to wait."""
        limit = self._limit_for(tenant)
        window_s, now = limit.get_expiry(), time.time()
        if await self._windows.take(tenant.tenant_id, limit.amount, window_s, now):
            return None
        return max(1, math.ceil(window_s - now % window_s))


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def validation_failed(errors: list[tuple[str, str]]) -> JSONResponse:
    return JSONResponse(
        ValidationFailed(
            errors=[FieldProblem(field=f, reason=r) for f, r in errors]
        ).model_dump(),
        status_code=422,
    )


async def request_validation_handler(_: Request, exc: Exception) -> JSONResponse:
    """422 with the field and the reason (400 when the body is not JSON at all)."""
    assert isinstance(exc, RequestValidationError)
    errors: list[tuple[str, str]] = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            return _problem(400, "body is not valid JSON")
        loc = [str(part) for part in e.get("loc", ())]
        if loc and loc[0] in ("body", "header", "query", "path"):
            loc = loc[1:]
        errors.append((".".join(loc) or "body", str(e.get("msg", "invalid"))))
    return validation_failed(errors)


_COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not JSON"},
    401: {"model": Problem, "description": "Missing or unknown API key"},
    403: {"model": Problem, "description": "'from' is not a number of the key's tenant"},
    409: {"model": Problem, "description": "Idempotency-Key reused with another body, or still in flight"},
    413: {"model": Problem, "description": "Body too large, or a message too large for one Kafka record"},
    422: {"model": ValidationFailed, "description": "Invalid field, with the reason"},
    429: {"model": Problem, "description": "Tenant's request rate exceeded; see Retry-After"},
    503: {"model": Problem, "description": "Kafka or the database is unavailable; retry"},
}


_DATABASE_DOWN = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class SendAcceptance:
    """Valid send requests of a tenant become records on ``wa.messages.out``: only from the
    tenant's own numbers (403), at most once per ``Idempotency-Key`` (the first answer again, 409
    for another body or while the first is in flight), 202 once Kafka acknowledged every record."""

    def __init__(self, svc: IngestServices) -> None:
        self.svc = svc

    async def accept(
        self,
        tenant: Tenant,
        messages: list[SendMessageRequest],
        fingerprint: str,
        key: str | None,
        *,
        endpoint: str,
        origin: str,
        answer: Callable[[list[str]], dict[str, Any]],
        request: Request,
    ) -> JSONResponse:
        for i, m in enumerate(messages):
            if m.from_ not in tenant.phone_number_ids:
                where = "from" if endpoint == "messages" else f"messages.{i}.from"
                return _problem(403, f"'{where}' is not a phone number id of this API key's tenant")
        contacts, refused = await self._addressees(tenant, messages, endpoint)
        if refused is not None:
            return refused
        store = self.svc.store
        if key is not None:
            earlier = await self._reserve(store, tenant, key, request_fingerprint(endpoint, fingerprint))
            if earlier is not None:
                return earlier
        now = datetime.now(UTC)
        source = f"api_key:{request.state.api_key_id}"
        outbound = [
            m.to_outbound(
                tenant_id=tenant.tenant_id,
                message_id=new_message_id(tenant.tenant_id, key, i),
                now=now,
                origin=origin,
                tenant_source=source,
                contact=contacts[i],
            )
            for i, m in enumerate(messages)
        ]
        refused = await self._publish(store, tenant, key, outbound, endpoint)
        if refused is not None:
            return refused
        body = answer([o.message_id for o in outbound])
        if key is not None:
            try:
                await store.complete(tenant.tenant_id, key, 202, body)
            except _DATABASE_DOWN:
                # The messages are on Kafka; a retry with this key re-derives the same message ids.
                log.warning("could not store idempotent answer", extra={"tenant": tenant.tenant_id})
        for o in outbound:
            self.svc.metrics.api_messages.labels(tenant.tenant_id, o.type).inc()
        return JSONResponse(body, status_code=202)

    async def _addressees(
        self, tenant: Tenant, messages: list[SendMessageRequest], endpoint: str
    ) -> tuple[list[Contact | None], JSONResponse | None]:
        """Each message's contact (a reply naming only the inbound message goes to its sender), or
        the answer saying which message names no one."""
        try:
            contacts = await self.svc.contacts.addressees(
                tenant.tenant_id, [(m.to, m.to_user_id, m.reply_to) for m in messages])
        except _DATABASE_DOWN:
            return [], _problem(503, "database unavailable, retry", {"Retry-After": "1"})
        unknown = [
            ("reply_to" if endpoint == "messages" else f"messages.{i}.reply_to",
             "names no inbound message of this tenant; give 'to' or 'to_user_id'")
            for i, (m, c) in enumerate(zip(messages, contacts, strict=True)) if c is None and not (m.to or m.to_user_id)
        ]
        return contacts, validation_failed(unknown) if unknown else None

    @staticmethod
    async def _reserve(store: IdempotencyStore, tenant: Tenant, key: str, request_hash: str) -> JSONResponse | None:
        """Take the key for this request; or the answer when the key was taken before."""
        try:
            stored = await store.reserve(tenant.tenant_id, key, request_hash)
        except _DATABASE_DOWN:
            return _problem(503, "database unavailable, retry", {"Retry-After": "1"})
        if stored is None:
            return None
        if stored.request_hash != request_hash:
            return _problem(409, "Idempotency-Key was used with a different request")
        if stored.status_code is None:
            return _problem(409, "a request with this Idempotency-Key is still in flight")
        return JSONResponse(stored.response, status_code=stored.status_code, headers={"Idempotent-Replayed": "true"})

    async def _publish(
        self, store: IdempotencyStore, tenant: Tenant, key: str | None, outbound: list[OutboundMessage], endpoint: str
    ) -> JSONResponse | None:
        """Every message on Kafka, or the answer saying why none is (the key is given back)."""
        records = [
            OutRecord(
                MESSAGES_OUT.name,
                o.model_dump_json().encode(),
                o.phone_number_id.encode(),
                {"content-type": JSON, "x-parley-event-id": o.event_id, "x-parley-tenant": o.tenant_id or ""},
            )
            for o in outbound
        ]
        try:
            await self.svc.writer.write_all(records)
        except (KafkaUnavailable, RecordTooLarge) as exc:
            if key is not None:
                try:
                    await store.release(tenant.tenant_id, key)
                except _DATABASE_DOWN:
                    log.warning(
                        "could not release idempotency key after a Kafka failure",
                        extra={"tenant": tenant.tenant_id},
                    )
            if isinstance(exc, RecordTooLarge):
                where = "the message" if endpoint == "messages" or exc.index < 0 else f"messages.{exc.index}"
                return _problem(413, f"{where} would be a {exc.size}-byte Kafka record; "
                                     f"the limit is {MAX_RECORD_BYTES} bytes")
            return _problem(503, "Kafka unavailable, retry", {"Retry-After": "1"})
        return None


def api_router(svc: IngestServices) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["send API"])
    limits = TenantRateLimits(svc.settings.api_rate_limit, svc.rate_windows)
    acceptance = SendAcceptance(svc)

    async def authenticated_tenant(tenant: TenantDep) -> Tenant:
        try:
            wait = await limits.retry_after(tenant)
        except _DATABASE_DOWN as exc:
            raise HTTPException(503, "database unavailable, retry", headers={"Retry-After": "1"}) from exc
        if wait is not None:
            raise HTTPException(429, "request rate limit exceeded", headers={"Retry-After": str(wait)})
        return tenant

    @router.post(
        "/messages",
        status_code=202,
        response_model=Accepted,
        responses=_COMMON_RESPONSES,
        summary="Send one message",
    )
    async def send_message(
        request: Request,
        message: SendMessageRequest,
        tenant: Annotated[Tenant, Depends(authenticated_tenant)],
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        problems = message.problems()
        response = validation_failed(problems) if problems else await acceptance.accept(
            tenant,
            [message],
            message.fingerprint(),
            idempotency_key,
            endpoint="messages",
            origin="api",
            answer=lambda ids: Accepted(id=ids[0]).model_dump(),
            request=request,
        )
        svc.metrics.api_requests.labels("messages", str(response.status_code)).inc()
        return response

    @router.post(
        "/messages/batch",
        status_code=202,
        response_model=BatchAccepted,
        responses=_COMMON_RESPONSES,
        summary="Send up to 1,000 messages, all or none",
    )
    async def send_batch(
        request: Request,
        batch: SendBatchRequest,
        tenant: Annotated[Tenant, Depends(authenticated_tenant)],
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        if len(batch.messages) > svc.settings.max_batch_messages:
            return validation_failed([("messages", f"at most {svc.settings.max_batch_messages} messages")])
        problems = batch.problems()
        response = validation_failed(problems) if problems else await acceptance.accept(
            tenant,
            list(batch.messages),
            batch.fingerprint(),
            idempotency_key,
            endpoint="batch",
            origin="campaign",
            answer=lambda ids: BatchAccepted(ids=ids).model_dump(),
            request=request,
        )
        svc.metrics.api_requests.labels("batch", str(response.status_code)).inc()
        return response

    return router
