"""Monthly invoices and reconciliation reports of one tenant, from the ledger.

A month is finalised by an explicit action (``POST /v1/invoices/{month}/finalise`` or
``parley-billing invoice --finalise``) once it ended (in the tenant's time zone) plus a grace
period; its lines are then frozen. Reading an invoice never finalises it. Changes to a finalised month's messages
(late events) appear as adjustment lines on the next invoice that is finalised.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from parley_common.db import AnyConnection

from parley_billing.domain.engine import PricedMessage, apply_monthly_effects, month_of
from parley_billing.domain.invoice import (
    InvoiceLine,
    adjustment_lines,
    invoice_lines,
    invoice_total,
    month_is_closed,
    reconcile,
    usage_groups,
)
from parley_billing.domain.rates import TierBook
from parley_billing.domain.tiers import TierUpdate, compare_tiers
from parley_billing.store import TenantInfo, month_ledger, months_ledger, tier_updates

LINE_COLUMNS = ("for_month", "pricing_model", "market", "category", "type", "currency", "messages", "billable",
                "unpriced", "amount")


async def _current_lines(conn: AnyConnection, tenant: TenantInfo, month: str, tiers: TierBook
                         ) -> list[InvoiceLine]:
    assert tenant.tenant_id is not None
    priced = apply_monthly_effects(await month_ledger(conn, tenant.tenant_id, month), tz=tenant.tz, tiers=tiers)
    return invoice_lines(month, priced)


def _line(r: asyncpg.Record) -> InvoiceLine:
    return InvoiceLine(*(r[c] for c in LINE_COLUMNS))


async def _pending_adjustments(conn: AnyConnection, tenant: TenantInfo, before_month: str, tiers: TierBook
                               ) -> list[InvoiceLine]:
    out: list[InvoiceLine] = []
    finalised = await conn.fetch("SELECT month FROM billing.invoices WHERE tenant_id = $1 AND month < $2"
                                 " ORDER BY month", tenant.tenant_id, before_month)
    for r in finalised:
        m = r["month"]
        invoiced = [_line(x) for x in await conn.fetch(
            f"SELECT {', '.join(LINE_COLUMNS)} FROM billing.invoice_lines WHERE tenant_id = $1 AND for_month = $2",
            tenant.tenant_id, m)]
        out.extend(adjustment_lines(m, await _current_lines(conn, tenant, m, tiers), invoiced))
    return out


async def invoice(pool: asyncpg.Pool, tenant: TenantInfo, month: str, *, tiers: TierBook, now: datetime,
                  grace: timedelta, finalise: bool = False) -> dict[str, Any]:
    assert tenant.tenant_id is not None
    async with pool.acquire() as conn, conn.transaction():
        # One finaliser per tenant at a time.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('parley-billing-invoice:' || $1))",
                           tenant.tenant_id)
        finalised_at = await conn.fetchval(
            "SELECT finalised_at FROM billing.invoices WHERE tenant_id = $1 AND month = $2", tenant.tenant_id, month)
        status = "final"
        if finalised_at is None:
            lines = await _current_lines(conn, tenant, month, tiers)
            adjustments = await _pending_adjustments(conn, tenant, month, tiers)
            status = "draft"
            if finalise and month_is_closed(month, tenant.tz, now, grace):
                finalised_at = await conn.fetchval(
                    "INSERT INTO billing.invoices (tenant_id, month, finalised_at) VALUES ($1, $2, $3)"
                    " RETURNING finalised_at", tenant.tenant_id, month, now)
                await conn.executemany(
                    f"INSERT INTO billing.invoice_lines (tenant_id, month, {', '.join(LINE_COLUMNS)})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    [(tenant.tenant_id, month, *(getattr(x, c) for c in LINE_COLUMNS))
                     for x in lines + adjustments])
                status = "final"
        if status == "final":
            # A final invoice is always what was stored, so every later read is identical to this one.
            rows = await conn.fetch(
                f"SELECT {', '.join(LINE_COLUMNS)} FROM billing.invoice_lines WHERE tenant_id = $1 AND month = $2"
                " ORDER BY for_month, pricing_model, market, category, type, currency", tenant.tenant_id, month)
            all_lines = [_line(r) for r in rows]
            lines = [x for x in all_lines if x.for_month == month]
            adjustments = [x for x in all_lines if x.for_month != month]
    return {
        "tenant_id": tenant.tenant_id, "month": month, "time_zone": str(tenant.tz), "status": status,
        "finalised_at": finalised_at.isoformat() if finalised_at else None,
        "lines": [x.as_dict() for x in lines], "adjustments": [x.as_dict() for x in adjustments],
        "totals": invoice_total(lines + adjustments),
    }


def invoice_csv(doc: dict[str, Any]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["tenant_id", "month", "status", "line", *LINE_COLUMNS, "note"])
    for kind in ("lines", "adjustments"):
        for x in doc[kind]:
            w.writerow([doc["tenant_id"], doc["month"], doc["status"], "charge" if kind == "lines" else "adjustment",
                        *(x[c] for c in LINE_COLUMNS), x.get("note", "")])
    for cur, amount in doc["totals"].items():
        w.writerow([doc["tenant_id"], doc["month"], doc["status"], "total", "", "", "", "", "", cur, "", "", "",
                    amount, ""])
    return buf.getvalue()


async def reconciliation(pool: asyncpg.Pool, tenant: TenantInfo, month: str, *, tiers: TierBook) -> dict[str, Any]:
    assert tenant.tenant_id is not None
    priced = apply_monthly_effects(await month_ledger(pool, tenant.tenant_id, month), tz=tenant.tz, tiers=tiers)
    updates: list[TierUpdate] = await tier_updates(pool, tenant.tenant_id, month)
    compared = compare_tiers(updates, priced)
    return {"tenant_id": tenant.tenant_id, "month": month, **reconcile(priced),
            "volume_tiers": {"meta_updates": len(compared), "mismatches": sum(not c["agrees"] for c in compared),
                             "updates": compared}}


def _months(start: datetime, end: datetime, tz: Any) -> list[str]:
    """YYYY-MM of every month of the tenant's time zone that [start, end) touches."""
    first, last = month_of(start, tz), month_of(end - timedelta(microseconds=1), tz)
    y, m = int(first[:4]), int(first[5:])
    out = []
    while f"{y:04d}-{m:02d}" <= last:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


async def usage(pool: asyncpg.Pool, tenant: TenantInfo, start: datetime, end: datetime, *, tiers: TierBook
                ) -> list[dict[str, Any]]:
    """What will be invoiced for the messages delivered in [start, end): each month touched is
    priced whole (volume tiers and free tiers rank a message within its month), then the period's
    messages are kept."""
    assert tenant.tenant_id is not None
    by_month: dict[str, list[PricedMessage]] = defaultdict(list)
    for month, p in await months_ledger(pool, tenant.tenant_id, _months(start, end, tenant.tz)):
        by_month[month].append(p)
    invoiced: list[PricedMessage] = []
    listed: list[PricedMessage] = []
    for rows in by_month.values():
        invoiced.extend(q for q in apply_monthly_effects(rows, tz=tenant.tz, tiers=tiers)
                        if start <= q.delivered_at < end)
        listed.extend(p for p in rows if start <= p.delivered_at < end)
    return usage_groups(listed, invoiced)
