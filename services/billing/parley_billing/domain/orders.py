"""Orders: what the business asked the customer to pay, what Meta reported, what was refunded.

An order (per tenant and ``reference_id``) is the fold of a *set* of facts, each with a stable id:

- ``requested``: the business sent an ``order_details`` message (items, total, currency, customer);
- ``payment``: a payment update from Meta (``pending`` / ``captured`` / ``failed``, transactions);
- ``fulfilment``: the business sent an ``order_status`` message (processing, shipped, ...);
- ``refund``: the business recorded a refund through Parley's API.

The view is computed from the facts sorted in one canonical order (event time, then kind, then
id), so it does not depend on the order in which the facts arrived, and a fact seen twice is one
fact. Money is exact: Meta's ``{value, offset}`` pairs become ``Decimal``; amounts in another
currency than the order's are never added up.

Rules that decide (pure):
- a payment counts as captured once any captured update exists (money moved; a later pending or
  failed update of a retried attempt does not undo it); otherwise the latest update decides;
- refunds are counted in the order they were recorded (their ``seq``) and never beyond the
  captured amount: a refund that would exceed it is kept in the history as refused and not
  counted (``decide_refund`` refuses it before it is ever recorded), and a later refund never
  displaces an earlier one, whatever the clocks say;
- the state is the furthest thing that happened: refunded (fully or partly) over canceled over
  completed over shipped over captured / failed / pending over requested; an order with payments
  but no request is ``unknown`` (the payment is kept and reported, not dropped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

FactKind = Literal["requested", "payment", "fulfilment", "refund"]
KIND_RANK: dict[str, int] = {"requested": 0, "payment": 1, "fulfilment": 2, "refund": 3}

PAYMENT_STATUSES = ("pending", "captured", "failed")
FULFILMENT_STATUSES = ("pending", "processing", "partially_shipped", "shipped", "completed", "canceled")
# Later in this tuple = further along; used only to break ties of equal event time.
_FULFILMENT_RANK = {s: i for i, s in enumerate(FULFILMENT_STATUSES)}
_PAYMENT_RANK = {"pending": 0, "failed": 1, "captured": 2}

ORDER_STATES = (
    "unknown", "requested", "payment_pending", "payment_failed", "captured", "shipped", "completed",
    "canceled", "refunded_partly", "refunded_fully",
)


class OrderError(ValueError):
    """A fact or request that cannot be part of an order (names the field)."""


@dataclass(frozen=True)
class Money:
    """An exact amount in one currency."""

    amount: Decimal
    currency: str

    @staticmethod
    def from_meta(obj: Any, currency: Any, *, where: str) -> Money:
        """Meta's ``{"value": 45000, "offset": 100}`` (450.00) in ``currency``."""
        if not isinstance(obj, Mapping):
            raise OrderError(f"{where}: expected an object {{value, offset}}")
        value, offset = obj.get("value"), obj.get("offset", 100)
        if isinstance(value, bool) or not isinstance(value, int):
            raise OrderError(f"{where}.value: expected an integer")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset <= 0:
            raise OrderError(f"{where}.offset: expected a positive integer")
        if not isinstance(currency, str) or len(currency) != 3:
            raise OrderError(f"{where}: currency must be an ISO 4217 code")
        return Money(Decimal(value) / Decimal(offset), currency.upper())

    def as_meta(self, offset: int = 100) -> dict[str, Any]:
        """``{value, offset, currency}``; the offset grows when the amount needs more digits."""
        while (self.amount * offset) != (self.amount * offset).to_integral_value():
            offset *= 10
        return {"value": int(self.amount * offset), "offset": offset, "currency": self.currency}


@dataclass(frozen=True)
class OrderFact:
    fact_id: str
    kind: FactKind
    occurred_at: datetime
    body: Mapping[str, Any] = field(default_factory=dict)

    def sort_key(self) -> tuple[datetime, int, str]:
        return (self.occurred_at, KIND_RANK[self.kind], self.fact_id)


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    kind: str
    status: str
    fact_id: str
    amount: Money | None = None
    note: str | None = None


@dataclass(frozen=True)
class OrderView:
    reference_id: str
    state: str
    currency: str | None
    total: Money | None
    captured: Money | None
    refunded: Money | None
    payment_status: str | None
    fulfilment_status: str | None
    customer: str | None
    phone_number_id: str | None
    items: tuple[Mapping[str, Any], ...]
    conversation_wamid: str | None
    ctwa_clid: str | None
    history: tuple[HistoryEntry, ...]
    problems: tuple[str, ...]
    # The customer's contact (ADR 0117) as billing keys the customer's facts: the contact the
    # order_details was stamped with, else the address (records from before contacts). Not shown
    # to the business, which sees ``customer``, whom Meta was asked to send to.
    contact: str | None

    @property
    def refundable(self) -> Decimal:
        captured = self.captured.amount if self.captured else Decimal(0)
        refunded = self.refunded.amount if self.refunded else Decimal(0)
        return captured - refunded


def fold_order(reference_id: str, facts: Iterable[OrderFact]) -> OrderView:
    """The order as of every fact given (any order, duplicates by fact id ignored)."""
    unique: dict[str, OrderFact] = {}
    for f in facts:
        unique.setdefault(f.fact_id, f)
    ordered = sorted(unique.values(), key=OrderFact.sort_key)

    requested: OrderFact | None = None
    currency: str | None = None
    total: Money | None = None
    customer = contact = phone = conversation = ctwa = None
    items: tuple[Mapping[str, Any], ...] = ()
    problems: list[str] = []
    history: list[HistoryEntry] = []

    for f in ordered:
        if f.kind == "requested" and requested is None:
            requested = f
            currency = f.body.get("currency")
            total = _money_or_none(f.body.get("total"), currency)
            customer = f.body.get("customer")
            contact = f.body.get("contact") or contact_key(customer)
            phone = f.body.get("phone_number_id")
            conversation = f.body.get("conversation_wamid")
            ctwa = f.body.get("ctwa_clid")
            raw_items = f.body.get("items")
            items = tuple(raw_items) if isinstance(raw_items, list) else ()
    if requested is None:
        # no request: the currency is what the payments say (kept for the report)
        currency = next((f.body.get("currency") for f in ordered if f.body.get("currency")), None)
        phone = next((f.body.get("phone_number_id") for f in ordered if f.body.get("phone_number_id")), None)
        customer = next((f.body.get("customer") for f in ordered if f.body.get("customer")), None)
        contact = contact_key(customer)

    # What was captured is known before refunds are counted, so a refund's event time (Parley's
    # clock) against a capture's (Meta's) never decides whether it counts.
    captured: Money | None = None
    for f in ordered:
        if f.kind == "payment" and f.body.get("status") == "captured":
            amount = _money_or_none(f.body.get("amount"), f.body.get("currency") or currency)
            if amount is None or currency is None or amount.currency == currency:
                captured = amount or total
                break
    latest_payment: OrderFact | None = None
    fulfilment: OrderFact | None = None
    # Refunds count in the order they were recorded (``seq``, taken under the order's lock), not
    # by their clocks: a refund recorded later never displaces one already paid out.
    refunded = Decimal(0)
    refund_outcome: dict[str, tuple[str, Money | None, str | None]] = {}
    limit = captured.amount if captured else Decimal(0)
    for f in sorted((f for f in ordered if f.kind == "refund"), key=_refund_order):
        amount = _money_or_none(f.body.get("amount"), f.body.get("currency") or currency)
        if requested is None:
            refund_outcome[f.fact_id] = ("refused", amount, "no order_details was sent for this reference_id")
        elif amount is None or (currency is not None and amount.currency != currency):
            refund_outcome[f.fact_id] = ("refused", amount, "not in the order's currency")
        elif refunded + amount.amount > limit:
            refund_outcome[f.fact_id] = ("refused", amount, "more than was captured")
        else:
            refunded += amount.amount
            refund_outcome[f.fact_id] = ("recorded", amount, _str(f.body.get("reason")))

    for f in ordered:
        status = str(f.body.get("status", ""))
        if f.kind == "requested":
            note = None if f is requested else "a later order_details for the same reference_id"
            history.append(HistoryEntry(f.occurred_at, "requested", "requested", f.fact_id, total, note))
        elif f.kind == "payment":
            amount = _money_or_none(f.body.get("amount"), f.body.get("currency") or currency)
            if amount is not None and currency is not None and amount.currency != currency:
                problems.append(f"payment {f.fact_id}: currency {amount.currency} is not the order's {currency}")
                amount = None
            if latest_payment is None or _later_payment(f, latest_payment):
                latest_payment = f
            history.append(HistoryEntry(f.occurred_at, "payment", status, f.fact_id, amount))
        elif f.kind == "fulfilment":
            if fulfilment is None or _later_fulfilment(f, fulfilment):
                fulfilment = f
            history.append(HistoryEntry(f.occurred_at, "fulfilment", status, f.fact_id, None,
                                        _str(f.body.get("description"))))
        elif f.kind == "refund":
            outcome, amount, note = refund_outcome[f.fact_id]
            history.append(HistoryEntry(f.occurred_at, "refund", outcome, f.fact_id, amount, note))

    payment_status = None
    if captured is not None:
        payment_status = "captured"
    elif latest_payment is not None:
        payment_status = str(latest_payment.body.get("status"))
    fulfilment_status = str(fulfilment.body.get("status")) if fulfilment else None
    money_currency = currency or (captured.currency if captured else None)
    state = _state(requested is not None, payment_status, fulfilment_status, captured, refunded)
    return OrderView(
        reference_id=reference_id,
        state=state,
        currency=money_currency,
        total=total,
        captured=captured,
        refunded=Money(refunded, money_currency) if money_currency else None,
        payment_status=payment_status,
        fulfilment_status=fulfilment_status,
        customer=customer,
        phone_number_id=phone,
        items=items,
        conversation_wamid=conversation,
        ctwa_clid=ctwa,
        history=tuple(history),
        problems=tuple(problems),
        contact=contact,
    )


@dataclass(frozen=True)
class RefundDecision:
    accepted: bool
    reason: str
    amount: Money | None = None


def decide_refund(order: OrderView, amount: Money | None) -> RefundDecision:
    """May ``amount`` be refunded now? ``None`` means everything still refundable."""
    if order.state == "unknown":
        return RefundDecision(False, "no order_details was sent for this reference_id")
    if order.captured is None:
        return RefundDecision(False, "nothing was captured for this order")
    left = order.refundable
    if amount is None:
        amount = Money(left, order.captured.currency)
    if amount.currency != order.captured.currency:
        return RefundDecision(False, f"the order is in {order.captured.currency}, not {amount.currency}")
    if amount.amount <= 0:
        return RefundDecision(False, "a refund must be more than zero")
    if amount.amount > left:
        return RefundDecision(False, f"only {left} {amount.currency} of the captured amount is not yet refunded")
    return RefundDecision(True, "ok", amount)


def _state(requested: bool, payment: str | None, fulfilment: str | None, captured: Money | None,
           refunded: Decimal) -> str:
    if not requested:
        return "unknown"
    if captured is not None and refunded > 0:
        return "refunded_fully" if refunded >= captured.amount else "refunded_partly"
    if fulfilment == "canceled":
        return "canceled"
    if fulfilment == "completed":
        return "completed"
    if fulfilment in ("shipped", "partially_shipped"):
        return "shipped"
    if payment == "captured":
        return "captured"
    if payment == "failed":
        return "payment_failed"
    if payment is not None:
        return "payment_pending"
    return "requested"


def _refund_order(f: OrderFact) -> tuple[int, str]:
    seq = f.body.get("seq")
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else 0, f.fact_id)


def _later_payment(a: OrderFact, b: OrderFact) -> bool:
    ka = (a.occurred_at, _PAYMENT_RANK.get(str(a.body.get("status")), -1), a.fact_id)
    kb = (b.occurred_at, _PAYMENT_RANK.get(str(b.body.get("status")), -1), b.fact_id)
    return ka > kb


def _later_fulfilment(a: OrderFact, b: OrderFact) -> bool:
    ka = (a.occurred_at, _FULFILMENT_RANK.get(str(a.body.get("status")), -1), a.fact_id)
    kb = (b.occurred_at, _FULFILMENT_RANK.get(str(b.body.get("status")), -1), b.fact_id)
    return ka > kb


def _money_or_none(obj: Any, currency: Any) -> Money | None:
    if obj is None or currency is None:
        return None
    try:
        return Money.from_meta(obj, currency, where="amount")
    except OrderError:
        return None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def contact_key(value: Any) -> str | None:
    """The key billing meters a customer's facts under (``domain.facts``): the contact, or the
    address without its ``+``."""
    return (value.lstrip("+") or None) if isinstance(value, str) else None


# --- facts from records (the JSON dicts of contract models) --------------------------------


def requested_fact(message: Mapping[str, Any]) -> tuple[str, OrderFact] | None:
    """An ``order_details`` message the business sent (an OutboundMessage record), else None.

    Returns (reference_id, fact). Raises OrderError when it is an order_details message whose
    order cannot be read (reference_id, currency or total_amount missing or malformed).
    """
    params = _interactive_params(message, "order_details")
    if params is None:
        return None
    reference_id = _str(params.get("reference_id"))
    if reference_id is None:
        raise OrderError("interactive.action.parameters.reference_id is missing")
    currency = params.get("currency")
    total = Money.from_meta(params.get("total_amount"), currency, where="interactive.action.parameters.total_amount")
    raw_order = params.get("order")
    order: Mapping[str, Any] = raw_order if isinstance(raw_order, Mapping) else {}
    items = [
        {
            "retailer_id": i.get("retailer_id"),
            "name": i.get("name"),
            "quantity": i.get("quantity"),
            "amount": Money.from_meta(i.get("amount"), currency, where=f"order.items.{n}.amount").as_meta(),
        }
        for n, i in enumerate(order.get("items") or []) if isinstance(i, Mapping)
    ]
    body = {
        "currency": total.currency,
        "total": total.as_meta(),
        "payment_configuration": _payment_configuration(params),
        "items": items,
        "customer": message.get("to") or message.get("to_user_id"),
        # whom billing meters the customer's messages under (ADR 0117): the contact ingest stamped
        "contact": contact_key(message.get("contact_id") or message.get("to") or message.get("to_user_id")),
        "phone_number_id": message.get("phone_number_id"),
        "conversation_wamid": message.get("reply_to_wamid"),
        "message_id": message.get("message_id"),
    }
    return reference_id, OrderFact(f"requested:{message.get('message_id')}", "requested",
                                   _time(message.get("occurred_at")), body)


def _payment_configuration(params: Mapping[str, Any]) -> str | None:
    """The payment configuration an order is paid through (needed for Meta's payment lookup)."""
    settings = params.get("payment_settings")
    if isinstance(settings, list):
        for s in settings:
            gateway = s.get("payment_gateway") if isinstance(s, Mapping) else None
            if isinstance(gateway, Mapping) and _str(gateway.get("configuration_name")):
                return str(gateway["configuration_name"])
    return _str(params.get("payment_configuration"))


def lookup_fact(reference_id: str, payment: Mapping[str, Any], looked_up_at: datetime) -> OrderFact:
    """What Meta's payment lookup answered (the source of truth when webhooks went missing).

    Its id is a hash of the answer, so the same answer looked up twice is one fact; its time is
    Meta's ``updated_timestamp`` when given."""
    from parley_common.contracts import body_hash

    updated = payment.get("updated_timestamp")
    at = datetime.fromtimestamp(int(updated), tz=looked_up_at.tzinfo) if isinstance(updated, int) else looked_up_at
    body = {"status": payment.get("status"), "amount": payment.get("amount"), "currency": payment.get("currency"),
            "source": "lookup", "transactions": list(payment.get("transactions") or [])}
    return OrderFact(f"lookup:{body_hash(reference_id, dict(payment))}", "payment", at, body)


def fulfilment_fact(message: Mapping[str, Any]) -> tuple[str, OrderFact] | None:
    """An ``order_status`` message the business sent, else None."""
    params = _interactive_params(message, "order_status")
    if params is None:
        return None
    reference_id = _str(params.get("reference_id"))
    order = params.get("order")
    if reference_id is None or not isinstance(order, Mapping) or not _str(order.get("status")):
        raise OrderError("interactive.action.parameters needs reference_id and order.status")
    body = {"status": order["status"], "description": order.get("description"),
            "message_id": message.get("message_id")}
    return reference_id, OrderFact(f"fulfilment:{message.get('message_id')}", "fulfilment",
                                   _time(message.get("occurred_at")), body)


def payment_fact(update: Mapping[str, Any]) -> tuple[str, OrderFact]:
    """A PaymentUpdate record (wa.commerce, kind payment)."""
    reference_id = _str(update.get("reference_id"))
    if reference_id is None:
        raise OrderError("payment update has no reference_id")
    transactions = update.get("transactions") or []
    body = {
        "status": update.get("status"),
        "amount": update.get("amount"),
        "currency": update.get("currency"),
        "customer": update.get("recipient_id") or update.get("recipient_user_id"),
        "phone_number_id": update.get("phone_number_id"),
        "transactions": [
            {k: t.get(k) for k in ("id", "type", "status", "amount", "currency", "method", "error", "refunds")}
            for t in transactions if isinstance(t, Mapping)
        ],
    }
    return reference_id, OrderFact(str(update["event_id"]), "payment", _time(update.get("occurred_at")), body)


def refund_fact(refund_id: str, amount: Money, at: datetime, reason: str | None, seq: int) -> OrderFact:
    """A refund recorded through Parley; ``seq`` is how many refunds the order had before it."""
    return OrderFact(f"refund:{refund_id}", "refund", at,
                     {"amount": amount.as_meta(), "currency": amount.currency, "reason": reason, "seq": seq})


def _interactive_params(message: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    if message.get("type") != "interactive":
        return None
    content = message.get("content")
    if not isinstance(content, Mapping) or content.get("type") != kind:
        return None
    action = content.get("action")
    params = action.get("parameters") if isinstance(action, Mapping) else None
    if not isinstance(params, Mapping):
        raise OrderError(f"{kind}: interactive.action.parameters is missing")
    return params


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            t = None
        if t is not None and t.tzinfo is not None:
            return t
    raise OrderError(f"occurred_at {value!r} is not an ISO 8601 time with a zone")


# --- telling the customer ------------------------------------------------------------------


def refund_notice(order: OrderView, refunded: Money) -> dict[str, Any]:
    """The ``order_status`` interactive object that tells the customer about a refund.

    A full refund cancels the order; a partial one keeps its fulfilment status (``processing``
    when none was sent). The text names the amount only.
    """
    full = order.state == "refunded_fully"
    status = "canceled" if full else (order.fulfilment_status or "processing")
    if status not in FULFILMENT_STATUSES:
        status = "processing"
    text = f"Refund of {refunded.amount} {refunded.currency} issued" + (" in full." if full else ".")
    return {
        "type": "order_status",
        "body": {"text": text},
        "action": {"name": "review_order", "parameters": {
            "reference_id": order.reference_id,
            "order": {"status": status, "description": text},
        }},
    }
