"""Signed order events to the business's endpoint, on real Kafka, PostgreSQL and HTTP (ADR 0113).

Real HTTP endpoints on loopback: one that fails twice and then accepts (the events arrive,
signed, with the same event id on every attempt), one that always fails (the call ends in
``wa.deadletter``, nothing is left queued), and the simulator's stand-in for Meta's Conversions
API (one ``Purchase`` carrying the ad's ``ctwa_clid`` when the order is paid, signature checked).
Then a month of orders: what they earned and what their conversations cost in WhatsApp fees.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from parley_common.contracts import InboundMessage, OrderEvent, OutboundMessage, PaymentUpdate, Referral
from parley_common.outbound import verify
from parley_common.topics import COMMERCE, DEAD_LETTERS, MESSAGES_IN, MESSAGES_OUT, ORDERS
from parley_simulator.conversions import ConversionsReceiver, conversions_router
from security.endpoint_harness import TenantEndpoint
from support.kafka import read_topic
from support.tenancy import import_tenants
from support.waiting import eventually

from .conftest import bearer, produce

pytestmark = pytest.mark.infra

APP = "order-events-app"
FLAKY, BROKEN = "events-flaky", "events-broken"
FLAKY_NUMBER, BROKEN_NUMBER = "771000000001", "771000000002"
SECRET, CONVERSIONS_SECRET = "whsec-order-events-0123456789", "capi-stand-in-secret-0123"
CUSTOMER = "919911100001"
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def _tenant(tenant_id: str, number: str, orders: dict[str, Any]) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "name": tenant_id, "app_id": APP, "business_country": "IN",
            "time_zone": "Asia/Kolkata", "wabas": [f"waba-{tenant_id}"],
            "phone_numbers": [{"phone_number_id": number, "display_phone_number": f"91{number}",
                               "waba_id": f"waba-{tenant_id}"}],
            "settings": {"orders": {**orders, "endpoint_policy": {"allow_http": True,
                                                                   "allow_private_addresses": True}}}}


@pytest.fixture(scope="module")
async def endpoints() -> AsyncIterator[dict[str, tuple[TenantEndpoint, int]]]:
    flaky = TenantEndpoint(statuses=[503, 500])  # two failures, then 200 for everything
    broken = TenantEndpoint(statuses=[500] * 1000)
    ports = {name: (e, await e.start()) for name, e in (("flaky", flaky), ("broken", broken))}
    yield ports
    for e, _ in ports.values():
        await e.stop()


@pytest.fixture(scope="module")
async def conversions() -> AsyncIterator[tuple[ConversionsReceiver, int]]:
    """The simulator's stand-in for Meta's Conversions API, on real HTTP, checking signatures."""
    receiver = ConversionsReceiver(secret=CONVERSIONS_SECRET)
    app = FastAPI()
    app.include_router(conversions_router(receiver))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield receiver, int(sock.getsockname()[1])
    server.should_exit = True
    await task
    sock.close()


@pytest.fixture(scope="module")
async def billing(kafka_bootstrap: str, database_url: str, endpoints: dict[str, tuple[TenantEndpoint, int]],
                  conversions: tuple[ConversionsReceiver, int]
                  ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, dict[str, str]]]:
    from parley_billing.app import create_app
    from parley_billing.settings import BillingSettings

    os.environ["ORDER_EVENTS_APP_SECRET"] = "app-secret"
    os.environ["ORDER_EVENTS_SECRET"] = SECRET
    os.environ["ORDER_EVENTS_CAPI_SECRET"] = CONVERSIONS_SECRET

    def url(name: str) -> str:
        return f"http://127.0.0.1:{endpoints[name][1]}/hook"

    conversions_url = f"http://127.0.0.1:{conversions[1]}/_sim/conversions"

    registry = {"apps": [{"app_id": APP, "app_secret_refs": ["env:ORDER_EVENTS_APP_SECRET"]}], "tenants": [
        _tenant(FLAKY, FLAKY_NUMBER, {
            "endpoint": {"url": url("flaky"), "secret_ref": "env:ORDER_EVENTS_SECRET"},
            "conversions": {"url": conversions_url, "secret_ref": "env:ORDER_EVENTS_CAPI_SECRET"}}),
        _tenant(BROKEN, BROKEN_NUMBER, {"endpoint": {"url": url("broken"), "secret_ref": "env:ORDER_EVENTS_SECRET"}}),
    ]}
    keys = await import_tenants(database_url, registry, keys_for=(FLAKY, BROKEN), key_label="order events tests")
    app = create_app(BillingSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                     batch_timeout_ms=50, order_batch_max_records=50, endpoint_attempts=3,
                                     endpoint_backoff_s=0.05, endpoint_poll_interval_s=0.1))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://billing") as c:
            yield app, c, keys


def order_details(tenant: str, number: str, ref: str, value: int, message_id: str, at: datetime,
                  to: str = CUSTOMER) -> tuple[str, bytes]:
    msg = OutboundMessage(
        event_id=message_id, message_id=message_id, tenant_id=tenant, phone_number_id=number, occurred_at=at,
        to=to, type="interactive",
        content={"type": "order_details", "body": {"text": "Seat 4B"}, "action": {
            "name": "review_and_pay", "parameters": {
                "reference_id": ref, "type": "digital-goods", "currency": "INR",
                "total_amount": {"value": value, "offset": 100},
                "order": {"status": "pending", "items": [
                    {"retailer_id": "trip-9", "name": "Seat 4B", "quantity": 1,
                     "amount": {"value": value, "offset": 100}}]}}}})
    return number, msg.model_dump_json().encode()


def captured(tenant: str, number: str, ref: str, value: int, at: datetime, status_name: str = "captured"
             ) -> tuple[str, bytes]:
    status = {"id": f"wamid.pay-{ref}", "type": "payment", "status": status_name,
              "timestamp": str(int(at.timestamp())), "recipient_id": CUSTOMER,
              "payment": {"reference_id": ref, "amount": {"value": value, "offset": 100}, "currency": "INR",
                          "transaction": {"id": f"tx-{ref}", "type": "razorpay",
                                          "status": "success" if status_name == "captured" else status_name}}}
    update = PaymentUpdate(
        event_id=PaymentUpdate.make_event_id(status), tenant_id=tenant, phone_number_id=number, occurred_at=at,
        payment_id=status["id"], reference_id=ref, status=status_name, recipient_id=CUSTOMER,
        amount={"value": value, "offset": 100}, currency="INR", transactions=[status["payment"]["transaction"]],
        payment=status["payment"], status_object=status)
    return number, update.model_dump_json().encode()


def from_an_ad(number: str, tenant: str, wamid: str, clid: str, at: datetime) -> tuple[str, bytes]:
    """The customer's first message, sent from a click-to-WhatsApp ad (its referral)."""
    msg = InboundMessage(event_id=wamid, tenant_id=tenant, phone_number_id=number, occurred_at=at, wamid=wamid,
                         customer_wa_id=CUSTOMER, type="text", text="I saw your ad",
                         referral=Referral(source_type="ad", source_id="ad-77", ctwa_clid=clid))
    return number, msg.model_dump_json().encode()


async def test_order_events_reach_a_flaky_endpoint_signed_and_a_paid_ad_order_converts_once(
        billing: tuple[FastAPI, httpx.AsyncClient, dict[str, str]], kafka_bootstrap: str, database_url: str,
        endpoints: dict[str, tuple[TenantEndpoint, int]], conversions: tuple[ConversionsReceiver, int]) -> None:
    _, client, keys = billing
    flaky, meta_capi = endpoints["flaky"][0], conversions[0]
    ref = "ev-ad-0001"
    await produce(kafka_bootstrap, MESSAGES_IN.name,
                  [from_an_ad(FLAKY_NUMBER, FLAKY, "wamid.AD-FIRST-1", "clid-ad-777", T0 - timedelta(hours=2))])
    conn = await asyncpg.connect(database_url)
    try:
        async def metered() -> bool | None:
            return await conn.fetchval("SELECT true FROM billing.inbound WHERE wamid = 'wamid.AD-FIRST-1'"
                                       " AND ctwa_clid = 'clid-ad-777'")
        await eventually(metered, what="the ad's first message metered with its ctwa_clid", timeout_s=60)
    finally:
        await conn.close()

    await produce(kafka_bootstrap, MESSAGES_OUT.name,
                  [order_details(FLAKY, FLAKY_NUMBER, ref, 65000, "pm_ev_od_1", T0)])

    async def requested() -> bool | None:
        r = await client.get(f"/v1/orders/{ref}", headers=bearer(keys[FLAKY]))
        return True if r.status_code == 200 and r.json()["state"] == "requested" else None
    await eventually(requested, what="the order requested", timeout_s=60)
    paid_at = T0 + timedelta(minutes=3)
    await produce(kafka_bootstrap, COMMERCE.name, [captured(FLAKY, FLAKY_NUMBER, ref, 65000, paid_at)])

    def types() -> list[str]:
        return [orjson.loads(r.body)["type"] for r in flaky.received if r.headers.get("x-parley-event-id")]

    await eventually(lambda: flaky.answered >= 4 and "order.payment_captured" in types(), timeout_s=60,
                     what=lambda: f"4 answers and order.payment_captured among the events {types()}")
    # 2 refused attempts, then every event accepted; each attempt signed afresh over the exact body
    accepted = flaky.received[2:]
    assert {orjson.loads(r.body)["type"] for r in accepted} == {"order.requested", "order.payment_captured"}
    assert flaky.received[0].headers["x-parley-event-id"] in {r.headers["x-parley-event-id"] for r in accepted}
    for r in flaky.received:
        verify(r.headers["x-parley-signature"], r.body, [SECRET], int(time.time()))
        with pytest.raises(ValueError):
            verify(r.headers["x-parley-signature"], r.body, ["not-the-secret"], int(time.time()))
    paid = next(OrderEvent.model_validate_json(r.body) for r in accepted
                if orjson.loads(r.body)["type"] == "order.payment_captured")
    assert paid.tenant_id == FLAKY and paid.reference_id == ref and paid.state == "captured"
    assert paid.ctwa_clid == "clid-ad-777", "the ad of the conversation's first message"
    assert paid.order["captured"] == {"value": 65000, "offset": 100, "currency": "INR"}

    # the conversion reached the simulator's Conversions API stand-in (which checked its signature
    # and the fields Meta requires): once, the ad's click id, the amount paid
    await eventually(lambda: len(meta_capi.events) >= 1, what="the conversion at the Conversions API", timeout_s=30)
    data = meta_capi.events[0]
    assert data["event_name"] == "Purchase" and data["action_source"] == "business_messaging"
    assert data["messaging_channel"] == "whatsapp" and data["user_data"] == {"ctwa_clid": "clid-ad-777"}
    assert data["custom_data"] == {"currency": "INR", "value": 650.0, "order_id": ref}

    # a later change (shipped) is one more event and no second conversion
    shipped = OutboundMessage(
        event_id="pm_ev_os_1", message_id="pm_ev_os_1", tenant_id=FLAKY, phone_number_id=FLAKY_NUMBER,
        occurred_at=T0 + timedelta(minutes=10), to=CUSTOMER, type="interactive",
        content={"type": "order_status", "body": {"text": "On its way"}, "action": {
            "name": "review_order", "parameters": {"reference_id": ref, "order": {"status": "shipped"}}}})
    await produce(kafka_bootstrap, MESSAGES_OUT.name, [(FLAKY_NUMBER, shipped.model_dump_json().encode())])
    await eventually(lambda: "order.shipped" in types(), what=lambda: f"order.shipped among the events {types()}",
                     timeout_s=30)
    assert len(meta_capi.events) == 1 and meta_capi.duplicates == 0

    # the same events are on wa.orders (for ingest's seats), and the orders API shows the ad
    on_topic = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, ORDERS.name)]
    mine = [e["type"] for e in on_topic if e["reference_id"] == ref]
    assert mine == ["order.requested", "order.payment_captured", "order.shipped"]
    order = (await client.get(f"/v1/orders/{ref}", headers=bearer(keys[FLAKY]))).json()
    assert order["ctwa_clid"] == "clid-ad-777"


async def test_an_endpoint_that_always_fails_gets_its_calls_dead_lettered(
        billing: tuple[FastAPI, httpx.AsyncClient, dict[str, str]], kafka_bootstrap: str, database_url: str,
        endpoints: dict[str, tuple[TenantEndpoint, int]]) -> None:
    broken = endpoints["broken"][0]
    ref = "ev-broken-0001"
    await produce(kafka_bootstrap, MESSAGES_OUT.name,
                  [order_details(BROKEN, BROKEN_NUMBER, ref, 12000, "pm_ev_od_broken", T0)])
    await eventually(lambda: len(broken.received) >= 3, timeout_s=60,
                     what=lambda: f"3 calls to the broken endpoint ({len(broken.received)})")

    async def dead_letter() -> dict[str, Any] | None:
        for r in await read_topic(kafka_bootstrap, DEAD_LETTERS.name):
            letter = orjson.loads(r.value)
            if letter["service"] == "billing" and ref in letter["payload"]:
                return dict(letter)
        return None

    letter = await eventually(dead_letter, what="the broken endpoint's call in wa.deadletter", timeout_s=60)
    assert letter["source_topic"] == ORDERS.name and letter["attempts"] == 3
    assert letter["headers"] == {"endpoint": "orders", "tenant_id": BROKEN}
    assert "500" in letter["reason"]
    assert OrderEvent.model_validate_json(letter["payload"]).type == "order.requested"
    assert len(broken.received) == 3, "no attempt after the last one"
    ids = {r.headers["x-parley-event-id"] for r in broken.received}
    assert len(ids) == 1
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM billing.webhook_outbox WHERE tenant_id = $1", BROKEN) == 0
    finally:
        await conn.close()


async def test_a_month_of_orders_shows_what_they_earned_and_what_their_conversations_cost(
        billing: tuple[FastAPI, httpx.AsyncClient, dict[str, str]], kafka_bootstrap: str) -> None:
    """November 2026 in the tenant's time zone (Asia/Kolkata): an order at 20:00 UTC on 31 October
    is in it, one at 19:00 UTC on 30 November is not. Fees: the priced messages to each order's
    customer a day either side of it; a message near two orders counts for both orders, once in
    the month."""
    app, client, keys = billing
    key, other = keys[FLAKY], "919911100002"
    t1 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    orders = [("nov-a", t1, CUSTOMER, 50000, "captured"), ("nov-b", t1 + timedelta(hours=2), CUSTOMER, 30000, "failed"),
              ("nov-c", datetime(2026, 10, 31, 20, 0, tzinfo=UTC), other, 25000, "captured"),
              ("dec-d", datetime(2026, 11, 30, 19, 0, tzinfo=UTC), other, 10000, "captured")]
    await produce(kafka_bootstrap, MESSAGES_OUT.name,
                  [order_details(FLAKY, FLAKY_NUMBER, ref, v, f"pm_sum_{ref}", at, to) for ref, at, to, v, _ in orders])
    for ref, *_ in orders:
        async def requested(ref: str = ref) -> bool | None:
            r = await client.get(f"/v1/orders/{ref}", headers=bearer(key))
            return True if r.status_code == 200 and r.json()["state"] == "requested" else None
        await eventually(requested, what=f"order {ref} requested", timeout_s=60)
    await produce(kafka_bootstrap, COMMERCE.name, [captured(FLAKY, FLAKY_NUMBER, ref, v, at + timedelta(minutes=2), s)
                                                   for ref, at, _, v, s in orders])
    for ref, *_, s in orders:
        async def settled(ref: str = ref, s: str = s) -> bool | None:
            r = await client.get(f"/v1/orders/{ref}", headers=bearer(key))
            return True if r.json()["state"] == ("captured" if s == "captured" else "payment_failed") else None
        await eventually(settled, what=f"order {ref} settled", timeout_s=60)
    r = await client.post("/v1/orders/nov-a/refunds", json={"amount": {"value": 10000, "offset": 100},
                                                             "currency": "INR", "notify": False},
                          headers={**bearer(key), "Idempotency-Key": "sum-r1"})
    assert r.status_code == 201, r.text

    pool = app.state.runtime.require_pool()
    for wamid, customer, at, amount in (("wamid.S1", CUSTOMER, t1 - timedelta(hours=1), "0.0107"),
                                        ("wamid.S2", CUSTOMER, t1 + timedelta(hours=3), "0.0107"),
                                        ("wamid.S3", CUSTOMER, t1 - timedelta(days=10), "0.0107"),
                                        ("wamid.S4", other, datetime(2026, 10, 31, 21, 0, tzinfo=UTC), "0.0014")):
        await pool.execute(
            "INSERT INTO billing.deliveries (wamid, tenant_id, phone_number_id, customer, delivered_at)"
            " VALUES ($1, $2, $3, $4, $5)", wamid, FLAKY, FLAKY_NUMBER, customer, at)
        await pool.execute(
            "INSERT INTO billing.ledger (wamid, tenant_id, phone_number_id, account, delivered_at, month,"
            " pricing_model, category, type, billable, market, currency, amount)"
            " VALUES ($1, $2, $3, 'waba', $4, '2026-11', 'PMP', 'utility', 'regular', true, 'India', 'USD', $5)",
            wamid, FLAKY, FLAKY_NUMBER, at, Decimal(amount))

    got = await client.get("/v1/orders/summary", params={"month": "2026-11"}, headers=bearer(key))
    assert got.status_code == 200, got.text
    summary = got.json()
    assert summary["time_zone"] == "Asia/Kolkata"
    [inr] = summary["currencies"]
    assert (inr["currency"], inr["orders"], inr["paid_orders"]) == ("INR", 3, 2)
    assert (Decimal(inr["captured"]), Decimal(inr["refunded"]), Decimal(inr["earned"])) == (
        Decimal("750"), Decimal("100"), Decimal("650"))
    assert summary["fees"]["messages"] == 3
    assert Decimal(summary["fees"]["amounts"]["USD"]) == Decimal("0.0228")
    by_ref = {o["reference_id"]: o for o in summary["orders"]}
    assert set(by_ref) == {"nov-a", "nov-b", "nov-c"}
    assert Decimal(by_ref["nov-a"]["earned"]) == Decimal("400") and Decimal(by_ref["nov-b"]["earned"]) == 0
    assert by_ref["nov-a"]["fees"]["messages"] == by_ref["nov-b"]["fees"]["messages"] == 2
    assert Decimal(by_ref["nov-c"]["fees"]["amounts"]["USD"]) == Decimal("0.0014")

    one = (await client.get("/v1/orders/nov-a", headers=bearer(key))).json()
    assert one["earned"] == {"value": 40000, "offset": 100, "currency": "INR"}
    assert one["fees"]["messages"] == 2

    # per tenant, authenticated, and a month that is not one is refused naming the field
    assert (await client.get("/v1/orders/summary", params={"month": "2026-11"})).status_code == 401
    broken = (await client.get("/v1/orders/summary", params={"month": "2026-11"}, headers=bearer(keys[BROKEN]))).json()
    assert broken["currencies"] == [] and broken["orders"] == [] and broken["fees"]["messages"] == 0
    bad = await client.get("/v1/orders/summary", params={"month": "2026-13"}, headers=bearer(key))
    assert bad.status_code == 422 and "month" in bad.text


async def test_a_record_that_can_never_be_an_order_fact_is_dead_lettered_alone(
        billing: tuple[FastAPI, httpx.AsyncClient, dict[str, str]], kafka_bootstrap: str) -> None:
    """The order consumers run under ConsumerGuard (ADR 0075): in one batch, a payment update with
    no reference_id and one bound to a tenant that does not own the number go to wa.deadletter
    with a reason naming the problem; the good record beside them is stored."""
    app, client, keys = billing
    good = captured(FLAKY, FLAKY_NUMBER, "ev-guard-ok", 1000, T0)
    no_reference = (FLAKY_NUMBER, orjson.dumps({"kind": "payment", "event_id": "payment:no-ref", "tenant_id": FLAKY,
                                                "phone_number_id": FLAKY_NUMBER, "status": "captured",
                                                "occurred_at": T0.isoformat()}))
    unbound = captured(BROKEN, FLAKY_NUMBER, "ev-guard-unbound", 1000, T0)  # BROKEN does not own it
    await produce(kafka_bootstrap, COMMERCE.name, [no_reference, good, unbound])

    async def stored() -> bool | None:
        r = await client.get("/v1/orders/ev-guard-ok", headers=bearer(keys[FLAKY]))
        return True if r.status_code == 200 else None
    await eventually(stored, what="the good payment stored beside the bad ones", timeout_s=60)

    async def letters() -> list[dict[str, Any]] | None:
        found = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, DEAD_LETTERS.name)]
        mine = [d for d in found if d["source_topic"] == COMMERCE.name]
        return mine if len(mine) >= 2 else None
    mine = await eventually(letters, what="both bad records dead-lettered", timeout_s=60)
    reasons = {orjson.loads(d["payload"])["event_id"]: d["reason"] for d in mine}
    assert "reference_id" in reasons["payment:no-ref"]
    assert "Unbound" in next(r for k, r in reasons.items() if k != "payment:no-ref")
    assert all(d["service"] == "billing" for d in mine)
    assert app.state.consumer_guards["orders:wa.commerce"].dead_lettered == 2
    assert (await client.get("/v1/orders/ev-guard-unbound", headers=bearer(keys[BROKEN]))).status_code == 404
