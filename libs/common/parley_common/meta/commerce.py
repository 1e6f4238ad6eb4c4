"""Commerce parts of a ``messages`` change: payment updates and inbound carts (pure).

A status with ``"type": "payment"`` is a payment of an ``order_details`` request, not a delivery
status of a message: it becomes a ``PaymentUpdate`` (wa.commerce) that keeps the whole status
object. An inbound ``order`` message stays an ``InboundMessage`` (it opens the customer service
window) and also becomes an ``OrderCart``. The webhook normaliser calls these two functions;
a ValueError names what is missing and becomes a shape problem there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from parley_common.contracts import OrderCart, PaymentUpdate, Referral

PAYMENT_STATUS_TYPE = "payment"


def is_payment_status(status: Any) -> bool:
    return isinstance(status, dict) and status.get("type") == PAYMENT_STATUS_TYPE


def payment_update(
    status: dict[str, Any], *, tenant_id: str | None, phone_number_id: str, waba_id: str | None,
    occurred_at: datetime, received_at: datetime,
) -> PaymentUpdate:
    payment = status.get("payment")
    if not isinstance(payment, dict):
        raise ValueError("payment status has no payment object (and so no reference_id)")
    reference_id = payment.get("reference_id")
    if not isinstance(reference_id, str) or not reference_id:
        raise ValueError("payment status has no payment.reference_id")
    state = status.get("status")
    if not isinstance(state, str) or not state:
        raise ValueError("payment status has no status")
    transactions = payment.get("transactions")
    if not isinstance(transactions, list):
        single = payment.get("transaction")
        transactions = [single] if isinstance(single, dict) else []
    return PaymentUpdate.model_validate({
        "event_id": PaymentUpdate.make_event_id(status),
        "tenant_id": tenant_id,
        "phone_number_id": phone_number_id,
        "waba_id": waba_id,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "payment_id": _str(status.get("id")),
        "reference_id": reference_id,
        "status": state,
        "recipient_id": _str(status.get("recipient_id")),
        "recipient_user_id": _str(status.get("recipient_user_id")),
        "amount": payment.get("amount") if isinstance(payment.get("amount"), dict) else None,
        "currency": _str(payment.get("currency")),
        "transactions": [t for t in transactions if isinstance(t, dict)],
        "payment": payment,
        "status_object": status,
    })


def order_cart(
    message: dict[str, Any], *, tenant_id: str | None, phone_number_id: str, waba_id: str | None,
    customer_wa_id: str | None, customer_user_id: str | None, occurred_at: datetime,
    received_at: datetime,
) -> OrderCart:
    wamid = message.get("id")
    order = message.get("order")
    if not isinstance(wamid, str) or not wamid:
        raise ValueError("order message has no id (wamid)")
    if not isinstance(order, dict):
        raise ValueError("order message has no order object")
    items = order.get("product_items")
    referral = message.get("referral")
    return OrderCart.model_validate({
        "event_id": OrderCart.make_event_id(wamid),
        "tenant_id": tenant_id,
        "phone_number_id": phone_number_id,
        "waba_id": waba_id,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "wamid": wamid,
        "customer_wa_id": customer_wa_id,
        "customer_user_id": customer_user_id,
        "catalog_id": _str(order.get("catalog_id")),
        "text": _str(order.get("text")),
        # prices as Meta wrote them (a JSON number), never through binary floating point
        "product_items": [{**i, "item_price": str(i.get("item_price"))}
                          for i in (items if isinstance(items, list) else []) if isinstance(i, dict)],
        "referral": Referral.model_validate(referral) if isinstance(referral, dict) else None,
        "order": order,
    })


def _str(v: Any) -> str | None:
    if isinstance(v, str):
        return v or None
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None
