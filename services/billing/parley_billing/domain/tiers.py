"""Meta's ``VOLUME_BASED_PRICING_TIER_UPDATE`` account events, and how they compare with Parley's
own count of charged messages per portfolio (tenant), market, category and month.

Meta sends the event (an ``account_update`` webhook) when a portfolio's charged volume of a
category in a market enters a new tier in a month, e.g. tier ``"25000001:50000000"``. Webhooks
carry no amounts; the event is the only per-tier signal Meta gives before the invoice. Parley
counts the same messages itself (the rank that :func:`apply_monthly_effects` prices tiers by), so
the two can be compared: at the time of the update Parley's count should lie inside Meta's tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from parley_billing.domain.engine import PricedMessage
from parley_billing.domain.facts import FactError

TIER_EVENT = "VOLUME_BASED_PRICING_TIER_UPDATE"


@dataclass(frozen=True, slots=True)
class TierUpdate:
    event_id: str
    tenant_id: str | None
    waba_id: str | None
    month: str  # YYYY-MM
    region: str  # Meta's name of the market, e.g. "INDIA"
    category: str  # lower case: utility | authentication | ...
    tier_from: int
    tier_to: int | None
    updated_at: datetime
    raw: str  # the account event's value as JSON text


def _pick(d: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        if d.get(n) not in (None, ""):
            return d[n]
    return None


def tier_update(record: Mapping[str, Any]) -> TierUpdate | None:
    """An ``AccountEvent`` record as a tier update; None for every other account event.

    Meta's field names are read in snake_case (its webhooks) and camelCase (as some BSPs relay them).
    """
    import orjson

    if record.get("kind") != "account_update":
        return None
    value = record.get("value") or {}
    if not isinstance(value, Mapping) or value.get("event") != TIER_EVENT:
        return None
    info = _pick(value, "volume_tier_info", "volumeTierInfo", "tier_info") or value
    if not isinstance(info, Mapping):
        raise FactError("volume tier update has no tier information")
    tier = _pick(info, "tier")
    month = _pick(info, "effective_month", "effectiveMonth")
    region = _pick(info, "region", "market")
    category = _pick(info, "pricing_category", "pricingCategory", "category")
    when = _pick(info, "tier_update_time", "tierUpdateTime")
    if not (tier and month and region and category):
        raise FactError("volume tier update lacks tier, effective_month, region or pricing_category")
    lo, _, hi = str(tier).partition(":")
    try:
        tier_from, tier_to = int(lo), (int(hi) if hi.strip() else None)
    except ValueError:
        raise FactError(f"volume tier {tier!r} is not FROM:TO") from None
    month_s = str(month)
    if len(month_s) != 7 or month_s[4] != "-" or not (month_s[:4] + month_s[5:]).isdigit():
        raise FactError(f"effective_month {month!r} is not YYYY-MM")
    try:
        at = datetime.fromtimestamp(int(when), UTC) if when is not None else \
            datetime.fromisoformat(str(record["occurred_at"]))
    except (TypeError, ValueError, KeyError, OverflowError):
        raise FactError(f"tier_update_time {when!r} is not a unix time") from None
    return TierUpdate(str(record.get("event_id") or ""), record.get("tenant_id"), record.get("waba_id"),
                      month_s, str(region), str(category).lower().replace("_", "-"), tier_from, tier_to, at,
                      orjson.dumps(value).decode())


def _same_market(region: str, market: str) -> bool:
    norm = "".join(ch for ch in region.lower() if ch.isalnum())
    return norm == "".join(ch for ch in market.lower() if ch.isalnum())


def compare_tiers(updates: Iterable[TierUpdate], month_priced: Iterable[PricedMessage]) -> list[dict[str, Any]]:
    """For each of Meta's tier updates of a month: Parley's count of charged messages of that
    market and category delivered up to the update, and whether it lies inside Meta's tier."""
    charged = [p for p in month_priced if p.billable and p.pricing_model == "PMP"]
    out = []
    for u in sorted(updates, key=lambda u: (u.updated_at, u.region, u.category)):
        mine = [p for p in charged if _same_market(u.region, p.market) and p.category == u.category]
        at_update = sum(1 for p in mine if p.delivered_at <= u.updated_at)
        inside = at_update >= u.tier_from and (u.tier_to is None or at_update <= u.tier_to)
        out.append({"month": u.month, "region": u.region, "category": u.category,
                    "meta_tier": f"{u.tier_from}:{u.tier_to or ''}", "updated_at": u.updated_at.isoformat(),
                    "parley_count_at_update": at_update, "parley_count_month": len(mine),
                    "agrees": inside,
                    "reason": None if inside else
                    ("Parley counted fewer charged messages than Meta's tier starts at" if at_update < u.tier_from
                     else "Parley counted more charged messages than Meta's tier ends at")})
    return out
