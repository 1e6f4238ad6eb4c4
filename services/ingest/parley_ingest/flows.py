"""The WhatsApp Flows data endpoint Meta calls: ``POST /flows/{phone_number_id}`` (ADR 0112).

Order of checks, each with the status Meta documents: the number is a tenant's (404), the body
is at most 1 MB (413), ``X-Hub-Signature-256`` verifies with the tenant's app secret (432), the
request decrypts with one of the number's private keys (421; two keys during a rotation), the
flow token is valid (427). ``ping`` and error notifications are answered here; ``INIT``,
``data_exchange`` and ``BACK`` go to the tenant's flow backend: its own at its URL when the
registry names one (``flow_backends.py``, ADR 0123), else the reference seat-selection backend
(``seats.py``). A backend that does not answer in time is a 503, one that answers what Meta would
refuse a 502, never a half answer. The answer is encrypted with the request's key and the
inverted IV. Nothing is written before the request is verified and decrypted.

Keys come from the tenant registry's settings (secrets by reference, as everywhere):
``settings.flows.private_key_refs`` (current key first), or per number
``settings.flows.numbers.<phone_number_id>.private_key_refs``; ``settings.flows.hold_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, HTTPException, Path, Request, Response
from opentelemetry.trace import SpanKind
from parley_common.meta.signature import signature_matches
from parley_common.runtime import TenantDep
from parley_common.storable import StorableStr
from parley_common.tenancy.models import SecretError, Tenant, resolve_secret
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from parley_ingest.domain.flows import (
    BACKEND_ACTIONS,
    BAD_SIGNATURE,
    CANNOT_DECRYPT,
    FLOW_TOKEN_EXPIRED,
    FlowDecryptError,
    builtin_answer,
    decrypt_request,
    encrypt_response,
)
from parley_ingest.flow_backends import (
    BackendChoice,
    FlowBackend,
    FlowBackendInvalid,
    FlowBackendUnavailable,
    HttpFlowBackend,
    backend_choice,
)
from parley_ingest.seats import FlowTokenInvalid, SeatSelectionBackend, SeatStore
from parley_ingest.services import IngestServices

log = logging.getLogger("parley.ingest.flows")
MAX_FLOW_BODY = 1024 * 1024
DEFAULT_HOLD_SECONDS = 300.0
REFERENCE_BACKEND_TIMEOUT_S = 5.0  # the in-process seat backend (PostgreSQL stalled): 503 well inside Meta's 10 s


class FlowKeyring:
    """Private keys per number, parsed once per distinct set of references (parsing costs ms)."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, ...], tuple[rsa.RSAPrivateKey, ...]] = {}

    def keys_for(self, tenant: Tenant, phone_number_id: str) -> tuple[rsa.RSAPrivateKey, ...]:
        flows = tenant.settings.get("flows")
        if not isinstance(flows, dict):
            return ()
        numbers = flows.get("numbers")
        per_number = numbers.get(phone_number_id) if isinstance(numbers, dict) else None
        refs = (per_number or {}).get("private_key_refs") if isinstance(per_number, dict) else None
        refs = refs or flows.get("private_key_refs")
        if not isinstance(refs, list) or not refs:
            return ()
        key = tuple(str(r) for r in refs)
        if key not in self._parsed:
            self._parsed[key] = tuple(_load_key(r) for r in key)
        return self._parsed[key]


def _load_key(ref: str) -> rsa.RSAPrivateKey:
    try:
        pem = resolve_secret(ref)
    except SecretError as exc:
        raise FlowDecryptError(str(exc)) from None
    if pem is None:
        raise FlowDecryptError(f"private key reference {ref!r} is empty")
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FlowDecryptError(f"private key {ref!r} is not an RSA key")
    return key


FlowHandler = Callable[[str, Request], Awaitable[Response]]


def flow_handler(svc: IngestServices, *, backend: FlowBackend | None = None) -> FlowHandler:
    """The endpoint itself, independent of the HTTP layer (FastAPI route or bare ASGI route)."""
    keyring = FlowKeyring()
    m_requests = Counter("parley_ingest_flow_requests", "Flow endpoint requests, by outcome", ["outcome"],
                         registry=svc.rt.registry)
    m_seconds = Histogram("parley_ingest_flow_seconds", "Flow endpoint answer time", registry=svc.rt.registry,
                          buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
    backends: dict[tuple[str, str, Any], FlowBackend] = {}
    choices: dict[tuple[str, str], tuple[Tenant, BackendChoice]] = {}
    clients: dict[str, httpx.AsyncClient] = {}  # one connection pool per tenant: a slow one fills only its own

    async def close_clients() -> None:
        for client in clients.values():
            await client.aclose()
        clients.clear()

    svc.rt.on_stop.append(close_clients)

    def backend_for(tenant: Tenant, phone_number_id: str) -> tuple[FlowBackend, float | None]:
        """The backend and the deadline the endpoint enforces itself (None: the backend enforces it)."""
        if backend is not None:
            return backend, REFERENCE_BACKEND_TIMEOUT_S
        seen = choices.get((tenant.tenant_id, phone_number_id))
        if seen is None or seen[0] is not tenant:  # the directory hands out a new Tenant when settings change
            seen = choices[(tenant.tenant_id, phone_number_id)] = (tenant, backend_choice(tenant, phone_number_id))
        choice = seen[1]
        key = (tenant.tenant_id, phone_number_id if choice.spec else "", choice)
        if key not in backends:
            if choice.spec is not None:
                if tenant.tenant_id not in clients:
                    clients[tenant.tenant_id] = httpx.AsyncClient(
                        follow_redirects=False, trust_env=False,
                        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))
                backends[key] = HttpFlowBackend(clients[tenant.tenant_id], choice.spec, choice.policy,
                                                phone_number_id)
            else:
                flows = tenant.settings.get("flows") or {}
                hold = float(flows.get("hold_seconds", DEFAULT_HOLD_SECONDS)) if isinstance(flows, dict) else 300.0
                backends[key] = SeatSelectionBackend(SeatStore(svc.rt.require_pool()), hold_seconds=hold)
        return backends[key], (None if choice.spec is not None else REFERENCE_BACKEND_TIMEOUT_S)

    def answer(outcome: str, status: int, body: bytes = b"", media_type: str = "text/plain") -> Response:
        m_requests.labels(outcome).inc()
        return Response(body, status_code=status, media_type=media_type)

    async def flow_endpoint(phone_number_id: str, request: Request) -> Response:
        started = time.perf_counter()
        with svc.tracer.start_as_current_span("flow request", kind=SpanKind.SERVER,
                                              attributes={"http.route": "/flows/{phone_number_id}"}) as span:
            try:
                response = await _serve(phone_number_id, request)
                span.set_attribute("http.response.status_code", response.status_code)
                return response
            finally:
                m_seconds.observe(time.perf_counter() - started)

    async def _serve(phone_number_id: str, request: Request) -> Response:
        directory = svc.tenants
        tenant = directory.tenant_for_number(phone_number_id)
        app = directory.apps.get(tenant.app_id) if tenant else None
        if tenant is None or app is None:
            return answer("unknown_number", 404, b"unknown phone number id")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_FLOW_BODY):
            return answer("too_large", 413, b"payload too large")
        raw = await request.body()
        if len(raw) > MAX_FLOW_BODY:
            return answer("too_large", 413, b"payload too large")
        if not signature_matches(raw, request.headers.get("x-hub-signature-256"), app.app_secrets):
            return answer("bad_signature", BAD_SIGNATURE, b"invalid signature")
        try:
            keys: Sequence[rsa.RSAPrivateKey] = keyring.keys_for(tenant, phone_number_id)
            if not keys:
                raise FlowDecryptError("no Flows private key is configured for this number")
            decrypted = decrypt_request(_json(raw), keys)
        except (FlowDecryptError, ValueError) as exc:
            log.warning("flow request not decrypted", extra={"tenant_id": tenant.tenant_id,
                                                              "reason": str(exc)[:200]})
            return answer("cannot_decrypt", CANNOT_DECRYPT, b"cannot decrypt")
        payload = decrypted.payload
        response = builtin_answer(payload)
        outcome = "builtin"
        if response is None:
            if decrypted.action not in BACKEND_ACTIONS:
                return answer("unknown_action", 400, b"unknown action")
            try:
                chosen, deadline = backend_for(tenant, phone_number_id)
                if deadline is None:
                    response = await chosen.handle(tenant.tenant_id, payload)
                else:
                    response = await asyncio.wait_for(chosen.handle(tenant.tenant_id, payload), deadline)
            except FlowTokenInvalid as exc:
                return answer("token_invalid", FLOW_TOKEN_EXPIRED, orjson.dumps({"error_msg": str(exc)}),
                              "application/json")
            except (FlowBackendUnavailable, TimeoutError) as exc:
                log.warning("flow backend unavailable", extra={"tenant_id": tenant.tenant_id,
                                                               "reason": str(exc)[:200] or "timed out"})
                return answer("backend_unavailable", 503, b"flow backend unavailable")
            except (FlowBackendInvalid, ValueError) as exc:
                log.warning("flow backend failed", extra={"tenant_id": tenant.tenant_id, "reason": str(exc)[:200]})
                return answer("backend_invalid", 502, b"flow backend failed")
            outcome = "answered"
        return answer(outcome, 200, encrypt_response(response, decrypted.aes_key, decrypted.iv))

    return flow_endpoint


def flows_router(handler: FlowHandler) -> APIRouter:
    """The endpoint as a FastAPI route: documents it in OpenAPI and serves it wherever the bare
    route below is not in front."""
    router = APIRouter(tags=["Meta"])

    @router.post("/flows/{phone_number_id}", summary="WhatsApp Flows data endpoint (Meta; encrypted)",
                 responses={421: {"description": "cannot decrypt"}, 427: {"description": "flow token invalid"},
                            432: {"description": "bad X-Hub-Signature-256"},
                            502: {"description": "the tenant's flow backend answered what Meta would refuse"},
                            503: {"description": "the tenant's flow backend did not answer in time"}})
    async def flow_endpoint(phone_number_id: str, request: Request) -> Response:
        return await handler(phone_number_id, request)

    return router


class FlowRoute:
    """``POST /flows/{phone_number_id}`` as a bare ASGI handler in front of FastAPI (as the webhook
    route, ADR 0010): Meta waits for every screen, and FastAPI's routing, dependencies and
    per-message ASGI spans cost about as much CPU as the decryption."""

    PREFIX = "/flows/"

    def __init__(self, handler: FlowHandler) -> None:
        self.handler = handler

    def match(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(self.PREFIX):
            return None
        number = scope["path"][len(self.PREFIX):]
        return number if number and "/" not in number else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, phone_number_id: str) -> None:
        response = await self.handler(phone_number_id, Request(scope, receive))
        await response(scope, receive, send)


class SellRequest(BaseModel):
    reference_id: StorableStr = Field(min_length=1, max_length=35, description="the paid order's reference_id")


def seats_api_router(svc: IngestServices) -> APIRouter:
    """The business ends a hold: sold when its order is paid, released when the payment failed."""
    router = APIRouter(prefix="/v1/flows/seats", tags=["flows"])

    def store() -> SeatStore:
        return SeatStore(svc.rt.require_pool())

    @router.post("/holds/{flow_token}/sell", summary="The flow token's held seats become sold")
    async def sell(tenant: TenantDep, flow_token: Annotated[StorableStr, Path(min_length=1, max_length=256)],
                   body: SellRequest) -> dict[str, Any]:
        sold = await store().sell(tenant.tenant_id, flow_token, body.reference_id)
        if not sold:
            raise HTTPException(409, "this flow token holds no seat (never held, expired, released or sold)")
        return {"flow_token": flow_token, "reference_id": body.reference_id, "sold": sold}

    @router.post("/holds/{flow_token}/order", summary="The flow token's holds follow this order's payment")
    async def attach(tenant: TenantDep, flow_token: Annotated[StorableStr, Path(min_length=1, max_length=256)],
                     body: SellRequest) -> dict[str, Any]:
        """Sold when the order's payment is captured, released when it fails or the order is
        canceled (from billing's order events, ADR 0113); at once if that already happened."""
        result = await store().attach_order(tenant.tenant_id, flow_token, body.reference_id)
        if not result.attached:
            raise HTTPException(409, "this flow token holds no seat (never held, released, taken or sold)")
        return {"flow_token": flow_token, "reference_id": body.reference_id, "seats": result.attached,
                "applied": result.applied, "changed": result.seats}

    @router.post("/holds/{flow_token}/release", summary="The flow token's holds end now")
    async def release(tenant: TenantDep, flow_token: Annotated[StorableStr, Path(min_length=1, max_length=256)]
                      ) -> dict[str, Any]:
        return {"flow_token": flow_token, "released": await store().release(tenant.tenant_id, flow_token)}

    @router.get("", summary="Seats per state (free, held, sold) over the tenant's trips")
    async def counts(tenant: TenantDep) -> dict[str, Any]:
        return {"tenant_id": tenant.tenant_id, "seats": await store().seat_counts(tenant.tenant_id)}

    @router.get("/holds/{flow_token}", summary="The seats a flow token holds or bought (what the customer picked)")
    async def holds(tenant: TenantDep, flow_token: Annotated[StorableStr, Path(min_length=1, max_length=256)]
                    ) -> dict[str, Any]:
        return {"flow_token": flow_token, "seats": await store().holds_of(tenant.tenant_id, flow_token)}

    return router


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FlowDecryptError("the body is not JSON") from None
