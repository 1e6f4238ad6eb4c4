"""Meta's side of in-chat payments (a test double): after an ``order_details`` message is
accepted, the customer pays (or does not), and payment updates arrive as ``statuses[]`` with
``"type": "payment"``: ``pending``, then ``captured`` for most and ``failed`` for some (the
``payment_*`` knobs of the behaviour). A refund recorded through the control API arrives as a
further update whose transaction lists it under ``refunds``.

The shapes follow Meta's payments pages (India's payment gateways, Brazil, Singapore): the
business's ``reference_id``, the amount as ``{value, offset}`` with the currency, and the
transaction (id, gateway type, status, method, error, refunds).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .auth import AccessTokens, unknown_object
from .clock import SimClock
from .config import Behaviour, PhoneNumberConfig
from .errors import GraphError

# Posts a payment update from a business number after a delay (the simulator's status webhooks).
PostStatus = Callable[[PhoneNumberConfig, float, dict[str, Any]], None]


@dataclass
class SimulatedPayment:
    reference_id: str
    phone_number_id: str
    wamid: str  # the order_details message it pays for
    recipient: str
    currency: str
    amount: dict[str, int]
    gateway: str
    accepted_at: float
    outcome: str = "pending"  # pending | captured | failed
    settled_at: float | None = None  # when the outcome happened (its webhook may be lost)
    transaction_id: str = ""
    refunds: list[dict[str, Any]] = field(default_factory=list)

    def refundable(self) -> int:
        """What is left to refund, in units of the payment's offset."""
        refunded: int = sum(int(r["amount"]["value"]) for r in self.refunds)
        return self.amount["value"] - refunded


def order_details_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """The order_details parameters of an accepted send body, else None."""
    interactive = body.get("interactive")
    if not isinstance(interactive, dict) or interactive.get("type") != "order_details":
        return None
    action = interactive.get("action")
    params = action.get("parameters") if isinstance(action, dict) else None
    return params if isinstance(params, dict) else None


def new_payment(params: dict[str, Any], *, phone_number_id: str, wamid: str, recipient: str, now: float,
                rng: random.Random) -> SimulatedPayment:
    settings = params.get("payment_settings")
    gateway = "razorpay"
    if isinstance(settings, list) and settings and isinstance(settings[0], dict):
        pg = settings[0].get("payment_gateway")
        if isinstance(pg, dict) and isinstance(pg.get("type"), str):
            gateway = pg["type"]
    total = params.get("total_amount") or {}
    return SimulatedPayment(
        reference_id=str(params.get("reference_id")), phone_number_id=phone_number_id, wamid=wamid,
        recipient=recipient, currency=str(params.get("currency", "INR")),
        amount={"value": int(total.get("value", 0)), "offset": int(total.get("offset", 100))},
        gateway=gateway, accepted_at=now, transaction_id=f"pay_{rng.getrandbits(48):012x}")


def decide_outcome(rng: random.Random, capture_ratio: float, fail_ratio: float) -> str:
    roll = rng.random()
    if roll < capture_ratio:
        return "captured"
    if roll < capture_ratio + fail_ratio:
        return "failed"
    return "pending"  # the customer never paid


def payment_status(p: SimulatedPayment, status: str, offset_s: float) -> dict[str, Any]:
    """One ``statuses[]`` object of type payment, as Meta posts it."""
    ts = int(p.accepted_at + offset_s)
    tx_status = {"captured": "success", "failed": "failed"}.get(status, "pending")
    transaction: dict[str, Any] = {
        "id": p.transaction_id, "type": p.gateway, "status": tx_status,
        "created_timestamp": int(p.accepted_at), "updated_timestamp": ts,
        "amount": dict(p.amount), "currency": p.currency, "method": {"type": "upi"},
    }
    if status == "failed":
        transaction["error"] = {"code": "payment_declined", "reason": "The payment was declined"}
    if p.refunds:
        transaction["refunds"] = [dict(r) for r in p.refunds]
    obj: dict[str, Any] = {
        "id": p.wamid, "type": "payment", "status": status, "timestamp": str(ts),
        "payment": {"reference_id": p.reference_id, "amount": dict(p.amount), "currency": p.currency,
                    "transaction": transaction},
    }
    if p.recipient.split(".")[0].isalpha():
        obj["recipient_user_id"] = p.recipient
    else:
        obj["recipient_id"] = p.recipient
    return obj


def add_refund(p: SimulatedPayment, value: int | None, now: float, rng: random.Random) -> dict[str, Any]:
    """Record a refund of ``value`` (all that is left when None); raises ValueError when it
    cannot be refunded (not captured, or more than what is left)."""
    if p.outcome != "captured":
        raise ValueError(f"payment {p.reference_id} is {p.outcome}, not captured")
    value = p.refundable() if value is None else value
    if value <= 0 or value > p.refundable():
        raise ValueError(f"refund of {value} exceeds what is left ({p.refundable()})")
    refund = {"id": f"rfnd_{rng.getrandbits(48):012x}", "amount": {"value": value, "offset": p.amount["offset"]},
              "currency": p.currency, "speed_processed": "normal", "status": "success",
              "created_timestamp": int(now), "updated_timestamp": int(now)}
    p.refunds.append(refund)
    return refund


def lookup_entry(p: SimulatedPayment, now: float) -> dict[str, Any]:
    """One payment as Meta's lookup API answers it (the outcome once it has happened)."""
    status = p.outcome if p.settled_at is not None and now >= p.settled_at else "pending"
    settled = status != "pending" and p.settled_at is not None
    obj = payment_status(p, status, (p.settled_at - p.accepted_at) if settled and p.settled_at else 0.0)
    return {"reference_id": p.reference_id, "status": status, "amount": dict(p.amount), "currency": p.currency,
            "created_timestamp": int(p.accepted_at), "updated_timestamp": int(obj["timestamp"]),
            "transactions": [obj["payment"]["transaction"]]}


class PaymentGateway:
    """The payments of accepted ``order_details`` messages: each is paid (or not) after the
    behaviour's delays and reported by payment updates; Meta's payment lookup answers from here
    whether or not those webhooks arrived; refunds through the control API are reported too."""

    def __init__(self, *, behaviour: Behaviour, rng: random.Random, clock: SimClock, tokens: AccessTokens,
                 numbers: dict[str, PhoneNumberConfig], stats: Counter[str], post: PostStatus) -> None:
        self.behaviour = behaviour  # the simulator's, changed in place by the control API
        self.rng = rng
        self.clock = clock
        self.tokens = tokens
        self.numbers = numbers
        self.stats = stats
        self._post = post
        self.by_reference: dict[tuple[str, str], SimulatedPayment] = {}

    def all(self) -> list[SimulatedPayment]:
        return list(self.by_reference.values())

    def clear(self) -> None:
        self.by_reference.clear()

    def plan(self, number: PhoneNumberConfig, wamid: str, recipient: str, accepted_at: float,
             order: dict[str, Any]) -> None:
        """The customer's payment of an accepted order_details message: pending, then an outcome."""
        b = self.behaviour
        p = new_payment(order, phone_number_id=number.id, wamid=wamid, recipient=recipient, now=accepted_at,
                        rng=self.rng)
        self.by_reference[(number.id, p.reference_id)] = p
        pending_s = b.payment_pending_delay_ms / 1000
        self._schedule(number, pending_s, payment_status(p, "pending", pending_s))
        p.outcome = decide_outcome(self.rng, b.payment_capture_ratio, b.payment_fail_ratio)
        if p.outcome != "pending":
            done_s = pending_s + b.payment_outcome_delay_ms / 1000
            p.settled_at = p.accepted_at + done_s
            if b.payment_webhook_loss_ratio and self.rng.random() < b.payment_webhook_loss_ratio:
                self.stats["payment_webhook_lost"] += 1
            else:
                self._schedule(number, done_s, payment_status(p, p.outcome, done_s))

    def lookup(self, phone_number_id: str, configuration: str, reference_id: str,
               authorization: str | None) -> dict[str, Any]:
        """Meta's payment lookup (``GET /{phone_number_id}/payments/{configuration}/{reference_id}``):
        the source of truth, whether or not its webhooks arrived."""
        number = self.numbers.get(phone_number_id)
        if number is None:
            raise unknown_object(phone_number_id)
        self.tokens.check(authorization, (number.id, number.waba_id))
        p = self.by_reference.get((phone_number_id, reference_id))
        if p is None:
            raise GraphError(100, f"no payment with reference_id {reference_id}")
        return {"payments": [lookup_entry(p, self.clock.now())]}

    def refund(self, phone_number_id: str, reference_id: str, value: int | None) -> dict[str, Any]:
        """A refund through the gateway: recorded on the payment, reported by a payment update."""
        p = self.by_reference.get((phone_number_id, reference_id))
        number = self.numbers.get(phone_number_id)
        if p is None or number is None:
            raise KeyError(f"no payment {reference_id!r} on number {phone_number_id}")
        now = self.clock.now()
        refund = add_refund(p, value, now, self.rng)
        self._schedule(number, 0.0, payment_status(p, "captured", now - p.accepted_at))
        return refund

    def _schedule(self, number: PhoneNumberConfig, delay_s: float, status: dict[str, Any]) -> None:
        self.stats[f"payment_{status['status']}"] += 1
        self._post(number, delay_s, status)
