"""Orders in billing on real Kafka and PostgreSQL: facts from wa.commerce and wa.messages.out in
any order, the orders API per tenant, refunds (idempotent, capped) and their customer notices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from parley_common.contracts import InboundMessage, OrderCart, OutboundMessage, PaymentUpdate, Referral
from parley_common.topics import COMMERCE, MESSAGES_IN, MESSAGES_OUT
from support.kafka import read_topic
from support.waiting import eventually

from .conftest import OTHER, SHOP, SHOP_NUMBER, bearer, produce

pytestmark = pytest.mark.infra
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CUSTOMER = "919900000001"


@pytest.fixture(scope="module")
async def billing(kafka_bootstrap: str, database_url: str, commerce_keys: dict[str, str]
                  ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    from parley_billing.app import create_app
    from parley_billing.settings import BillingSettings

    app = create_app(BillingSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                     batch_timeout_ms=50, order_batch_max_records=50))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://billing") as c:
            yield app, c


def order_details(ref: str, value: int, *, message_id: str, at: datetime, reply_to: str | None = None
                  ) -> tuple[str, bytes]:
    msg = OutboundMessage(
        event_id=message_id, message_id=message_id, tenant_id=SHOP, phone_number_id=SHOP_NUMBER,
        occurred_at=at, to=CUSTOMER, type="interactive", reply_to_wamid=reply_to,
        content={"type": "order_details", "body": {"text": "Your bus tickets"}, "action": {
            "name": "review_and_pay", "parameters": {
                "reference_id": ref, "type": "digital-goods", "currency": "INR",
                "total_amount": {"value": value, "offset": 100},
                "payment_settings": [{"type": "payment_gateway",
                                      "payment_gateway": {"type": "razorpay", "configuration_name": "buses"}}],
                "order": {"status": "pending", "items": [
                    {"retailer_id": "seat-3A", "name": "Seat 3A", "quantity": 1,
                     "amount": {"value": value, "offset": 100}}],
                    "subtotal": {"value": value, "offset": 100}}}}})
    return SHOP_NUMBER, msg.model_dump_json().encode()


def payment(ref: str, status: str, value: int, *, at: datetime, tx: str) -> tuple[str, bytes]:
    status_object = {"id": f"wamid.pay-{ref}", "type": "payment", "status": status,
                     "timestamp": str(int(at.timestamp())), "recipient_id": CUSTOMER,
                     "payment": {"reference_id": ref, "amount": {"value": value, "offset": 100}, "currency": "INR",
                                 "transaction": {"id": tx, "type": "razorpay",
                                                 "status": "success" if status == "captured" else status}}}
    update = PaymentUpdate(
        event_id=PaymentUpdate.make_event_id(status_object), tenant_id=SHOP, phone_number_id=SHOP_NUMBER,
        occurred_at=at, payment_id=status_object["id"], reference_id=ref, status=status,
        recipient_id=CUSTOMER, amount={"value": value, "offset": 100}, currency="INR",
        transactions=[status_object["payment"]["transaction"]], payment=status_object["payment"],
        status_object=status_object)
    return SHOP_NUMBER, update.model_dump_json().encode()


def cart(wamid: str, clid: str, at: datetime) -> tuple[str, bytes]:
    c = OrderCart(event_id=OrderCart.make_event_id(wamid), tenant_id=SHOP, phone_number_id=SHOP_NUMBER,
                  occurred_at=at, wamid=wamid, customer_wa_id=CUSTOMER, catalog_id="cat-buses",
                  product_items=[{"product_retailer_id": "trip-1", "quantity": 1, "item_price": "450",
                                  "currency": "INR"}],
                  referral={"source_type": "ad", "source_id": "ad-1", "ctwa_clid": clid})
    return SHOP_NUMBER, c.model_dump_json().encode()


async def order_in_state(client: httpx.AsyncClient, key: str, ref: str, state: str, facts: int = 1
                         ) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"/v1/orders/{ref}", headers=bearer(key))
        ok = r.status_code == 200 and r.json()["state"] == state and len(r.json()["history"]) >= facts
        return r.json() if ok else None
    return await eventually(probe, what=f"order {ref} in state {state} with {facts} facts", timeout_s=60)


async def test_payment_before_its_order_and_duplicates_end_in_one_captured_order(
        billing: tuple[FastAPI, httpx.AsyncClient], kafka_bootstrap: str, commerce_keys: dict[str, str]) -> None:
    _, client = billing
    key = commerce_keys[SHOP]
    ref = "bus-0001"
    # Meta's capture arrives first (and twice), the business's order_details after it.
    captured = payment(ref, "captured", 45000, at=T0 + timedelta(minutes=2), tx="pay_1")
    await produce(kafka_bootstrap, COMMERCE.name, [payment(ref, "pending", 45000, at=T0 + timedelta(minutes=1),
                                                           tx="pay_1"), captured, captured])
    unknown = await order_in_state(client, key, ref, "unknown", facts=2)
    assert [h["status"] for h in unknown["history"]] == ["pending", "captured"]
    listed = (await client.get("/v1/orders", params={"state": "unknown"}, headers=bearer(key))).json()
    assert ref in [o["reference_id"] for o in listed["orders"]], "an orphan payment is reported"

    await produce(kafka_bootstrap, COMMERCE.name, [cart("wamid.CART-1", "clid-ad-42", T0 - timedelta(minutes=5))])
    await produce(kafka_bootstrap, MESSAGES_OUT.name, [order_details(ref, 45000, message_id="pm_od_1", at=T0,
                                                                     reply_to="wamid.CART-1")])
    order = await order_in_state(client, key, ref, "captured", facts=3)
    order = await eventually(lambda: _with_ad(client, key, ref), what="the cart's ad referral on the order",
                             timeout_s=60)
    assert order["total"] == {"value": 45000, "offset": 100, "currency": "INR"}
    assert order["captured"] == {"value": 45000, "offset": 100, "currency": "INR"}
    assert order["customer"] == CUSTOMER and order["conversation_wamid"] == "wamid.CART-1"
    assert order["ctwa_clid"] == "clid-ad-42"
    assert [(h["kind"], h["status"]) for h in order["history"]] == [
        ("requested", "requested"), ("payment", "pending"), ("payment", "captured")]

    # another tenant's key sees nothing of it
    r = await client.get(f"/v1/orders/{ref}", headers=bearer(commerce_keys[OTHER]))
    assert r.status_code == 404
    assert (await client.get(f"/v1/orders/{ref}")).status_code == 401


async def test_refunds_are_idempotent_capped_and_tell_the_customer(
        billing: tuple[FastAPI, httpx.AsyncClient], kafka_bootstrap: str, commerce_keys: dict[str, str]) -> None:
    _, client = billing
    key = commerce_keys[SHOP]
    ref = "bus-0002"
    await produce(kafka_bootstrap, MESSAGES_OUT.name, [order_details(ref, 90000, message_id="pm_od_2", at=T0)])
    await produce(kafka_bootstrap, COMMERCE.name, [payment(ref, "captured", 90000, at=T0 + timedelta(minutes=1),
                                                           tx="pay_2")])
    await order_in_state(client, key, ref, "captured")
    url = f"/v1/orders/{ref}/refunds"
    part = {"amount": {"value": 30000, "offset": 100}, "currency": "INR", "reason": "one seat cancelled"}

    first = await client.post(url, json=part, headers={**bearer(key), "Idempotency-Key": "r-1"})
    assert first.status_code == 201, first.text
    assert first.json()["order"]["state"] == "refunded_partly"
    again = await client.post(url, json=part, headers={**bearer(key), "Idempotency-Key": "r-1"})
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert again.json()["notice"]["message_id"] == first.json()["notice"]["message_id"]
    other_body = await client.post(url, json={**part, "reason": "x"}, headers={**bearer(key), "Idempotency-Key": "r-1"})
    assert other_body.status_code == 409

    too_much = await client.post(url, json={"amount": {"value": 60001, "offset": 100}, "currency": "INR"},
                                 headers={**bearer(key), "Idempotency-Key": "r-2"})
    assert too_much.status_code == 409 and "600" in too_much.json()["detail"]
    wrong_currency = await client.post(url, json={"amount": {"value": 1, "offset": 100}, "currency": "USD"},
                                       headers={**bearer(key), "Idempotency-Key": "r-3"})
    assert wrong_currency.status_code == 409
    no_currency = await client.post(url, json={"amount": {"value": 1, "offset": 100}},
                                    headers={**bearer(key), "Idempotency-Key": "r-4"})
    assert no_currency.status_code == 422 and no_currency.json()["detail"][0]["loc"] == ["body", "currency"]
    no_key = await client.post(url, json=part, headers=bearer(key))
    assert no_key.status_code == 422

    rest = await client.post(url, json={}, headers={**bearer(key), "Idempotency-Key": "r-5"})
    assert rest.status_code == 201, rest.text
    assert rest.json()["refund"] == {"value": 60000, "offset": 100, "currency": "INR", "idempotency_key": "r-5"}
    assert rest.json()["order"]["state"] == "refunded_fully"
    nothing_left = await client.post(url, json={}, headers={**bearer(key), "Idempotency-Key": "r-6"})
    assert nothing_left.status_code == 409
    other_tenant = await client.post(url, json={}, headers={**bearer(commerce_keys[OTHER]), "Idempotency-Key": "r-7"})
    assert other_tenant.status_code == 404

    notices = [orjson.loads(r.value) for r in await read_topic(kafka_bootstrap, MESSAGES_OUT.name)
               if r.value and b"pm_refund_" in r.value]
    by_id = {n["message_id"]: n for n in notices if n["content"]["action"]["parameters"]["reference_id"] == ref}
    assert set(by_id) == {first.json()["notice"]["message_id"], rest.json()["notice"]["message_id"]}
    full = by_id[rest.json()["notice"]["message_id"]]
    assert full["to"] == CUSTOMER and full["phone_number_id"] == SHOP_NUMBER and full["tenant_id"] == SHOP
    assert full["content"]["type"] == "order_status"
    assert full["content"]["action"]["parameters"] == {
        "reference_id": ref, "order": {"status": "canceled", "description": "Refund of 600 INR issued in full."}}
    # billing reads its own notices back as fulfilment facts of the order
    order = await eventually(lambda: _with_fulfilment(client, key, ref), what="the refund notices in the history",
                             timeout_s=60)
    assert order["state"] == "refunded_fully" and order["refunded"]["value"] == 90000


async def _with_ad(client: httpx.AsyncClient, key: str, ref: str) -> dict[str, Any] | None:
    order = (await client.get(f"/v1/orders/{ref}", headers=bearer(key))).json()
    return order if order["ctwa_clid"] else None


async def _with_fulfilment(client: httpx.AsyncClient, key: str, ref: str) -> dict[str, Any] | None:
    order = (await client.get(f"/v1/orders/{ref}", headers=bearer(key))).json()
    return order if sum(h["kind"] == "fulfilment" for h in order["history"]) == 2 else None


async def test_orders_list_and_bad_queries(billing: tuple[FastAPI, httpx.AsyncClient],
                                           commerce_keys: dict[str, str]) -> None:
    _, client = billing
    r = await client.get("/v1/orders", params={"state": "lost"}, headers=bearer(commerce_keys[SHOP]))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "state"]
    r = await client.get("/v1/orders", headers=bearer(commerce_keys[OTHER]))
    assert r.status_code == 200 and r.json()["orders"] == []
    december = (await client.get("/v1/orders", params={"month": "2026-12"}, headers=bearer(commerce_keys[SHOP]))).json()
    assert {"bus-0001", "bus-0002"} <= {o["reference_id"] for o in december["orders"]}
    earned = {(x["state"], x["currency"]): Decimal(x["earned"]) for x in december["summary"]}
    assert earned[("refunded_fully", "INR")] == 0 and earned[("captured", "INR")] == Decimal("450")
    november = (await client.get("/v1/orders", params={"month": "2026-11"}, headers=bearer(commerce_keys[SHOP]))).json()
    assert november["orders"] == [] and november["summary"] == []
    bad = await client.get("/v1/orders", params={"month": "2026-13"}, headers=bearer(commerce_keys[SHOP]))
    assert bad.status_code == 422


async def test_an_order_shows_what_its_conversation_cost_in_whatsapp_fees(
        billing: tuple[FastAPI, httpx.AsyncClient], kafka_bootstrap: str, commerce_keys: dict[str, str]) -> None:
    app, client = billing
    key = commerce_keys[SHOP]
    ref = "bus-0003"
    await produce(kafka_bootstrap, MESSAGES_OUT.name, [order_details(ref, 45000, message_id="pm_od_3", at=T0)])
    await produce(kafka_bootstrap, COMMERCE.name, [payment(ref, "captured", 45000, at=T0 + timedelta(minutes=3),
                                                           tx="pay_3")])
    await order_in_state(client, key, ref, "captured", facts=2)
    pool = app.state.runtime.require_pool()
    # the business's messages to this customer, as billing priced them: two near the order, one a week off
    for wamid, at, amount in (("wamid.F1", T0 - timedelta(hours=1), "0.0107"),
                              ("wamid.F2", T0 + timedelta(minutes=5), "0.0107"),
                              ("wamid.F3", T0 + timedelta(days=7), "0.0107")):
        await pool.execute("INSERT INTO billing.deliveries (wamid, tenant_id, phone_number_id, customer, delivered_at)"
                           " VALUES ($1, $2, $3, $4, $5)", wamid, SHOP, SHOP_NUMBER, CUSTOMER, at)
        await pool.execute(
            "INSERT INTO billing.ledger (wamid, tenant_id, phone_number_id, account, delivered_at, month,"
            " pricing_model, category, type, billable, market, currency, amount)"
            " VALUES ($1, $2, $3, 'waba', $4, '2026-12', 'PMP', 'utility', 'regular', true, 'India', 'USD', $5)",
            wamid, SHOP, SHOP_NUMBER, at, Decimal(amount))
    order = (await client.get(f"/v1/orders/{ref}", headers=bearer(key))).json()
    assert order["fees"]["messages"] == 2
    assert order["fees"]["amounts"] == {"USD": "0.02140000"}


async def test_an_order_to_a_customer_known_by_bsuid_takes_the_ad_of_their_contact(
        billing: tuple[FastAPI, httpx.AsyncClient], kafka_bootstrap: str, commerce_keys: dict[str, str]) -> None:
    """The customer was first seen by BSUID (their contact, ADR 0117), so billing meters their
    messages under it; the business's order_details goes to their phone number, stamped with the
    contact by ingest. The order takes the ad of the contact's message, shows the number it was
    addressed to, and its refund notice carries the contact (the sender's rules are the person's)."""
    app, client = billing
    key, ref = commerce_keys[SHOP], "bus-bsuid-1"
    phone, bsuid = "919900000071", "IN.7134912086550071"
    ad = InboundMessage(event_id="wamid.BSUID-AD-1", tenant_id=SHOP, phone_number_id=SHOP_NUMBER,
                        occurred_at=T0 - timedelta(hours=1), wamid="wamid.BSUID-AD-1", customer_wa_id=phone,
                        customer_user_id=bsuid, contact_id=bsuid, type="text", text="I saw your ad",
                        referral=Referral(source_type="ad", source_id="ad-71", ctwa_clid="clid-bsuid-71"))
    await produce(kafka_bootstrap, MESSAGES_IN.name, [(SHOP_NUMBER, ad.model_dump_json().encode())])
    pool = app.state.runtime.require_pool()

    async def metered() -> bool | None:
        return await pool.fetchval("SELECT true FROM billing.inbound WHERE wamid = 'wamid.BSUID-AD-1'"
                                   " AND customer = $1", bsuid)
    await eventually(metered, what="the ad's message metered under the customer's contact", timeout_s=60)

    number, record = order_details(ref, 45000, message_id="pm_od_bsuid_1", at=T0)
    stamped = {**orjson.loads(record), "to": phone, "contact_id": bsuid}
    await produce(kafka_bootstrap, MESSAGES_OUT.name, [(number, orjson.dumps(stamped))])
    order = await order_in_state(client, key, ref, "requested")
    assert order["ctwa_clid"] == "clid-bsuid-71"
    assert order["customer"] == phone and "contact" not in order

    await produce(kafka_bootstrap, COMMERCE.name, [payment(ref, "captured", 45000, at=T0 + timedelta(minutes=2),
                                                           tx="pay_bsuid_1")])
    await order_in_state(client, key, ref, "captured", facts=2)
    r = await client.post(f"/v1/orders/{ref}/refunds", json={}, headers={**bearer(key), "Idempotency-Key": "bsuid-r1"})
    assert r.status_code == 201, r.text
    notice_id = r.json()["notice"]["message_id"]
    notices = [orjson.loads(x.value) for x in await read_topic(kafka_bootstrap, MESSAGES_OUT.name)
               if x.value and b"pm_refund_" in x.value]
    notice = next(n for n in notices if n["message_id"] == notice_id)
    assert (notice["to"], notice["contact_id"]) == (phone, bsuid)
