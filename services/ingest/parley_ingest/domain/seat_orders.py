"""Seats follow payments (ADR 0112): what an order event means for the seats held for the order.

Billing folds the order and publishes ``OrderEvent`` records on ``wa.orders`` (ADR 0113); ingest
owns the seats. The rule, pure:

- the order's payment was captured (whatever it did after: shipped, completed, partly refunded)
  → the order's held seats are **sold**: money moved, so the seats become the customer's, even
  when the hold ran out meanwhile, as long as nobody else has taken the seat since;
- the payment failed, the order was canceled or fully refunded → the order's **holds are
  released** (a seat already sold stays sold: returning it to sale is the business's decision);
- anything else (requested, payment pending) → nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

SeatAction = Literal["sell", "release"]

_RELEASE_STATES = ("payment_failed", "canceled", "refunded_fully")
_PAID_STATES = ("captured", "shipped", "completed", "refunded_partly")


def seat_action(event: Mapping[str, Any]) -> SeatAction | None:
    """What an ``OrderEvent`` (as JSON) does to the order's seats."""
    state = event.get("state")
    if state in _RELEASE_STATES:
        return "release"
    if state in _PAID_STATES and event.get("payment_status") == "captured":
        return "sell"
    return None
