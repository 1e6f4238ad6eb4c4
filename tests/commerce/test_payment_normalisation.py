"""Payment updates and inbound carts through the pure normaliser (corpus in ./corpus)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from parley_common.meta import normalise_webhook
from parley_common.meta.webhook import MappingTenants

CORPUS = Path(__file__).parent / "corpus"
RECEIVED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TENANTS = MappingTenants(numbers={"880000000001": "corpus-tenant"})


def _case(name: str) -> dict[str, Any]:
    return json.loads((CORPUS / f"{name}.json").read_text())["webhook"]


def test_payment_update_is_not_a_message_status_and_keeps_its_reference_id() -> None:
    out = normalise_webhook(_case("payment_captured_in"), received_at=RECEIVED, tenants=TENANTS)
    assert [s.status for s in out.statuses] == [], "a payment is not a delivery status of a message"
    [payment] = out.payments
    assert payment.reference_id == "bus-ord-0001"
    assert payment.status == "captured"
    assert payment.tenant_id == "corpus-tenant"
    assert payment.phone_number_id == "880000000001"
    assert payment.amount is not None and payment.amount.exact() == Decimal("450.00")
    assert payment.currency == "INR"
    [tx] = payment.transactions
    assert (tx.id, tx.type, tx.status) == ("pay_T1", "razorpay", "success")
    assert [r.id for r in tx.refunds] == ["rfnd_1"]
    assert tx.refunds[0].amount is not None and tx.refunds[0].amount.exact() == Decimal("150.00")


def test_payment_update_keeps_every_field_meta_sent() -> None:
    webhook = _case("payment_failed_transactions_list")
    sent = webhook["entry"][0]["changes"][0]["value"]["statuses"][0]
    out = normalise_webhook(webhook, received_at=RECEIVED, tenants=TENANTS)
    [payment] = out.payments
    assert payment.status_object == sent
    assert payment.model_dump(mode="json")["payment"]["settlement_hint"] == "next_business_day"
    [tx] = payment.transactions
    assert tx.error == {"code": "insufficient_funds", "reason": "Not enough balance"}
    # the message status beside it is still a message status
    assert [(s.wamid, s.status) for s in out.statuses] == [("wamid.MSG9", "delivered")]


def test_payment_event_ids_are_deterministic_and_distinct_per_update() -> None:
    webhook = _case("payment_captured_in")
    first = normalise_webhook(webhook, received_at=RECEIVED, tenants=TENANTS).payments[0]
    again = normalise_webhook(webhook, received_at=datetime.now(UTC), tenants=TENANTS).payments[0]
    assert first.event_id == again.event_id
    changed = json.loads(json.dumps(webhook))
    changed["entry"][0]["changes"][0]["value"]["statuses"][0]["payment"]["transaction"]["refunds"].append(
        {"id": "rfnd_2", "amount": {"value": 100, "offset": 100}, "currency": "INR", "status": "pending"})
    other = normalise_webhook(changed, received_at=RECEIVED, tenants=TENANTS).payments[0]
    assert other.event_id != first.event_id, "a later update of the same payment is a new event"


def test_inbound_order_cart_is_a_typed_event_and_still_an_inbound_message() -> None:
    out = normalise_webhook(_case("order_cart"), received_at=RECEIVED, tenants=TENANTS)
    [message] = out.messages
    assert message.type == "order"  # the window and the router still see the customer's message
    [cart] = out.carts
    assert cart.event_id == "cart:wamid.CART1"
    assert cart.wamid == "wamid.CART1"
    assert cart.catalog_id == "cat-buses"
    assert cart.customer_wa_id == "919900000001" and cart.customer_user_id == "IN.1234567890"
    assert [(i.product_retailer_id, i.quantity, i.item_price, i.currency) for i in cart.product_items] == [
        ("trip-BLR-MYS-0900", 2, Decimal("450.5"), "INR"), ("snack-box", 1, Decimal("80"), "INR")]
    assert cart.total() == Decimal("981.0")
    assert cart.referral is not None and cart.referral.ctwa_clid == "ARAkLkA8rmlFeiCktEJQ"
    assert cart.text == "two seats please"


def test_a_malformed_payment_update_is_a_shape_problem_not_a_lost_record() -> None:
    webhook = _case("payment_captured_in")
    del webhook["entry"][0]["changes"][0]["value"]["statuses"][0]["payment"]
    out = normalise_webhook(webhook, received_at=RECEIVED, tenants=TENANTS)
    assert out.payments == [] and out.statuses == []
    [problem] = out.problems
    assert problem.where.endswith("statuses[0]") and "reference_id" in problem.reason
