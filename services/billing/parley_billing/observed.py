"""Billing's month so far, per tenant, on its metrics: the list amount of billable messages, the
billable messages without a rate (unpriced), and the messages where Meta's pricing disagrees with
Parley's (the reconciliation's ``disagree``). Read from the ledger every minute, one tenant at a
time through the (tenant_id, month) index, in each tenant's own time zone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from parley_common.tenancy.models import Tenant
from prometheus_client import CollectorRegistry, Gauge

log = logging.getLogger("parley.billing.observed")

_AUTH = "CASE WHEN {c} LIKE 'authentication%' THEN replace({c}, '_', '-') ELSE {c} END"
MONTH_SUMMARY = f"""
SELECT currency,
       coalesce(sum(amount) FILTER (WHERE billable), 0)::float8 AS amount,
       count(*) AS messages,
       count(*) FILTER (WHERE billable AND amount IS NULL) AS unpriced,
       count(*) FILTER (WHERE (meta_billable IS NOT NULL OR meta_type IS NOT NULL OR meta_category IS NOT NULL)
                          AND (billable, type, {_AUTH.format(c="category")}) IS DISTINCT FROM
                              (coalesce(meta_billable, billable), meta_type, {_AUTH.format(c="meta_category")})
                       ) AS disagree
FROM billing.ledger WHERE tenant_id = $1 AND month = $2
GROUP BY currency
"""


class MonthGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.amount = Gauge("parley_billing_month_amount", "List amount of billable messages this month",
                            ["tenant", "currency"], registry=registry)
        self.messages = Gauge("parley_billing_month_messages", "Ledger rows (delivered messages) this month",
                              ["tenant"], registry=registry)
        self.unpriced = Gauge("parley_billing_month_unpriced", "Billable messages this month without a rate",
                              ["tenant"], registry=registry)
        self.disagree = Gauge("parley_billing_month_meta_disagreements",
                              "Messages this month whose pricing by Meta differs from Parley's", ["tenant"],
                              registry=registry)

    async def refresh(self, pool: asyncpg.Pool, tenants: Iterable[Tenant], now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        for tenant in tenants:
            try:
                tz = ZoneInfo(tenant.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                tz = ZoneInfo("UTC")
            month = now.astimezone(tz).strftime("%Y-%m")
            rows = await pool.fetch(MONTH_SUMMARY, tenant.tenant_id, month)
            tid = tenant.tenant_id
            for r in rows:
                self.amount.labels(tid, r["currency"]).set(r["amount"])
            self.messages.labels(tid).set(sum(r["messages"] for r in rows))
            self.unpriced.labels(tid).set(sum(r["unpriced"] for r in rows))
            self.disagree.labels(tid).set(sum(r["disagree"] for r in rows))

    async def watch(self, pool: Callable[[], asyncpg.Pool], tenants: Callable[[], Iterable[Tenant]],
                    interval_s: float = 60.0, housekeeping: Callable[[], Awaitable[Any]] | None = None) -> None:
        while True:
            try:
                await self.refresh(pool(), tenants())
                if housekeeping is not None:
                    await housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not read the month's ledger summary", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(interval_s)


def start_watching(gauges: MonthGauges, pool: Callable[[], asyncpg.Pool],
                   tenants: Callable[[], Iterable[Tenant]], tasks: list[asyncio.Task[None]],
                   interval_s: float = 60.0, housekeeping: Callable[[], Awaitable[Any]] | None = None) -> None:
    """The month's gauges every ``interval_s``, and ``housekeeping`` (pruning old span links) after each."""
    tasks.append(asyncio.create_task(gauges.watch(pool, tenants, interval_s, housekeeping)))


async def stop_watching(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
