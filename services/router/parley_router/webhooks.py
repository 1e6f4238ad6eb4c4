"""Signed POSTs to a tenant's own HTTPS endpoint, with bounded retries (tenacity).

The body is the RoutedMessage JSON; ``X-Parley-Signature: sha256=<hex>`` is HMAC-SHA256 of the
exact body bytes with the tenant's secret (resolved from its ``env:``/``file:`` reference), so
the tenant verifies it like Meta's own ``X-Hub-Signature-256``.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx
from parley_common.tenancy.models import resolve_secret
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from parley_router.domain.routing import WebhookCall

SIGNATURE_HEADER = "X-Parley-Signature"


class EndpointRejected(RuntimeError):
    """The endpoint answered with a status that retrying will not fix (4xx other than 408/429)."""


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code in (408, 429)
    return isinstance(exc, httpx.TransportError)


class TenantEndpointClient:
    def __init__(self, *, attempts: int = 4, timeout_s: float = 5.0, backoff_s: float = 0.2,
                 client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._attempts = attempts
        self._backoff = backoff_s

    @property
    def attempts(self) -> int:
        return self._attempts

    async def deliver(self, call: WebhookCall, event_id: str) -> int:
        secret = resolve_secret(call.secret_ref) or ""
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(call.body, secret),
                   "X-Parley-Event-Id": event_id}
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff, max=5.0),
            retry=retry_if_exception(_retryable), reraise=True,
        ):
            with attempt:
                response = await self._client.post(call.url, content=call.body, headers=headers)
                if response.status_code >= 400:
                    if not _retryable(httpx.HTTPStatusError("", request=response.request, response=response)):
                        raise EndpointRejected(f"endpoint {call.endpoint} answered {response.status_code}")
                    response.raise_for_status()
                return response.status_code
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._client.aclose()
