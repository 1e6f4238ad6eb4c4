"""The simulator plays Meta's side of payments: order_details accepted, then payment updates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from parley_common.meta import normalise_webhook

from .conftest import CUSTOMER, PN, Receiver, SimFactory


def order_details(ref: str, value: int = 45000) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "interactive", "interactive": {
        "type": "order_details", "body": {"text": "Your tickets"}, "action": {
            "name": "review_and_pay", "parameters": {
                "reference_id": ref, "type": "digital-goods", "currency": "INR",
                "total_amount": {"value": value, "offset": 100},
                "payment_settings": [{"type": "payment_gateway",
                                      "payment_gateway": {"type": "payu", "configuration_name": "cfg"}}],
                "order": {"status": "pending", "items": [{"retailer_id": "s1", "name": "Seat", "quantity": 1,
                                                          "amount": {"value": value, "offset": 100}}],
                          "subtotal": {"value": value, "offset": 100}}}}}}


def payment_statuses(receiver: Receiver) -> list[dict[str, Any]]:
    return [s for s in receiver.statuses() if s.get("type") == "payment"]


async def test_an_order_details_message_is_paid_pending_then_captured(make_sim: SimFactory,
                                                                      receiver: Receiver) -> None:
    h = await make_sim(payment_capture_ratio=1.0, payment_fail_ratio=0.0)
    await h.open_window()
    r = await h.send(order_details("ord-1"))
    assert r.status_code == 200, r.text
    await receiver.wait_for(lambda: len(payment_statuses(receiver)) == 2)
    pending, captured = payment_statuses(receiver)
    assert (pending["status"], captured["status"]) == ("pending", "captured")
    assert captured["payment"]["reference_id"] == "ord-1"
    assert captured["payment"]["amount"] == {"value": 45000, "offset": 100}
    assert captured["payment"]["transaction"]["type"] == "payu"
    assert captured["payment"]["transaction"]["status"] == "success"
    # and Parley's normaliser reads them as payment updates, not message statuses
    posted = [p.json for p in receiver.posts if b'"payment"' in p.body]
    out = [normalise_webhook(doc, received_at=datetime.now(UTC)) for doc in posted]
    assert sorted(u.status for o in out for u in o.payments) == ["captured", "pending"]
    assert all(s.status != "captured" for o in out for s in o.statuses)


async def test_some_payments_fail_and_a_refund_is_reported_under_the_transaction(make_sim: SimFactory,
                                                                                 receiver: Receiver) -> None:
    h = await make_sim(payment_capture_ratio=0.0, payment_fail_ratio=1.0)
    await h.open_window()
    await h.send(order_details("ord-2"))
    await receiver.wait_for(lambda: len(payment_statuses(receiver)) == 2)
    failed = payment_statuses(receiver)[-1]
    assert failed["status"] == "failed" and failed["payment"]["transaction"]["error"]["code"]
    r = await h.http.post(f"{h.url}/_sim/payments/{PN}/ord-2/refunds", json={})
    assert r.status_code == 409, "nothing captured, nothing to refund"

    await h.http.patch(f"{h.url}/_sim/behaviour", json={"payment_capture_ratio": 1.0, "payment_fail_ratio": 0.0})
    await h.send(order_details("ord-3", 90000))
    await receiver.wait_for(lambda: len(payment_statuses(receiver)) == 4)
    r = await h.http.post(f"{h.url}/_sim/payments/{PN}/ord-3/refunds", json={"value": 30000})
    assert r.status_code == 200, r.text
    too_much = await h.http.post(f"{h.url}/_sim/payments/{PN}/ord-3/refunds", json={"value": 60001})
    assert too_much.status_code == 409
    await receiver.wait_for(lambda: len(payment_statuses(receiver)) == 5)
    refunded = payment_statuses(receiver)[-1]
    assert refunded["payment"]["reference_id"] == "ord-3"
    assert [x["amount"] for x in refunded["payment"]["transaction"]["refunds"]] == [{"value": 30000, "offset": 100}]


async def test_commerce_interactive_messages_are_accepted_as_meta_does(make_sim: SimFactory) -> None:
    h = await make_sim()
    await h.open_window()
    base = {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "interactive"}
    for interactive in (
        {"type": "order_status", "body": {"text": "Shipped"}, "action": {"name": "review_order", "parameters": {
            "reference_id": "ord-1", "order": {"status": "shipped"}}}},
        {"type": "product", "action": {"catalog_id": "c1", "product_retailer_id": "p1"}},
        {"type": "catalog_message", "body": {"text": "See"}, "action": {"name": "catalog_message"}},
    ):
        r = await h.send({**base, "interactive": interactive})
        assert r.status_code == 200, (interactive["type"], r.text)
    r = await h.send({**base, "interactive": {"type": "order_details", "body": {"text": "x"},
                                              "action": {"name": "review_and_pay", "parameters": {}}}})
    assert r.status_code == 400 and "reference_id" in r.text
