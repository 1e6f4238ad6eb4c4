"""Meta's pricing rules as data: one row per change, keyed by the UTC instant it took effect.

The engine asks :func:`rules_at` which row was in force at a message's delivery and decides
*charged or free, and why* from that row's fields; no date appears anywhere else in the pricing
code. Re-rating September 2026 therefore gives free service replies and re-rating November gives
charged ones. The next change of Meta's rules is one new row here plus its tests
(docs/adr/0080-billing-dated-pricing-rules.md).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class PricingRules:
    """What Meta charges for, from ``effective_from`` (inclusive) until the next row."""

    name: str
    effective_from: datetime
    model: str  # "CBP": per 24 h conversation; "PMP": per delivered message
    # A free-form reply inside the customer-service window (CBP: a service conversation).
    service_charged: bool
    # PMP: a utility template delivered inside an open customer-service window.
    utility_in_window_charged: bool
    # Messages of the new non-template category powered by Meta Business Agent, charged per token.
    business_agent_charged: bool
    # CBP: conversations per month and account that are free, and whether any category counts
    # (CBP v1) or only service conversations (from 2023-06-01).
    free_tier_conversations: int = 0
    free_tier_any_category: bool = False
    # Replies within 24 h to a click-to-WhatsApp ad or Page button open 72 h where every message is
    # free (CBP: a free referral_conversion conversation). Unchanged by every row so far.
    free_entry_point: bool = True
    source: str = ""


M = "https://developers.facebook.com/documentation/business-messaging/whatsapp/pricing"

RULES: tuple[PricingRules, ...] = (
    PricingRules("CBP-v1", datetime.min.replace(tzinfo=UTC), "CBP", service_charged=True,
                 utility_in_window_charged=True, business_agent_charged=False, free_tier_conversations=1000,
                 free_tier_any_category=True,
                 source="conversation-based pricing, user/business-initiated; 1,000 free conversations a month"),
    PricingRules("CBP-2023-06", datetime(2023, 6, 1, tzinfo=UTC), "CBP", service_charged=True,
                 utility_in_window_charged=True, business_agent_charged=False, free_tier_conversations=1000,
                 source=M + "/conversation-based-pricing (categories; 1,000 free service conversations)"),
    PricingRules("CBP-2024-11", datetime(2024, 11, 1, tzinfo=UTC), "CBP", service_charged=False,
                 utility_in_window_charged=True, business_agent_charged=False,
                 source=M + "/conversation-based-pricing (service conversations free and unlimited)"),
    PricingRules("PMP-2025-07", datetime(2025, 7, 1, tzinfo=UTC), "PMP", service_charged=False,
                 utility_in_window_charged=False, business_agent_charged=False,
                 source=M + " (per-message pricing; utility templates in the window free)"),
    PricingRules("PMP-2026-08", datetime(2026, 8, 1, tzinfo=UTC), "PMP", service_charged=False,
                 utility_in_window_charged=False, business_agent_charged=True,
                 source=M + " (Meta Business Agent messages charged per token)"),
    PricingRules("PMP-2026-10", datetime(2026, 10, 1, tzinfo=UTC), "PMP", service_charged=True,
                 utility_in_window_charged=True, business_agent_charged=True,
                 source=M + " (service messages and utility templates in the window charged)"),
)

_STARTS = [r.effective_from for r in RULES]
assert _STARTS == sorted(_STARTS), "pricing rule rows must be in effective order"

# The first instant of per-message pricing (the store re-prices whole timelines before it, where
# CBP conversations chain).
PMP_START = next(r.effective_from for r in RULES if r.model == "PMP")


def rules_at(t: datetime) -> PricingRules:
    """The row in force at ``t`` (an aware datetime)."""
    return RULES[bisect.bisect_right(_STARTS, t) - 1]


def rules_named(name: str) -> PricingRules:
    for r in RULES:
        if r.name == name:
            return r
    raise KeyError(name)
