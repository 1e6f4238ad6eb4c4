"""From "I want a ticket" to a refund, through the whole pipeline on real Kafka and PostgreSQL:
the simulator (Meta: webhooks, payments, and the customers' side of the seat Flow, ADR 0124),
ingest (send API, Flows endpoint, seats), router, sender and billing (orders), driven by the
demo's own ticket shop (deploy/local/demo_commerce.py), which plays the business."""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from commerce.conftest import FLOW_KEY, STRANGER_KEY, pem
from support.kafka import read_topic
from support.served import Served
from support.tenancy import import_tenants
from support.waiting import eventually

from .conftest import running_services, start_simulator

pytestmark = pytest.mark.infra
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "local"))
import demo_commerce  # noqa: E402

APP_ID, SECRET, TOKEN = "shop-e2e-app", "shop-e2e-secret", "shop-e2e-token"
WABA, PN, TENANT = "299000000000091", "199000000000091", "e2e-tickets"


@dataclass
class Shopfront:
    sim: Any
    ingest: Served
    billing: Served
    simulator: Served
    shop: demo_commerce.Shop


@pytest.fixture(scope="module")
async def shopfront(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Shopfront]:
    os.environ.update({"SHOP_E2E_SECRET": SECRET, "SHOP_E2E_TOKEN": TOKEN, "SHOP_E2E_FLOW_KEY": pem(FLOW_KEY)})
    ingest = Served(None)
    sim, simulator = await start_simulator({
        "apps": [{"app_id": APP_ID, "app_secret": SECRET}],
        "wabas": [{"id": WABA, "app_id": APP_ID, "token": TOKEN}],
        "phone_numbers": [{"id": PN, "display_phone_number": "918000000091", "waba_id": WABA}],
        "behaviour": {"delivered_ratio": 1.0, "unknown_recipient_pattern": None, "sent_delay_ms": 10,
                      "delivered_delay_ms": 50, "read_delay_ms": 100, "pair_burst": 1000,
                      "payment_capture_ratio": 0.7, "payment_fail_ratio": 0.3,
                      "payment_pending_delay_ms": 50, "payment_outcome_delay_ms": 150,
                      "flow_open_delay_ms": 50, "flow_screen_delay_ms": 20},
        "flows": [{"flow_id": demo_commerce.SEAT_FLOW_ID, "endpoint_uri": f"{ingest.url}/flows/{{phone_number_id}}",
                   "screens": {"TRIPS": {"choose_from": "trips", "submit_as": "trip_id"},
                               "SEATS": {"choose_from": "seats", "submit_as": "seat_id"}}}],
        "seed": 11,
    }, ingest)
    keys = await import_tenants(database_url, {
        "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:SHOP_E2E_SECRET"],
                  "access_token_ref": "env:SHOP_E2E_TOKEN", "graph_api_base": simulator.url}],
        "tenants": [{"tenant_id": TENANT, "name": "Tickets", "app_id": APP_ID, "business_country": "IN",
                     "time_zone": "Asia/Kolkata", "wabas": [WABA],
                     "phone_numbers": [{"phone_number_id": PN, "display_phone_number": "918000000091",
                                        "waba_id": WABA}],
                     "settings": {"flows": {"private_key_refs": ["env:SHOP_E2E_FLOW_KEY"]}}}],
    }, keys_for=[TENANT], key_label="e2e")
    api_key = keys[TENANT]
    async with running_services(ingest, simulator) as services:
        shop = demo_commerce.Shop(TENANT, PN, api_key, TOKEN, "INR", ("en", "bn-latn", "id", "tr"),
                                  (("BLR-MYS", "Bengaluru → Mysuru", 45000), ("BLR-CHN", "Bengaluru → Chennai", 90000)))
        yield Shopfront(sim, services.ingest, services.billing, simulator, shop)


async def test_customers_buy_tickets_pick_seats_pay_and_some_get_refunds(
        shopfront: Shopfront, database_url: str, kafka_bootstrap: str) -> None:
    from parley_common.topics import MESSAGES_IN

    shop = shopfront.shop
    rng = random.Random(5)
    customers = {TENANT: [f"9198450{n:05d}" for n in range(14)]}
    await demo_commerce.add_trips(database_url, [shop], "e2e")
    async with httpx.AsyncClient(timeout=30) as client:
        await demo_commerce.upload_flows_public_key(client, shopfront.simulator.url, shop, pem(FLOW_KEY))
        result = await demo_commerce.sell_tickets(
            client=client, shops=[shop], customers=customers, ingest_url=shopfront.ingest.url,
            billing_url=shopfront.billing.url, sim_url=shopfront.simulator.url, run="e2e", rng=rng)
        stats = result["stats"]
        # every customer's seat Flow was played by Meta's side (the simulator) and completed
        sessions = [f for f in shopfront.sim.flows.sessions.values() if f.flow_token.startswith("ft-e2e-")]
        assert len(sessions) == 14 and all(f.outcome == "completed" for f in sessions), \
            [(f.outcome, f.problem) for f in sessions]
        assert stats.get("no_seat_picked", 0) == 0 and len(result["orders"]) == 14, stats
        assert stats["asked"] == 14 and stats.get("sends_refused_422", 0) == 0, stats
        paid = stats.get("payment_captured", 0)
        assert paid + stats.get("payment_payment_failed", 0) == len(result["orders"]) > 0, stats
        assert stats.get("payment_pending", 0) == 0, f"every payment settled: {stats}"
        assert paid > 0 and stats.get("payment_payment_failed", 0) > 0, stats
        sold = result["seats_sold"]
        assert len(sold) == len(set(sold)) == paid, "every paid order sold its seat; no seat sold twice"

        headers = {"Authorization": f"Bearer {shop.api_key}"}

        async def states() -> Counter[str]:
            listed = (await client.get(f"{shopfront.billing.url}/v1/orders", params={"limit": 1000},
                                       headers=headers)).json()["orders"]
            return Counter(o["state"] for o in listed if o["reference_id"] in set(result["orders"]))

        refunds = stats.get("refunds", 0)
        expected = Counter({"completed": paid - refunds, "refunded_fully": refunds,
                            "payment_failed": stats.get("payment_payment_failed", 0)})
        expected = Counter({k: v for k, v in expected.items() if v})
        async def settled() -> Counter[str] | None:
            got = await states()
            return got if got == expected else None

        await eventually(settled, what=f"orders by state {dict(expected)}", timeout_s=90)

        # the customers were told: order_status messages reached Meta (the simulator)
        async def notices() -> list[dict[str, Any]] | None:
            sent = [m for m in shopfront.sim.messages.values()
                    if m.request.get("interactive", {}).get("type") == "order_status"]
            return sent if len(sent) >= paid + refunds else None

        sent = await eventually(notices, what="ticket and refund notices sent to the customers", timeout_s=90)
        texts = Counter(m.request["interactive"]["body"]["text"].split(":")[0].split(" of ")[0] for m in sent)
        assert texts["Your ticket"] == paid and texts["Refund"] == refunds
        lines = await demo_commerce.commerce_summary(client, shops=[shop], ingest_url=shopfront.ingest.url,
                                                     billing_url=shopfront.billing.url, result=result)
        assert any("sold twice: 0" in line for line in lines)

    # the Flows' completions (nfm_reply) reached the pipeline as the customers' messages
    tokens = {f.flow_token for f in sessions}

    async def completions() -> set[str] | None:
        got = set()
        for r in await read_topic(kafka_bootstrap, MESSAGES_IN.name):
            msg = orjson.loads(r.value)
            reply = (msg.get("payload") or {}).get("nfm_reply")
            if reply:
                got.add(json.loads(reply["response_json"])["flow_token"])
        return got if tokens <= got else None

    await eventually(completions, what="an nfm_reply on wa.messages.in for every completed seat Flow", timeout_s=60)


async def test_the_simulator_plays_metas_side_of_a_flow_and_sends_the_completion(
        shopfront: Shopfront, database_url: str, kafka_bootstrap: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from parley_common.topics import MESSAGES_IN

    await demo_commerce.add_trips(database_url, [shopfront.shop], "sim")
    public = FLOW_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    endpoint = f"{shopfront.ingest.url}/flows/{PN}"
    customer = "919845099999"
    trip = "BLR-MYS-sim"

    async def screen(client: httpx.AsyncClient, payload: dict[str, Any], key: str = public) -> dict[str, Any]:
        r = await client.post(f"{shopfront.simulator.url}/_sim/flows/{PN}/exchange",
                              json={"endpoint": endpoint, "public_key_pem": key, "payload": payload,
                                    "customer": customer})
        assert r.status_code == 200, r.text
        return dict(r.json())

    base = {"version": "3.0", "flow_token": "sim-flow-1"}
    async with httpx.AsyncClient(timeout=30) as client:
        ping = await screen(client, {"version": "3.0", "action": "ping"})
        assert ping["problem"] is None and ping["response"] == {"data": {"status": "active"}}
        stranger = STRANGER_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        assert (await screen(client, {"version": "3.0", "action": "ping"}, stranger))["http_status"] == 421
        init = await screen(client, {**base, "action": "INIT"})
        assert init["problem"] is None and init["response"]["screen"] == "TRIPS"
        await screen(client, {**base, "action": "data_exchange", "screen": "TRIPS", "data": {"trip_id": trip}})
        held = await screen(client, {**base, "action": "data_exchange", "screen": "SEATS",
                                     "data": {"trip_id": trip, "seat_id": "3C"}})
        assert held["response"]["screen"] == "CONFIRM"
        done = await screen(client, {**base, "action": "data_exchange", "screen": "CONFIRM",
                                     "data": {"trip_id": trip, "seat_id": "3C"}})
        assert done["completed"] is True and done["nfm_reply_wamid"]

    async def completion() -> dict[str, Any] | None:
        for r in await read_topic(kafka_bootstrap, MESSAGES_IN.name):
            msg = orjson.loads(r.value)
            if msg.get("wamid") == done["nfm_reply_wamid"]:
                return dict(msg)
        return None

    msg = await eventually(completion, what="the nfm_reply completion on wa.messages.in", timeout_s=60)
    assert msg["type"] == "interactive" and msg["customer_wa_id"] == customer
    params = json.loads(msg["payload"]["nfm_reply"]["response_json"])
    assert params["seat_id"] == "3C" and params["trip_id"] == trip and params["flow_token"] == "sim-flow-1"
