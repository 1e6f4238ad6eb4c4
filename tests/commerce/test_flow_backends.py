"""A tenant's own flow backend at its own URL (ADR 0123), behind ingest's Flows endpoint on real
PostgreSQL: the backend receives the decrypted request, signed; Meta receives the encrypted
answer; a slow, unreachable or wrong backend gets Meta the status the endpoint documents, never a
half answer."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from parley_common.outbound import verify
from parley_common.tenancy.models import Tenant
from parley_ingest.domain.flows import decrypt_response, encrypt_request
from parley_ingest.flow_backends import answer_problem, backend_choice
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.served import Served
from support.tenancy import import_tenants

from .conftest import APP_ID, APP_SECRET, FLOW_KEY

TENANT, WABA = "own-flow-backend", "772900000100"
OK, SLOW, BROKEN, GARBAGE, EXPIRED, NOWHERE = (f"77290000000{n}" for n in range(1, 7))
BACKEND_SECRET = "own-backend-secret"


@dataclass
class TenantBackend:
    """The business's flow backend: records what Parley sent, answers per path."""

    calls: list[tuple[str, dict[str, Any], bool, str]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify(request.headers["x-parley-signature"], body, [BACKEND_SECRET], int(time.time()))
            signed = True
        except (KeyError, ValueError):
            signed = False
        path = request.path_params["kind"]
        self.calls.append((path, orjson.loads(body), signed, request.headers.get("x-parley-phone-number-id", "")))
        if path == "slow":
            await asyncio.sleep(3)
        if path == "broken":
            return Response(b"oops", status_code=500)
        if path == "garbage":
            return Response(orjson.dumps({"data": {"x": 1}}), media_type="application/json")
        if path == "expired":
            return Response(orjson.dumps({"error_msg": "This booking has closed"}), status_code=427,
                            media_type="application/json")
        req = orjson.loads(body)
        return Response(orjson.dumps({"screen": "MENU", "data": {"echo": req.get("screen") or req["action"]}}),
                        media_type="application/json")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings(url: str) -> dict[str, Any]:
    def backend(kind: str, timeout_ms: int = 1000) -> dict[str, Any]:
        return {"backend": {"url": f"{url}/flow/{kind}", "secret_ref": "env:OWN_FLOW_BACKEND_SECRET",
                            "timeout_ms": timeout_ms}}

    return {"flows": {
        "private_key_refs": ["env:COMMERCE_FLOW_KEY"],
        "endpoint_policy": {"allow_http": True, "allow_private_addresses": True},
        **backend("ok"),
        "numbers": {SLOW: backend("slow", 300), BROKEN: backend("broken"), GARBAGE: backend("garbage"),
                    EXPIRED: backend("expired"),
                    NOWHERE: {"backend": {"url": f"http://127.0.0.1:{_free_port()}/flow",
                                          "secret_ref": "env:OWN_FLOW_BACKEND_SECRET"}}}}}


@pytest.fixture(scope="module")
async def endpoint(kafka_bootstrap: str, database_url: str, commerce_keys: dict[str, str]
                   ) -> AsyncIterator[tuple[httpx.AsyncClient, TenantBackend]]:
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    os.environ["OWN_FLOW_BACKEND_SECRET"] = BACKEND_SECRET
    backend = TenantBackend()
    served = Served(Starlette(routes=[Route("/flow/{kind}", backend.handle, methods=["POST"])]))
    await served.start()
    await import_tenants(database_url, {"tenants": [{
        "tenant_id": TENANT, "name": "Own backend", "app_id": APP_ID, "business_country": "IN",
        "time_zone": "Asia/Kolkata", "wabas": [WABA], "settings": settings(served.url),
        "phone_numbers": [{"phone_number_id": n, "display_phone_number": f"9180000{n[-5:]}", "waba_id": WABA}
                          for n in (OK, SLOW, BROKEN, GARBAGE, EXPIRED, NOWHERE)]}]})
    app = create_app(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url))
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ingest", timeout=30) as client:
            yield client, backend
    finally:
        await served.stop()


async def meta_call(client: httpx.AsyncClient, number: str, payload: dict[str, Any]
                    ) -> tuple[int, dict[str, Any] | bytes]:
    aes_key, iv = os.urandom(16), os.urandom(16)
    raw = orjson.dumps(encrypt_request(payload, FLOW_KEY.public_key(), aes_key, iv))
    sig = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    r = await client.post(f"/flows/{number}", content=raw, headers={"x-hub-signature-256": sig})
    if r.status_code != 200:
        return r.status_code, r.content
    return 200, decrypt_response(r.content, aes_key, iv)


SCREEN = {"version": "3.0", "action": "data_exchange", "flow_token": "own-1", "screen": "START",
          "data": {"choice": "x"}}


async def test_the_tenants_backend_gets_the_decrypted_request_signed_and_meta_gets_its_answer_encrypted(
        endpoint: tuple[httpx.AsyncClient, TenantBackend]) -> None:
    client, backend = endpoint
    status, answer = await meta_call(client, OK, SCREEN)
    assert (status, answer) == (200, {"screen": "MENU", "data": {"echo": "START"}})
    kind, received, signed, number = backend.calls[-1]
    assert (kind, received, signed, number) == ("ok", SCREEN, True, OK)
    # ping is still answered by the endpoint itself; the backend never sees it
    calls = len(backend.calls)
    assert await meta_call(client, OK, {"version": "3.0", "action": "ping"}) == (200, {"data": {"status": "active"}})
    assert len(backend.calls) == calls


async def test_a_slow_or_unreachable_backend_is_a_503_within_its_timeout_and_a_wrong_one_a_502(
        endpoint: tuple[httpx.AsyncClient, TenantBackend]) -> None:
    client, backend = endpoint
    # the slow backend would answer 200 after 3 s: a 503 means the endpoint gave up at its timeout
    assert (await meta_call(client, SLOW, SCREEN))[0] == 503
    assert backend.calls[-1][0] == "slow"
    assert (await meta_call(client, NOWHERE, SCREEN))[0] == 503
    assert (await meta_call(client, BROKEN, SCREEN))[0] == 502
    assert (await meta_call(client, GARBAGE, SCREEN))[0] == 502


async def test_the_backends_427_reaches_meta_with_its_message(
        endpoint: tuple[httpx.AsyncClient, TenantBackend]) -> None:
    client, _ = endpoint
    status, body = await meta_call(client, EXPIRED, SCREEN)
    assert status == 427 and isinstance(body, bytes)
    assert orjson.loads(body) == {"error_msg": "This booking has closed"}


def tenant(flows: dict[str, Any]) -> Tenant:
    return Tenant("t", "t", "a", "IN", "UTC", None, settings={"flows": flows})


def test_a_backend_setting_is_checked_and_a_bad_one_named() -> None:
    assert backend_choice(tenant({"private_key_refs": ["env:K"]}), "1").spec is None
    own = backend_choice(tenant({"backend": {"url": "https://shop.example/flows", "secret_ref": "env:S"}}), "1")
    assert own.spec is not None and own.spec.timeout_ms == 3000
    with pytest.raises(ValueError, match=r"settings\.flows\.backend"):
        backend_choice(tenant({"backend": {"url": "http://shop.example/flows", "secret_ref": "env:S"}}), "1")
    with pytest.raises(ValueError, match="timeout_ms"):
        backend_choice(tenant({"backend": {"url": "https://shop.example/f", "secret_ref": "env:S",
                                           "timeout_ms": 20000}}), "1")
    with pytest.raises(ValueError, match="secret_ref"):
        backend_choice(tenant({"backend": {"url": "https://shop.example/f", "secret_ref": "inline-secret"}}), "1")


def test_an_answer_meta_would_refuse_is_named() -> None:
    assert answer_problem({"screen": "A", "data": {}}) is None
    assert answer_problem({"data": {}}) == "the answer names no 'screen'"
    assert answer_problem({"screen": "A"}) == "the answer has no 'data' object"
    assert answer_problem([1]) == "the answer is not a JSON object"
