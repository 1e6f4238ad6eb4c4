"""Invoices, adjustments and reconciliation as pure functions of priced messages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from parley_billing.domain.engine import BUSINESS_AGENT, PER_TOKEN_NOTE, ZERO, PricedMessage

LineKey = tuple[str, str, str, str, str]  # pricing_model, market, category, type, currency


@dataclass(frozen=True)
class InvoiceLine:
    for_month: str
    pricing_model: str
    market: str
    category: str
    type: str
    currency: str
    messages: int
    billable: int
    unpriced: int
    amount: Decimal

    @property
    def key(self) -> LineKey:
        return (self.pricing_model, self.market, self.category, self.type, self.currency)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["amount"] = str(self.amount)
        if self.category == BUSINESS_AGENT and self.billable:
            d["note"] = PER_TOKEN_NOTE  # Meta invoices these by tokens; no per-message amount here
        return d


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of YYYY-MM in the tenant's time zone."""
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=tz)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=tz)
    return start, end


def month_is_closed(month: str, tz: ZoneInfo, now: datetime, grace: timedelta) -> bool:
    return now >= month_bounds(month, tz)[1] + grace


def invoice_lines(for_month: str, priced: Iterable[PricedMessage]) -> list[InvoiceLine]:
    acc: dict[LineKey, list[Any]] = defaultdict(lambda: [0, 0, 0, ZERO])
    for p in priced:
        a = acc[(p.pricing_model, p.market, p.category, p.type, p.currency)]
        a[0] += 1
        a[1] += p.billable
        a[2] += p.unpriced
        a[3] += p.amount or ZERO
    return [InvoiceLine(for_month, *k, int(v[0]), int(v[1]), int(v[2]), v[3]) for k, v in sorted(acc.items())]


def adjustment_lines(for_month: str, current: Iterable[InvoiceLine], already_invoiced: Iterable[InvoiceLine]
                     ) -> list[InvoiceLine]:
    """What changed in a finalised month since it was invoiced: current minus everything invoiced
    for it so far (its own invoice and earlier adjustments). Zero lines are left out."""
    acc: dict[LineKey, list[Any]] = defaultdict(lambda: [0, 0, 0, ZERO])
    for line, sign in [(x, 1) for x in current] + [(x, -1) for x in already_invoiced]:
        a = acc[line.key]
        a[0] += sign * line.messages
        a[1] += sign * line.billable
        a[2] += sign * line.unpriced
        a[3] += sign * line.amount
    return [InvoiceLine(for_month, *k, v[0], v[1], v[2], v[3]) for k, v in sorted(acc.items())
            if v[0] or v[1] or v[2] or v[3]]


def invoice_total(lines: Iterable[InvoiceLine]) -> dict[str, str]:
    totals: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for line in lines:
        totals[line.currency] += line.amount
    return {cur: str(v) for cur, v in sorted(totals.items())}


def _norm_category(c: str | None) -> str | None:
    return c.replace("_", "-") if c and c.startswith("authentication") else c


def _meta_category(c: str | None) -> str | None:
    c = _norm_category(c)
    return BUSINESS_AGENT if c in ("meta_business_agent", "meta-business-agent") else c


def _disagreement(ours: tuple[Any, ...], theirs: tuple[Any, ...]) -> str:
    """Why Parley's (billable, type, category) differs from Meta's, in finance's words."""
    if ours[2] != theirs[2]:
        return "category differs"
    if ours[0] != theirs[0]:
        return "Parley charges, Meta does not" if ours[0] else "Meta charges, Parley does not"
    return "free type differs"


def reconcile(priced: Iterable[PricedMessage]) -> dict[str, Any]:
    """Parley's (billable, type, category) against Meta's pricing object for every message (every
    category, Meta Business Agent and charged service replies included); counts and Parley's
    amounts by category and by reason, and the disagreements grouped."""
    total = agree = missing = 0
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, ZERO])
    reasons: dict[str, list[Any]] = defaultdict(lambda: [0, ZERO, 0])
    categories: dict[tuple[str, bool], list[Any]] = defaultdict(lambda: [0, ZERO, 0, 0, 0])
    for p in priced:
        total += 1
        amount = p.amount or ZERO
        c = categories[(p.category, p.billable)]
        c[0] += 1
        c[1] += amount
        c[2] += p.unpriced
        c[3] += p.per_token
        m = p.meta
        if m is None or (m.type is None and m.category is None and m.billable is None):
            missing += 1
            reason = "meta pricing missing"
            key: tuple[Any, ...] = (p.billable, p.type, p.category, None, None, None, reason)
        else:
            ours = (p.billable, p.type, _norm_category(p.category))
            theirs = (m.billable if m.billable is not None else p.billable, m.type, _meta_category(m.category))
            if theirs[2] == "referral_conversion" and p.type == "free_entry_point":
                theirs = (theirs[0], theirs[1], ours[2])  # Meta names the window, Parley the message
            if ours == theirs:
                agree += 1
                c[4] += 1
                reason = PER_TOKEN_NOTE if p.per_token else ("agrees, no rate in the card" if p.unpriced
                                                             else "agrees")
                r = reasons[reason]
                r[0] += 1
                r[1] += amount
                r[2] += p.unpriced
                continue
            reason = _disagreement(ours, theirs)
            key = (*ours, m.billable, m.type, _meta_category(m.category), "differs", reason)
        if len(key) == 7:
            key = (*key, reason)
        g = groups[key]
        g[0] += 1
        g[1] += amount
        r = reasons[reason]
        r[0] += 1
        r[1] += amount
        r[2] += p.unpriced
    return {
        "messages": total, "agree": agree, "meta_missing": missing, "disagree": total - agree - missing,
        "by_reason": [{"reason": k, "messages": v[0], "parley_amount": str(v[1]), "unpriced": v[2]}
                      for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1][0], kv[0]))],
        "by_category": [{"category": k[0], "billable": k[1], "messages": v[0], "parley_amount": str(v[1]),
                         "unpriced": v[2], "per_token": v[3], "agree": v[4],
                         **({"note": PER_TOKEN_NOTE} if v[3] else {})}
                        for k, v in sorted(categories.items())],
        "differences": [
            {"parley": {"billable": k[0], "type": k[1], "category": k[2]},
             "meta": {"billable": k[3], "type": k[4], "category": k[5]}, "kind": k[6], "reason": k[7],
             "messages": v[0], "parley_amount": str(v[1])}
            for k, v in sorted(groups.items(), key=lambda kv: (-kv[1][0], str(kv[0])))],
    }


def usage_groups(priced: Iterable[PricedMessage], invoiced: Iterable[PricedMessage]) -> list[dict[str, Any]]:
    """Usage by market, category, type, model and currency: list amounts from ``priced`` (the
    ledger) and what will be invoiced from ``invoiced`` (the same messages with volume tiers and
    free tiers applied), matched by wamid."""
    invoiced_amount = {p.wamid: p for p in invoiced}
    acc: dict[tuple[str, ...], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, ZERO, ZERO, 0])
    for p in priced:
        q = invoiced_amount.get(p.wamid, p)
        key = (q.market, q.category, q.type, q.pricing_model, q.currency, q.rules)
        a = acc[key]
        a[0] += 1
        a[1] += q.billable
        a[2] += q.unpriced
        a[3] += q.per_token
        a[4] += p.amount or ZERO
        a[5] += q.amount or ZERO
    out = []
    for k, v in sorted(acc.items()):
        row: dict[str, Any] = {"market": k[0], "category": k[1], "type": k[2], "pricing_model": k[3],
                               "currency": k[4], "rules": k[5], "messages": v[0], "billable": v[1],
                               "unpriced": v[2], "per_token": v[3], "list_amount": str(v[4]), "amount": str(v[5])}
        if v[3]:
            row["note"] = PER_TOKEN_NOTE
        out.append(row)
    return out
