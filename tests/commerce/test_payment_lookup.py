"""An order whose payment webhook never came is settled by Meta's payment lookup (the simulator
plays Meta: it captured the payment but lost the webhook), on real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from parley_common.contracts import OutboundMessage
from parley_common.topics import MESSAGES_OUT
from support.served import Served  # tests/ is on sys.path (rootdir package layout)
from support.tenancy import import_tenants
from support.waiting import eventually

from .conftest import bearer, produce

pytestmark = pytest.mark.infra
APP, TOKEN, TENANT = "lookup-app", "lookup-token", "lookup-shop"
PN, WABA, CUSTOMER = "770000000031", "770000000131", "919900000031"


@pytest.fixture(scope="module")
async def world(kafka_bootstrap: str, database_url: str, commerce_keys: dict[str, str]
                ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Served, str]]:
    from parley_billing.app import create_app
    from parley_billing.settings import BillingSettings
    from parley_simulator import create_app as simulator_app
    from parley_simulator.config import SimulatorConfig
    from parley_simulator.simulator import CloudApiSimulator

    config = SimulatorConfig.model_validate({
        "apps": [{"app_id": APP, "app_secret": "lookup-secret"}],
        "wabas": [{"id": WABA, "app_id": APP, "token": TOKEN}],
        "phone_numbers": [{"id": PN, "display_phone_number": "918000000031", "waba_id": WABA}],
        "behaviour": {"payment_capture_ratio": 1.0, "payment_fail_ratio": 0.0, "payment_webhook_loss_ratio": 1.0,
                      "payment_pending_delay_ms": 0, "payment_outcome_delay_ms": 0},
    })
    simulator = Served(simulator_app(config, simulator=CloudApiSimulator(config)))
    await simulator.start()
    os.environ["LOOKUP_TOKEN"] = TOKEN
    keys = await import_tenants(database_url, {
        "apps": [{"app_id": APP, "app_secret_refs": ["env:LOOKUP_TOKEN"], "access_token_ref": "env:LOOKUP_TOKEN",
                  "graph_api_base": simulator.url}],
        "tenants": [{"tenant_id": TENANT, "name": "Lookup", "app_id": APP, "business_country": "IN",
                     "time_zone": "Asia/Kolkata", "wabas": [WABA],
                     "phone_numbers": [{"phone_number_id": PN, "display_phone_number": "918000000031",
                                        "waba_id": WABA}]}]}, keys_for=[TENANT], key_label="lookup")
    key = keys[TENANT]
    app = create_app(BillingSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                     batch_timeout_ms=50, order_lookup_interval_s=0))
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://billing") as c:
                yield app, c, simulator, key
    finally:
        await simulator.stop()


def order_details(ref: str) -> dict[str, Any]:
    return {"type": "order_details", "body": {"text": "Seat 4C"}, "action": {
        "name": "review_and_pay", "parameters": {
            "reference_id": ref, "type": "digital-goods", "currency": "INR",
            "total_amount": {"value": 45000, "offset": 100},
            "payment_settings": [{"type": "payment_gateway",
                                  "payment_gateway": {"type": "razorpay", "configuration_name": "buses-cfg"}}],
            "order": {"status": "pending", "items": [{"retailer_id": "s", "name": "Seat", "quantity": 1,
                                                      "amount": {"value": 45000, "offset": 100}}],
                      "subtotal": {"value": 45000, "offset": 100}}}}}


async def test_a_pending_order_is_settled_by_the_payment_lookup(
        world: tuple[FastAPI, httpx.AsyncClient, Served, str], kafka_bootstrap: str) -> None:
    from parley_billing.order_handlers import settle_pending_orders

    app, client, simulator, key = world
    rt = app.state.runtime
    await rt.live_tenants.refresh()
    ref = "lookup-0001"
    asked_at = datetime.now(UTC).replace(microsecond=0)  # the business asked before Meta took the payment
    async with httpx.AsyncClient(timeout=10) as meta:
        await meta.post(f"{simulator.url}/_sim/windows", json={"phone_number_id": PN, "customer": CUSTOMER})
        sent = await meta.post(f"{simulator.url}/v24.0/{PN}/messages", headers={"Authorization": f"Bearer {TOKEN}"},
                               json={"messaging_product": "whatsapp", "to": CUSTOMER, "type": "interactive",
                                     "interactive": order_details(ref)})
        assert sent.status_code == 200, sent.text
    record = OutboundMessage(event_id="pm_lookup_1", message_id="pm_lookup_1", tenant_id=TENANT, phone_number_id=PN,
                             occurred_at=asked_at, to=CUSTOMER, type="interactive", content=order_details(ref))
    await produce(kafka_bootstrap, MESSAGES_OUT.name, [(PN, record.model_dump_json().encode())])

    async def requested() -> dict[str, Any] | None:
        r = await client.get(f"/v1/orders/{ref}", headers=bearer(key))
        return r.json() if r.status_code == 200 else None

    assert (await eventually(requested, what="the order from its order_details", timeout_s=60))["state"] == "requested"
    await asyncio.sleep(0.05)  # the order's last update is now in the past: past a zero deadline
    async with httpx.AsyncClient(timeout=10) as http:
        assert await settle_pending_orders(rt, http, pending_for_s=0) == 1
        assert await settle_pending_orders(rt, http, pending_for_s=0) == 0, "settled orders are not looked up"
    order = (await client.get(f"/v1/orders/{ref}", headers=bearer(key))).json()
    assert order["state"] == "captured"
    assert order["captured"] == {"value": 45000, "offset": 100, "currency": "INR"}
    assert [(h["kind"], h["status"]) for h in order["history"]] == [("requested", "requested"),
                                                                      ("payment", "captured")]
