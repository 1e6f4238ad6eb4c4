"""Two businesses on one Parley, each with its own Meta app, and an attacker who holds one app's
secret, API key and access token: the four services and the Cloud API simulator, each a real HTTP
server on a loopback port, on the session's real Kafka topics and PostgreSQL database.

``jakarta-shop`` (the victim) is on app ``victim-app``; ``other-shop`` (the attacker's own,
legitimately registered business) is on ``attacker-app``. Every attack in this folder is made
with what ``other-shop`` legitimately holds, and checks the victim's state in the router, the
sender and billing afterwards (``VictimState``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from e2e.conftest import REPO, running_services, start_simulator, sync_templates
from parley_simulator import sign
from support.served import Served
from support.tenancy import import_tenants

VICTIM_APP, ATTACKER_APP = "victim-app", "attacker-app"
VICTIM_SECRET, ATTACKER_SECRET = "victim-app-secret-for-tests", "attacker-app-secret-for-tests"
VICTIM_TOKEN, ATTACKER_TOKEN = "victim-access-token", "attacker-access-token"
VICTIM, ATTACKER = "jakarta-shop", "other-shop"
V_WABA, X_WABA = "399000000000001", "399000000000002"
V_PN, X_PN = "299000000000001", "299000000000002"
V_DISPLAY, X_DISPLAY = "6281200000001", "6281200000002"
TEMPLATES = [
    {"name": "seasonal_offer", "language": "en", "category": "MARKETING", "status": "APPROVED",
     "components": [{"type": "BODY", "text": "{{1}}, 20% off this season.", "example": {"body_text": [["Ana"]]}}]},
    {"name": "order_update", "language": "en", "category": "UTILITY", "status": "APPROVED",
     "components": [{"type": "BODY", "text": "Hi {{1}}, your order {{2}} ships today.",
                     "example": {"body_text": [["Ana", "A1"]]}}]},
]


@dataclass
class Parley:
    sim: Any  # parley_simulator CloudApiSimulator
    ingest: Served
    router: Served
    sender: Served
    billing: Served
    keys: dict[str, str]  # tenant -> API key
    database_url: str
    kafka_bootstrap: str

    def webhook_url(self, app_id: str) -> str:
        return f"{self.ingest.url}/webhooks/meta/{app_id}"

    async def post_webhook(self, doc: dict[str, Any], *, app_id: str, secret: str) -> httpx.Response:
        """A webhook signed with ``secret``, posted to ``app_id``'s endpoint (what Meta, or anyone
        holding that secret, can do)."""
        body = json.dumps(doc).encode()
        async with httpx.AsyncClient(timeout=30) as client:
            return await client.post(self.webhook_url(app_id), content=body, headers={
                "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, secret)})

    async def db(self) -> asyncpg.Connection:
        from parley_common.db import connect

        return await connect(self.database_url)


def messages_change(pn: str, display: str, *, messages: list[dict[str, Any]] = (),  # type: ignore[assignment]
                    statuses: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": display, "phone_number_id": pn}}
    if messages:
        value["contacts"] = [{"profile": {"name": "Customer"}, "wa_id": m["from"]} for m in messages]
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    return {"field": "messages", "value": value}


def webhook(waba: str, *changes: dict[str, Any]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": waba, "time": int(time.time()),
                                                             "changes": list(changes)}]}


def text_message(customer: str, body: str, *, at: int | None = None, wamid: str | None = None) -> dict[str, Any]:
    return {"from": customer, "id": wamid or f"wamid.SEC{uuid.uuid4().hex}", "timestamp": str(at or int(time.time())),
            "type": "text", "text": {"body": body}}


@pytest.fixture(scope="module")
async def parley(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Parley]:
    from parley_common.db import connect

    os.environ.update({"SEC_VICTIM_SECRET": VICTIM_SECRET, "SEC_ATTACKER_SECRET": ATTACKER_SECRET,
                       "SEC_VICTIM_TOKEN": VICTIM_TOKEN, "SEC_ATTACKER_TOKEN": ATTACKER_TOKEN})
    ingest = Served(None)  # port reserved first: the simulator posts status webhooks to it
    sim_core, simulator = await start_simulator({
        "apps": [{"app_id": VICTIM_APP, "app_secret": VICTIM_SECRET},
                 {"app_id": ATTACKER_APP, "app_secret": ATTACKER_SECRET}],
        "wabas": [{"id": V_WABA, "app_id": VICTIM_APP, "token": VICTIM_TOKEN, "templates": TEMPLATES},
                  {"id": X_WABA, "app_id": ATTACKER_APP, "token": ATTACKER_TOKEN, "templates": TEMPLATES}],
        "phone_numbers": [{"id": V_PN, "display_phone_number": V_DISPLAY, "waba_id": V_WABA},
                          {"id": X_PN, "display_phone_number": X_DISPLAY, "waba_id": X_WABA}],
        "behaviour": {"delivered_ratio": 1.0, "read_ratio": 0.0, "skip_delivered_ratio": 0.0,
                      "failure_131049_rate": 0.0, "unknown_recipient_pattern": None,
                      "sent_delay_ms": 10, "delivered_delay_ms": 30, "read_delay_ms": 50},
    }, ingest)

    def tenant(tid: str, app: str, waba: str, pn: str, display: str) -> dict[str, Any]:
        return {"tenant_id": tid, "name": tid, "app_id": app, "business_country": "ID", "time_zone": "Asia/Jakarta",
                "wabas": [waba], "phone_numbers": [{"phone_number_id": pn, "display_phone_number": display,
                                                    "waba_id": waba}],
                "settings": {"demo": True, "router": {"auto_reply": True}}}

    keys = await import_tenants(database_url, {
        "apps": [{"app_id": VICTIM_APP, "app_secret_refs": ["env:SEC_VICTIM_SECRET"],
                  "access_token_ref": "env:SEC_VICTIM_TOKEN", "graph_api_base": simulator.url},
                 {"app_id": ATTACKER_APP, "app_secret_refs": ["env:SEC_ATTACKER_SECRET"],
                  "access_token_ref": "env:SEC_ATTACKER_TOKEN", "graph_api_base": simulator.url}],
        "tenants": [tenant(VICTIM, VICTIM_APP, V_WABA, V_PN, V_DISPLAY),
                    tenant(ATTACKER, ATTACKER_APP, X_WABA, X_PN, X_DISPLAY)],
    }, keys_for=(VICTIM, ATTACKER), key_label="security tests")

    async with running_services(ingest, simulator) as services:
        from parley_billing.ratecards import import_rate_card

        conn = await connect(database_url)
        try:
            card = REPO / "services/billing/parley_billing/data/example_rate_card.csv"
            await import_rate_card(conn, card.read_text())
        finally:
            await conn.close()
        await sync_templates(services.sender, *(keys[t] for t in (VICTIM, ATTACKER)))
        yield Parley(sim_core, services.ingest, services.router, services.sender, services.billing, keys, database_url,
                     kafka_bootstrap)
