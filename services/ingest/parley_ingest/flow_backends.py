"""Which flow backend answers a tenant's Flows, and the backend behind the tenant's own URL (ADR 0123).

A tenant (or one of its numbers) names its own backend in the registry::

    flows:
      private_key_refs: ["env:SHOP_FLOWS_KEY"]
      backend: {url: "https://tickets.example.com/parley/flows", secret_ref: "env:SHOP_FLOWS_SECRET",
                timeout_ms: 3000}
      endpoint_policy: {allow_http: false, allow_private_addresses: false}   # the operator's
      numbers: {"<phone_number_id>": {backend: {...}}}                         # per number

Without one, the reference seat backend (``seats.py``) answers in-process. The endpoint has
already verified and decrypted Meta's request; the tenant's backend receives the decrypted
request as JSON (``POST``, signed like every call Parley makes to a tenant: ``X-Parley-Signature:
t=…,v1=…``, ADR 0105; ``X-Parley-Phone-Number-Id``) and answers what Meta expects in clear:
``{"screen": …, "data": {…}}`` with 200, or 427 with ``{"error_msg": …}`` when the flow token is
no longer valid. The endpoint encrypts the answer. Anything else is the backend's failure and the
endpoint answers Meta with an error status and no screen (nothing half-done): 503 when the
backend did not answer within its ``timeout_ms`` (at most 8 s: Meta gives the endpoint 10 s) or
could not be reached, 502 when it answered something Meta would refuse.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import orjson
from parley_common.endpoint_calls import resolve_host
from parley_common.outbound import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    EmptySecretError,
    EndpointPolicy,
    EndpointPolicySpec,
    EndpointRefused,
    check_addresses,
    parse_endpoint_url,
    sign,
)
from parley_common.tenancy.models import SecretError, Tenant, resolve_secret
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from parley_ingest.seats import FlowTokenInvalid

MAX_TIMEOUT_MS = 8000  # Meta waits 10 s for the endpoint; decryption and the answer need the rest
DEFAULT_TIMEOUT_MS = 3000


class FlowBackend(Protocol):
    async def handle(self, tenant_id: str, payload: dict[str, Any]) -> dict[str, Any]: ...


class FlowBackendUnavailable(RuntimeError):
    """The backend did not answer in time or could not be reached (the endpoint answers 503)."""


class FlowBackendInvalid(RuntimeError):
    """The backend answered something Meta would refuse (the endpoint answers 502)."""


class FlowBackendSpec(BaseModel):
    """``flows.backend`` in a tenant's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret_ref: str = Field(pattern=r"^(env|file):.+")
    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, ge=100, le=MAX_TIMEOUT_MS)


@dataclass(frozen=True)
class BackendChoice:
    """The tenant's own backend for a number, or None for the reference seat backend."""

    spec: FlowBackendSpec | None
    policy: EndpointPolicy


def backend_choice(tenant: Tenant, phone_number_id: str) -> BackendChoice:
    """What the registry says; a malformed setting is refused (``ValueError`` naming it)."""
    flows = tenant.settings.get("flows")
    if not isinstance(flows, dict):
        return BackendChoice(None, EndpointPolicy())
    numbers = flows.get("numbers")
    per_number = numbers.get(phone_number_id) if isinstance(numbers, dict) else None
    raw = per_number.get("backend") if isinstance(per_number, dict) and "backend" in per_number \
        else flows.get("backend")
    try:
        policy = EndpointPolicySpec.model_validate(flows.get("endpoint_policy") or {}).policy()
        spec = None if raw is None else FlowBackendSpec.model_validate(raw)
        if spec is not None:
            parse_endpoint_url(spec.url, policy)
    except (ValidationError, EndpointRefused) as exc:
        raise ValueError(f"settings.flows.backend of tenant {tenant.tenant_id}: {exc}") from None
    return BackendChoice(spec, policy)


def answer_problem(answer: Any) -> str | None:
    """Why Meta would refuse this answer to INIT / data_exchange / BACK, or None."""
    if not isinstance(answer, dict):
        return "the answer is not a JSON object"
    if not isinstance(answer.get("data"), dict):
        return "the answer has no 'data' object"
    if not isinstance(answer.get("screen"), str) or not answer["screen"]:
        return "the answer names no 'screen'"
    return None


class HttpFlowBackend:
    """The tenant's backend at its own URL, called once per screen with the decrypted request."""

    def __init__(self, client: httpx.AsyncClient, spec: FlowBackendSpec, policy: EndpointPolicy,
                 phone_number_id: str) -> None:
        self.client, self.spec, self.policy, self.phone_number_id = client, spec, policy, phone_number_id

    async def handle(self, tenant_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = orjson.dumps(payload)
        try:
            secret = resolve_secret(self.spec.secret_ref) or ""
            url = parse_endpoint_url(self.spec.url, self.policy)
            signature = sign(body, secret, int(time.time()))
        except (SecretError, EmptySecretError, EndpointRefused) as exc:
            raise FlowBackendInvalid(f"the backend cannot be called: {exc}") from None
        deadline = self.spec.timeout_ms / 1000
        started = time.monotonic()
        try:
            addresses = [url.ip] if url.ip is not None else await resolve_host(url.host, url.port)
            address = check_addresses(addresses, self.policy)[0]
        except EndpointRefused as exc:
            raise FlowBackendInvalid(f"the backend's address is refused: {exc}") from None
        except OSError as exc:
            raise FlowBackendUnavailable(f"the backend's name does not resolve ({type(exc).__name__})") from None
        original = httpx.URL(self.spec.url)
        headers = {"Content-Type": "application/json", "Host": original.netloc.decode("ascii"),
                   SIGNATURE_HEADER: signature, "X-Parley-Phone-Number-Id": self.phone_number_id,
                   EVENT_ID_HEADER: hashlib.sha256(body).hexdigest()[:32]}
        extensions: dict[str, Any] = {"sni_hostname": url.host} if url.scheme == "https" and url.ip is None else {}
        remaining = max(0.05, deadline - (time.monotonic() - started))
        try:
            r = await self.client.post(original.copy_with(host=str(address)), content=body, headers=headers,
                                       extensions={**extensions, "timeout": {
                                           "connect": remaining, "read": remaining, "write": remaining,
                                           "pool": remaining}})
        except httpx.TimeoutException:
            raise FlowBackendUnavailable(f"the backend did not answer within {self.spec.timeout_ms} ms") from None
        except httpx.TransportError as exc:
            raise FlowBackendUnavailable(f"the backend could not be reached ({type(exc).__name__})") from None
        if r.status_code == 427:
            raise FlowTokenInvalid(_error_msg(r.content))
        if r.status_code != 200:
            raise FlowBackendInvalid(f"the backend answered HTTP {r.status_code}")
        try:
            answer = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise FlowBackendInvalid("the backend's answer is not JSON") from None
        problem = answer_problem(answer)
        if problem is not None:
            raise FlowBackendInvalid(f"the backend's answer: {problem}")
        return dict(answer)


def _error_msg(content: bytes) -> str:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        return "flow token invalid"
    msg = parsed.get("error_msg") if isinstance(parsed, dict) else None
    return str(msg)[:500] if msg else "flow token invalid"
