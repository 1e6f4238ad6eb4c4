"""The simulator over real HTTP: it runs in-process under uvicorn on a free port, and a tiny
webhook receiver (also under uvicorn) records every POST's raw bytes and headers."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from parley_simulator import CloudApiSimulator, SimulatorConfig, create_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.served import Served
from support.waiting import eventually

APP_ID = "900000000000001"
APP_SECRET = "test-app-secret-ü"  # non-ASCII on purpose: HMAC is over bytes
OTHER_APP_ID = "900000000000002"
OTHER_APP_SECRET = "other-app-secret"
WABA = "200000000000001"
WABA2 = "200000000000002"
WABA_OTHER_APP = "200000000000003"
PN = "100000000000001"  # in WABA
PN2 = "100000000000002"  # in WABA2 (same app)
PN_OTHER = "100000000000004"  # in WABA_OTHER_APP
TOKEN = "token-waba-1"
TOKEN2 = "token-waba-2"
TOKEN_OTHER = "token-other-app"
CUSTOMER = "447700900123"

TEMPLATES = [
    {
        "name": "ticket_confirmation",
        "language": "en",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Your ticket {{1}} is confirmed for {{2}}."}],
    },
    {
        "name": "seasonal_offer",
        "language": "en",
        "category": "MARKETING",
        "components": [
            {"type": "HEADER", "format": "IMAGE"},
            {"type": "BODY", "text": "Hi {{1}}, this week's offer is waiting."},
            {
                "type": "BUTTONS",
                "buttons": [
                    {"type": "URL", "text": "Shop", "url": "https://shop.example/{{1}}"},
                    {"type": "QUICK_REPLY", "text": "Stop promotions"},
                ],
            },
        ],
    },
    {
        "name": "plain_offer",
        "language": "en",
        "category": "MARKETING",
        "components": [{"type": "BODY", "text": "Hi {{1}}, new deals today."}],
    },
    {
        "name": "order_update",
        "language": "en",
        "category": "UTILITY",
        "parameter_format": "named",
        "components": [{"type": "BODY", "text": "Hello {{first_name}}, order {{order_id}} shipped."}],
    },
    {
        "name": "login_code",
        "language": "en",
        "category": "AUTHENTICATION",
        "components": [
            {"type": "BODY", "text": "{{1}} is your verification code."},
            {
                "type": "BUTTONS",
                "buttons": [{"type": "URL", "text": "Copy", "url": "https://x.example/{{1}}"}],
            },
        ],
    },
    {
        "name": "otp_code",
        "language": "en",
        "category": "AUTHENTICATION",
        "components": [
            {"type": "BODY", "text": "{{1}} is your verification code."},
            {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code"}]},
        ],
    },
    {
        "name": "paused_promo",
        "language": "en",
        "category": "MARKETING",
        "status": "PAUSED",
        "components": [{"type": "BODY", "text": "Promo"}],
    },
    {
        "name": "disabled_promo",
        "language": "en",
        "category": "MARKETING",
        "status": "DISABLED",
        "components": [{"type": "BODY", "text": "Promo"}],
    },
    {
        "name": "pending_promo",
        "language": "en",
        "category": "MARKETING",
        "status": "PENDING",
        "components": [{"type": "BODY", "text": "Promo"}],
    },
]

FAST = {
    "sent_delay_ms": 0,
    "delivered_delay_ms": 10,
    "read_delay_ms": 20,
    "webhook_batch_window_ms": 5,
    "template_approval_delay_s": 0.2,
    "webhook_retry_base_s": 0.05,
    "webhook_retry_max_s": 0.2,
    "delivered_ratio": 1.0,
    "read_ratio": 0.0,
    "skip_delivered_ratio": 0.0,
    "split_entries_ratio": 0.0,
}


def make_config(webhook_url: str | None, **behaviour: Any) -> SimulatorConfig:
    return SimulatorConfig.model_validate(
        {
            "apps": [
                {"app_id": APP_ID, "app_secret": APP_SECRET},
                {"app_id": OTHER_APP_ID, "app_secret": OTHER_APP_SECRET},
            ],
            "wabas": [
                {"id": WABA, "app_id": APP_ID, "token": TOKEN, "templates": TEMPLATES},
                {"id": WABA2, "app_id": APP_ID, "token": TOKEN2},
                {"id": WABA_OTHER_APP, "app_id": OTHER_APP_ID, "token": TOKEN_OTHER},
            ],
            "phone_numbers": [
                {"id": PN, "display_phone_number": "15550001111", "waba_id": WABA, "throughput": 80},
                {"id": PN2, "display_phone_number": "15550002222", "waba_id": WABA2},
                {"id": PN_OTHER, "display_phone_number": "15550004444", "waba_id": WABA_OTHER_APP},
            ],
            "webhook_url": webhook_url,
            "behaviour": {**FAST, **behaviour},
            "seed": 7,
        }
    )


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records webhooks; answers ``fail_first`` POSTs (or all, with -1) with HTTP 500."""

    url: str = ""
    posts: list[Received] = field(default_factory=list)
    attempts: int = 0
    fail_first: int = 0

    def verified(self) -> list[Received]:
        return [p for p in self.posts if p.headers.get("x-hub-signature-256") == expected_signature(p)]

    def statuses(self) -> list[dict[str, Any]]:
        return [
            s
            for p in self.posts
            for e in p.json["entry"]
            for c in e["changes"]
            for s in c["value"].get("statuses", [])
        ]

    def by_field(self, name: str) -> list[dict[str, Any]]:
        return [
            c["value"]
            for p in self.posts
            for e in p.json["entry"]
            for c in e["changes"]
            if c["field"] == name
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        await eventually(predicate, what=lambda: f"the webhooks the test waits for ({len(self.posts)} received)",
                         timeout_s=timeout_s, every_s=0.01)


def expected_signature(p: Received) -> str:
    secret = APP_SECRET if p.path.endswith(APP_ID) else OTHER_APP_SECRET
    return "sha256=" + hmac.new(secret.encode(), p.body, hashlib.sha256).hexdigest()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def hook(request: Request) -> Response:
        rec.attempts += 1
        body = await request.body()
        if rec.fail_first < 0 or rec.attempts <= rec.fail_first:
            return Response(status_code=500)
        rec.posts.append(Received(request.url.path, body, dict(request.headers)))
        return Response("ok")

    app = Starlette(routes=[Route("/webhooks/meta/{app_id}", hook, methods=["POST"])])
    async with Served(app) as served:
        rec.url = served.url + "/webhooks/meta/{app_id}"
        yield rec


@dataclass
class SimHandle:
    url: str
    sim: CloudApiSimulator
    http: httpx.AsyncClient

    async def send(
        self, body: dict[str, Any], *, token: str | None = TOKEN, pn: str = PN, version: str = "v24.0"
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.post(f"{self.url}/{version}/{pn}/messages", json=body, headers=headers)

    async def open_window(
        self, customer: str = CUSTOMER, *, pn: str = PN, referral: bool = False, at: float | None = None
    ) -> None:
        body: dict[str, Any] = {"phone_number_id": pn, "customer": customer, "referral": referral}
        if at is not None:
            body["last_inbound_at"] = at
        r = await self.http.post(f"{self.url}/_sim/windows", json=body)
        assert r.status_code == 200

    async def drain(self) -> None:
        r = await self.http.post(f"{self.url}/_sim/drain", params={"timeout_s": 10})
        assert r.json()["drained"]


SimFactory = Callable[..., Awaitable[SimHandle]]


@pytest.fixture
async def make_sim(receiver: Receiver) -> AsyncIterator[SimFactory]:
    stack: list[Served] = []
    clients: list[httpx.AsyncClient] = []

    async def factory(*, webhooks: bool = True, **behaviour: Any) -> SimHandle:
        config = make_config(receiver.url if webhooks else None, **behaviour)
        sim = CloudApiSimulator(config)
        served = Served(create_app(config, simulator=sim))
        await served.__aenter__()
        stack.append(served)
        client = httpx.AsyncClient(timeout=10)
        clients.append(client)
        return SimHandle(served.url, sim, client)

    yield factory
    for c in clients:
        await c.aclose()
    for s in stack:
        await s.__aexit__(None, None, None)


def text(to: str = CUSTOMER, body: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body},
        **extra,
    }


def template(
    name: str,
    params: list[str] | None = None,
    *,
    to: str = CUSTOMER,
    language: str = "en",
    components: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    if components is None:
        components = [{"type": "body", "parameters": [{"type": "text", "text": p} for p in params or []]}]
    return {
        "messaging_product": "whatsapp",
        "to": to,
        "type": "template",
        "template": {"name": name, "language": {"code": language}, "components": components},
        **extra,
    }


def error_code(r: httpx.Response) -> int:
    return int(r.json()["error"]["code"])
