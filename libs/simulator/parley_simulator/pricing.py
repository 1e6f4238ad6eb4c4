"""The ``pricing`` (and ``conversation``) objects of status webhooks, per Meta's rules on the
simulated clock's date (:data:`RULES`, one row per change of Meta's rules).

- Per-message pricing (PMP, from 2025-07-01): everything inside a 72 h free entry point is free
  (``free_entry_point``, category ``referral_conversion``); marketing and authentication are
  charged (``regular``). Free-form messages are ``service``: free (``free_customer_service``)
  until 2026-09-30, charged (``regular``) from 2026-10-01. A utility template inside the
  customer-service window is free until 2026-09-30 and charged from 2026-10-01.
  The ``conversation`` object is sent up to API v23 (one id per message) and, from v24, only
  inside a free entry point.
- Conversation-based pricing (CBP, before 2025-07-01): a conversation of a category is opened by
  a template when none of that category is open (24 h), a free-form message rides any open
  conversation or opens a ``service`` one, and a free entry point opens a 72 h
  ``referral_conversion`` conversation that closes the others. Service conversations are free
  from 2024-11-01. CBP pricing objects carry no ``type`` (it came with PMP).
"""

from __future__ import annotations

import bisect
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Rules:
    """Meta's rules from ``effective_from`` (unix seconds, UTC) until the next row."""

    effective_from: float
    model: str  # CBP | PMP
    service_charged: bool  # free-form replies (CBP: service conversations)
    utility_in_window_charged: bool  # PMP: utility templates inside the customer-service window


# Meta's dated rules as a test double of Meta sees them. Parley's billing keeps its own table
# (parley_billing.domain.rules); tests/simulator/test_pricing.py checks that both agree.
RULES: tuple[Rules, ...] = (
    Rules(float("-inf"), "CBP", service_charged=True, utility_in_window_charged=True),
    Rules(datetime(2024, 11, 1, tzinfo=UTC).timestamp(), "CBP", service_charged=False,
          utility_in_window_charged=True),
    Rules(datetime(2025, 7, 1, tzinfo=UTC).timestamp(), "PMP", service_charged=False,
          utility_in_window_charged=False),
    Rules(datetime(2026, 10, 1, tzinfo=UTC).timestamp(), "PMP", service_charged=True,
          utility_in_window_charged=True),
)
_STARTS = [r.effective_from for r in RULES]


def rules_at(now: float) -> Rules:
    return RULES[bisect.bisect_right(_STARTS, now) - 1]

CONVERSATION_S = 24 * 3600
ENTRY_POINT_CONVERSATION_S = 72 * 3600
CONVERSATION_OMITTED_FROM_VERSION = 24


@dataclass(frozen=True)
class PricedMessage:
    pricing: dict[str, Any]
    conversation: dict[str, Any] | None = None  # as on the "sent" status (with expiration)

    def conversation_for(self, status: str) -> dict[str, Any] | None:
        if self.conversation is None:
            return None
        if status == "sent":
            return dict(self.conversation)
        return {k: v for k, v in self.conversation.items() if k != "expiration_timestamp"}


@dataclass
class _Conversation:
    id: str
    category: str
    expires: float


@dataclass
class PricingEngine:
    _open: dict[tuple[str, str], list[_Conversation]] = field(default_factory=dict)

    def price(
        self,
        *,
        phone_number_id: str,
        customer: str,
        now: float,
        category: str,
        in_service_window: bool,
        free_entry_point: bool,
        api_version: int,
    ) -> PricedMessage:
        """``category``: marketing | utility | authentication (templates) or service (free-form)."""
        rules = rules_at(now)
        if rules.model == "CBP":
            return self._price_cbp(phone_number_id, customer, now, category, free_entry_point)
        if free_entry_point:
            pricing = {
                "billable": False,
                "pricing_model": "PMP",
                "type": "free_entry_point",
                "category": "referral_conversion",
            }
        elif (category == "service" and not rules.service_charged) or (
            category == "utility" and in_service_window and not rules.utility_in_window_charged
        ):
            pricing = {
                "billable": False,
                "pricing_model": "PMP",
                "type": "free_customer_service",
                "category": category,
            }
        else:
            pricing = {"billable": True, "pricing_model": "PMP", "type": "regular", "category": category}
        conversation = None
        if api_version < CONVERSATION_OMITTED_FROM_VERSION or free_entry_point:
            conversation = {"id": _conversation_id(), "origin": {"type": pricing["category"]}}
            if free_entry_point:
                conversation["expiration_timestamp"] = str(int(now + ENTRY_POINT_CONVERSATION_S))
        return PricedMessage(pricing, conversation)

    def _price_cbp(
        self, pn: str, customer: str, now: float, category: str, free_entry_point: bool
    ) -> PricedMessage:
        convs = [c for c in self._open.get((pn, customer), []) if c.expires > now]
        chosen: _Conversation | None = next((c for c in convs if c.category == "referral_conversion"), None)
        if chosen is None and free_entry_point:
            chosen = _Conversation(
                _conversation_id(), "referral_conversion", now + ENTRY_POINT_CONVERSATION_S
            )
            convs = [chosen]  # a free entry point conversation closes all others
        if chosen is None:
            if category == "service":
                chosen = convs[0] if convs else None
            else:
                chosen = next((c for c in convs if c.category == category), None)
            if chosen is None:
                chosen = _Conversation(_conversation_id(), category, now + CONVERSATION_S)
                convs.append(chosen)
        self._open[(pn, customer)] = convs
        billable = not (
            chosen.category == "referral_conversion"
            or (chosen.category == "service" and not rules_at(now).service_charged)
        )
        pricing = {"billable": billable, "pricing_model": "CBP", "category": chosen.category}
        conversation = {
            "id": chosen.id,
            "expiration_timestamp": str(int(chosen.expires)),
            "origin": {"type": chosen.category},
        }
        return PricedMessage(pricing, conversation)

    def reset(self) -> None:
        self._open.clear()


def _conversation_id() -> str:
    return secrets.token_hex(16)
