"""The limits Meta sets on a business and the sender shares between its replicas: the
portfolio's messaging limit (unique customers reached in 24 hours, docs/adr/0115) and each
number's throughput as Meta last reported it (docs/adr/0118)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import asyncpg
from parley_common.db import AnyConnection

from parley_sender.contact_merges import kept_contacts
from parley_sender.domain.governor import MessagingLimit


class LimitTables:
    """``sender.portfolios``, ``sender.reached`` and ``sender.number_throughput``."""

    pool: asyncpg.Pool

    async def reserve_reach(
        self, tenant_id: str, limit: int, wanted: Sequence[tuple[str, str]], now: datetime
    ) -> set[str]:
        """Places in the portfolio's messaging limit for ``(message_id, customer)`` pairs, taken in
        order under the portfolio's row lock (every replica counts the same rows); returns the
        message ids granted. A new customer's place is held by its requests until one is accepted
        (:meth:`record_reached`) or all are released (:meth:`release_reach`)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO sender.portfolios VALUES ($1) ON CONFLICT DO NOTHING", tenant_id)
            await conn.execute("SELECT 1 FROM sender.portfolios WHERE tenant_id = $1 FOR UPDATE", tenant_id)
            rows = await conn.fetch(
                "SELECT customer_id, reached_at FROM sender.reached WHERE tenant_id = $1 AND reached_at > $2",
                tenant_id,
                now - timedelta(hours=24),
            )
            counted = MessagingLimit(limit, reached={r["customer_id"]: r["reached_at"].timestamp() for r in rows})
            # under the lock every fold takes: a customer folded into another counts as the kept one
            kept = await kept_contacts(conn, tenant_id, [c for _, c in wanted])
            wanted = [(mid, kept.get(c, c)) for mid, c in wanted]
            granted: list[tuple[str, str, datetime, str]] = []
            at = now.timestamp()
            for message_id, customer in wanted:
                if counted.reserve(customer, at):
                    granted.append((tenant_id, customer, now, message_id))
            # A customer counted already is kept 24 hours from now (even if this send then fails:
            # the count errs on the safe side); a row older than the window is taken afresh.
            await conn.executemany(
                """INSERT INTO sender.reached AS r (tenant_id, customer_id, reached_at, confirmed, pending)
                   VALUES ($1, $2, $3, false, ARRAY[$4::text])
                   ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
                     confirmed = r.confirmed AND r.reached_at > $3::timestamptz - interval '24 hours',
                     pending = CASE
                       WHEN r.reached_at <= $3::timestamptz - interval '24 hours' THEN EXCLUDED.pending
                       WHEN r.confirmed THEN r.pending
                       ELSE array_append(r.pending, $4::text) END,
                     reached_at = GREATEST(r.reached_at, EXCLUDED.reached_at)""",
                granted,
            )
        return {g[3] for g in granted}

    async def set_reported_limit(self, tenant_id: str, limit: int, at: datetime) -> None:
        """Meta reported the portfolio's messaging limit (-1: unlimited); an older report never
        replaces a newer one."""
        await self.pool.execute(
            """INSERT INTO sender.portfolios AS p (tenant_id, reported_limit, reported_at) VALUES ($1, $2, $3)
               ON CONFLICT (tenant_id) DO UPDATE SET reported_limit = EXCLUDED.reported_limit,
                 reported_at = EXCLUDED.reported_at
               WHERE p.reported_at IS NULL OR p.reported_at <= EXCLUDED.reported_at""",
            tenant_id,
            limit,
            at,
        )

    async def reported_limits(self, tenant_ids: Sequence[str]) -> dict[str, int]:
        """The limits Meta reported for these portfolios (-1: unlimited); absent when none."""
        rows = await self.pool.fetch(
            "SELECT tenant_id, reported_limit FROM sender.portfolios WHERE tenant_id = ANY($1)"
            " AND reported_limit IS NOT NULL",
            list(tenant_ids),
        )
        return {r["tenant_id"]: r["reported_limit"] for r in rows}

    async def set_throughput(self, phone_number_id: str, mps: int, at: datetime) -> None:
        """Meta changed a number's throughput; an older report never replaces a newer one."""
        await self.pool.execute(
            """INSERT INTO sender.number_throughput AS t VALUES ($1, $2, $3)
               ON CONFLICT (phone_number_id) DO UPDATE SET mps = EXCLUDED.mps, reported_at = EXCLUDED.reported_at
               WHERE t.reported_at <= EXCLUDED.reported_at""",
            phone_number_id,
            mps,
            at,
        )

    async def reported_throughputs(self) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT phone_number_id, mps FROM sender.number_throughput")
        return {r["phone_number_id"]: r["mps"] for r in rows}

    async def release_reach(self, items: Sequence[tuple[str, str, str]]) -> None:
        """``(tenant_id, customer, message_id)`` of sends refused or failed before leaving: the
        place they held goes when no other request holds it and none was accepted."""
        if not items:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            items = await _kept(conn, items)
            await conn.executemany(
                """DELETE FROM sender.reached WHERE tenant_id = $1 AND customer_id = $2 AND NOT confirmed
                     AND $3::text = ANY(pending) AND cardinality(array_remove(pending, $3::text)) = 0""",
                items,
            )
            await conn.executemany(
                """UPDATE sender.reached SET pending = array_remove(pending, $3::text)
                   WHERE tenant_id = $1 AND customer_id = $2 AND $3::text = ANY(pending)""",
                items,
            )

    async def record_reached(self, items: Sequence[tuple[str, str, datetime]]) -> None:
        """Accepted business-initiated sends: their customers are reached (the place is final)."""
        if not items:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            items = await _kept(conn, items)
            await conn.executemany(
                """INSERT INTO sender.reached AS r (tenant_id, customer_id, reached_at) VALUES ($1,$2,$3)
                   ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
                     reached_at = GREATEST(r.reached_at, EXCLUDED.reached_at), confirmed = true, pending = '{}'""",
                items,
            )

    async def kept_contacts(self, tenant_id: str, keys: Sequence[str]) -> dict[str, str]:
        """The kept contact of each of ``keys`` folded into another (ADR 0117)."""
        async with self.pool.acquire() as conn:
            return await kept_contacts(conn, tenant_id, keys)


_T = TypeVar("_T", bound=tuple[Any, ...])


async def _kept(conn: AnyConnection, items: Sequence[_T]) -> list[_T]:
    """``items`` (tenant, customer, ...) with each customer folded into another replaced by the
    kept one, read while holding the portfolio rows in share mode so no fold runs in between."""
    tenants = sorted({i[0] for i in items})
    await conn.execute("SELECT 1 FROM sender.portfolios WHERE tenant_id = ANY($1::text[]) ORDER BY tenant_id "
                       "FOR SHARE", tenants)
    kept = {t: await kept_contacts(conn, t, [i[1] for i in items if i[0] == t]) for t in tenants}
    return [cast(_T, (i[0], kept[i[0]].get(i[1], i[1]), *i[2:])) for i in items]
