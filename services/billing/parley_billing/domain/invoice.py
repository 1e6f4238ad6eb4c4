"""Invoices, adjustments and reconciliation as pure functions of priced messages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from parley_billing.domain.engine import ZERO, PricedMessage

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
        a[2] += p.billable and p.amount is None
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


def reconcile(priced: Iterable[PricedMessage]) -> dict[str, Any]:
    """Parley's (billable, type, category) against Meta's pricing object, per message; the
    disagreements grouped with counts and Parley's amounts."""
    total = agree = missing = 0
    groups: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0, ZERO])
    for p in priced:
        total += 1
        m = p.meta
        if m is None or (m.type is None and m.category is None and m.billable is None):
            missing += 1
            key: tuple[Any, ...] = (p.billable, p.type, p.category, None, None, None, "meta pricing missing")
        else:
            ours = (p.billable, p.type, _norm_category(p.category))
            theirs = (m.billable if m.billable is not None else p.billable, m.type, _norm_category(m.category))
            if ours == theirs:
                agree += 1
                continue
            key = (*ours, m.billable, m.type, _norm_category(m.category), "differs")
        g = groups[key]
        g[0] += 1
        g[1] += p.amount or ZERO
    return {
        "messages": total, "agree": agree, "meta_missing": missing, "disagree": total - agree - missing,
        "differences": [
            {"parley": {"billable": k[0], "type": k[1], "category": k[2]},
             "meta": {"billable": k[3], "type": k[4], "category": k[5]}, "kind": k[6],
             "messages": v[0], "parley_amount": str(v[1])}
            for k, v in sorted(groups.items(), key=lambda kv: (-kv[1][0], str(kv[0])))],
    }
