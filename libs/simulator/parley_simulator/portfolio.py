"""Meta's account-level limits and reports, as the simulator plays them.

- The **portfolio messaging limit** (since 2025-10-07): unique customers a business portfolio
  reaches with business-initiated templates (outside the customer's service window) in a rolling
  24 hours, shared by every number of the portfolio. A template to a new customer past the limit
  is refused with 131048 ("restrictions on how many messages can be sent from this phone
  number"); a customer reached already in the last 24 hours always fits.
- **Numbers shared with the WhatsApp Business app** (coexistence) send at most 20 msg/s, and an
  upgrade does not lift them.
- **Reports by webhook**: ``phone_number_quality_update`` (FLAGGED, UNFLAGGED, THROUGHPUT_UPGRADE,
  ...) and ``business_capability_update`` (``max_daily_conversations_per_business``).
- **The Marketing Messages API** (``POST /{phone_number_id}/marketing_messages``) takes the body
  of a template send and answers like ``/messages``, for marketing templates only.

The 24 hours run on the simulated clock (the calendar a test moves), unlike throughput.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .config import PhoneNumberConfig, PortfolioConfig, WabaConfig
from .webhooks import WebhookDispatcher

DAY_S = 24 * 3600.0
COEXISTENCE_MPS = 20
UPGRADED_MPS = 1000
MESSAGING_LIMIT_CODE = 131048
MARKETING_MESSAGES = "marketing_messages"
WABA_OBJECT = "whatsapp_business_account"


class PortfolioReach:
    """Customers each portfolio reached with business-initiated templates, with when."""

    def __init__(self) -> None:
        self._reached: dict[str, dict[str, float]] = {}

    def allows(self, portfolio: str, customer: str, limit: int | None, now: float) -> bool:
        if limit is None or limit < 0:  # unlimited (Meta reports -1)
            return True
        reached = self._reached.setdefault(portfolio, {})
        for c in [c for c, at in reached.items() if at <= now - DAY_S]:
            del reached[c]
        return customer in reached or len(reached) < limit

    def refusal(self, portfolio: str, customer: str, limit: int | None, now: float) -> str | None:
        """Why a business-initiated template to ``customer`` is refused (None: it fits)."""
        return None if self.allows(portfolio, customer, limit, now) else limit_reached_details(limit or 0)

    def record(self, portfolio: str, customer: str, now: float) -> None:
        self._reached.setdefault(portfolio, {})[customer] = now

    def count(self, portfolio: str, now: float) -> int:
        return sum(1 for at in self._reached.get(portfolio, {}).values() if at > now - DAY_S)

    def reset(self) -> None:
        self._reached.clear()


class AccountReports:
    """Meta's changes to numbers and portfolios, made and reported by webhook: a number's quality
    event (a throughput upgrade lifts it), a portfolio's new messaging limit."""

    def __init__(self, portfolios: list[PortfolioConfig], *, numbers: dict[str, PhoneNumberConfig],
                 wabas: dict[str, WabaConfig], dispatcher: WebhookDispatcher, now: Callable[[], float]) -> None:
        self.limits: dict[str, int | None] = {p.id: p.messaging_limit for p in portfolios}
        self.numbers = numbers
        self.wabas = wabas
        self.dispatcher = dispatcher
        self.now = now

    def limit_of(self, portfolio: str) -> int | None:
        return self.limits.get(portfolio)

    def report_number_event(self, phone_number_id: str, event: str) -> None:
        """A ``phone_number_quality_update`` (FLAGGED, UNFLAGGED, THROUGHPUT_UPGRADE, ...); an
        upgrade lifts the number to 1,000 msg/s (a coexistence number stays at 20)."""
        number = self.numbers[phone_number_id]
        if event == "THROUGHPUT_UPGRADE":
            number.throughput = UPGRADED_MPS
        waba = self.wabas[number.waba_id]
        limit = self.limits.get(waba.portfolio)
        self.dispatcher.post_payload(waba.app_id, number_quality_webhook(
            number, waba, event, self.now(), messaging_limit=-1 if limit is None else limit), kind="quality")

    def set_portfolio_limit(self, portfolio: str, messaging_limit: int) -> None:
        """Meta moved a portfolio to a new messaging limit (-1: unlimited) and reports it."""
        self.limits[portfolio] = None if messaging_limit < 0 else messaging_limit
        wabas = [w for w in self.wabas.values() if w.portfolio == portfolio]
        for app_id in {w.app_id for w in wabas}:
            self.dispatcher.post_payload(app_id, capability_webhook(
                [w for w in wabas if w.app_id == app_id], messaging_limit, self.now()), kind="capability")


def limit_reached_details(limit: int) -> str:
    return (
        "Message failed to send because there are restrictions on how many messages can be sent from this "
        f"phone number: the business portfolio reached its messaging limit of {limit} unique customers in 24 hours."
    )


def throughput_of(number: PhoneNumberConfig) -> int:
    return min(number.throughput, COEXISTENCE_MPS) if number.coexistence else number.throughput


def number_quality_webhook(
    number: PhoneNumberConfig, waba: WabaConfig, event: str, now: float, *, messaging_limit: int | None
) -> dict[str, Any]:
    """Meta's ``phone_number_quality_update`` for one number."""
    value: dict[str, Any] = {"display_phone_number": number.display_phone_number, "event": event}
    if messaging_limit is not None:
        value["max_daily_conversations_per_business"] = messaging_limit
    return {
        "object": WABA_OBJECT,
        "entry": [{"id": waba.id, "time": int(now),
                   "changes": [{"value": value, "field": "phone_number_quality_update"}]}],
    }


def capability_webhook(wabas: Iterable[WabaConfig], messaging_limit: int, now: float) -> dict[str, Any]:
    """Meta's ``business_capability_update`` for a portfolio's new messaging limit, one entry per WABA."""
    return {
        "object": WABA_OBJECT,
        "entry": [
            {"id": w.id, "time": int(now), "changes": [{
                "value": {"max_daily_conversations_per_business": messaging_limit},
                "field": "business_capability_update",
            }]}
            for w in wabas
        ],
    }
