"""PostgreSQL adapter of billing (schema ``billing`` only).

Metering is set-based: a batch of records becomes one upsert of facts (unnest arrays, ``ON CONFLICT``
keeping the earliest delivery), which returns only the facts that changed; the timelines those
facts belong to are then re-priced by the pure engine and written to the ledger with one upsert
that only touches rows whose price changed. All in one transaction per batch, under advisory
locks per business number, so concurrent batches (three topics, several replicas) never price a
timeline from a stale view. See docs/adr/0050-billing-metering-and-pricing.md.

A fact stamped with a contact that was folded into another (``ContactMerged``, ADR 0117) is
stored under the kept contact: every insert maps its customers through ``billing.contact_aliases``
in the statement that inserts them, under a shared lock of the fact's tenant that a fold takes
exclusively (see :meth:`Metering.fold_contacts`).
"""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from parley_common.db import AnyConnection
from parley_common.tenancy.directory import TenantDirectory

from parley_billing.domain.contacts import fold
from parley_billing.domain.engine import (
    PMP_LOOKBACK,
    Business,
    InboundFact,
    MetaPricing,
    OutboundFact,
    PricedMessage,
    Timeline,
    month_of,
    price_timeline,
)
from parley_billing.domain.facts import InboundRecord, SendFact, StatusFact, collapse_statuses
from parley_billing.domain.markets import is_bsuid
from parley_billing.domain.rates import RATE_CARD_COLUMNS, RateBook, RateRow, TierBook, TierRow
from parley_billing.domain.rules import PMP_START
from parley_billing.domain.tiers import TierUpdate

MIGRATIONS = Path(__file__).parent / "migrations"
LOCK_CLASS = 0x5042  # "PB": Parley billing
LOCK_BUCKETS = 1 << 12
MERGE_LOCK_CLASS = 0x5043  # a tenant's contact merges (exclusive) against its fact inserts (shared)
KNOWN_CONTACTS_MAX = 500_000
NEG_INF = datetime.min.replace(tzinfo=UTC)
# Re-pricing after a fact at time f: messages delivered from f on are re-priced (no PMP price
# depends on a later fact than its own delivery: windows open at an inbound message or at a
# delivery, and cover what comes after), reading facts from f - PMP_LOOKBACK on (a PMP price looks
# back at most PMP_LOOKBACK). Under CBP conversations chain, so the whole timeline is re-priced.


@dataclass(frozen=True)
class TenantInfo:
    tenant_id: str | None
    country: str | None
    tz: ZoneInfo


UNKNOWN_TENANT = TenantInfo(None, None, ZoneInfo("UTC"))
TenantLookup = Callable[[str | None, str], TenantInfo]


def tenant_lookup(directory: Callable[[], TenantDirectory]) -> TenantLookup:
    """The business country and time zone of a fact's own tenant (bound where the event entered
    Parley; the handlers dead-letter facts ``TenantDirectory.resolve`` refuses), never the number's
    owner looked up again (ADR 0100). A tenant gone from the registry meters as unknown, in UTC."""

    def lookup(tenant_id: str | None, phone_number_id: str) -> TenantInfo:
        tenant = directory().tenants.get(tenant_id or "")
        if tenant is None:
            return TenantInfo(tenant_id, None, UNKNOWN_TENANT.tz)
        try:
            tz = ZoneInfo(tenant.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            tz = UNKNOWN_TENANT.tz
        return TenantInfo(tenant.tenant_id, tenant.business_country, tz)

    return lookup


@lru_cache(maxsize=4096)
def _bucket(phone_number_id: str) -> int:
    return zlib.crc32(phone_number_id.encode()) % LOCK_BUCKETS


def _tenant_key(tenant_id: str) -> int:
    return zlib.crc32(tenant_id.encode()) & 0x7FFFFFFF


async def _lock_numbers(conn: AnyConnection, numbers: Iterable[str], tenants: Iterable[str | None] = ()) -> None:
    """Advisory locks on the numbers' buckets, and the batch temp tables, in one round trip. A
    transaction that inserts facts names their ``tenants`` too: it then holds their merge locks
    shared (before the buckets, as a fold takes them: one order everywhere, no deadlocks)."""
    buckets = sorted({_bucket(n) for n in numbers})  # one order everywhere: no deadlocks
    merges = sorted({_tenant_key(t) for t in tenants if t})
    if buckets:
        # Only integers are formatted into the statement (a multi-statement string cannot take parameters).
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS _deliveries_in ({DELIVERIES_IN}) ON COMMIT DELETE ROWS;"
            f"CREATE TEMP TABLE IF NOT EXISTS _ledger_in ({LEDGER_IN}) ON COMMIT DELETE ROWS;"
            # Short statements on indexes: parallel workers only cost here (and take the other cores).
            "SET LOCAL max_parallel_workers_per_gather = 0;"
            + (f"SELECT pg_advisory_xact_lock_shared({int(MERGE_LOCK_CLASS)}, t)"
               f" FROM unnest('{{{','.join(str(int(t)) for t in merges)}}}'::int[]) AS t;" if merges else "")
            + f"SELECT pg_advisory_xact_lock({int(LOCK_CLASS)}, b)"
            f" FROM unnest('{{{','.join(str(int(b)) for b in buckets)}}}'::int[]) AS b")


Key = tuple[str, str]  # (phone_number_id, customer)


class RateCache:
    """The rate book and tier table, reloaded when an import changed them."""

    def __init__(self) -> None:
        self.stamp: Any = None
        self.rates = RateBook([])
        self.tiers = TierBook([])

    async def refresh(self, conn: AnyConnection) -> None:
        stamp = await conn.fetchrow(
            "SELECT (SELECT max(imported_at) FROM billing.rate_cards) r, (SELECT count(*) FROM billing.rate_cards) rn,"
            " (SELECT max(imported_at) FROM billing.tiers) t, (SELECT count(*) FROM billing.tiers) tn")
        key = tuple(stamp) if stamp is not None else ()
        if key == self.stamp:
            return
        rows = await conn.fetch("SELECT * FROM billing.rate_cards")
        self.rates = RateBook([RateRow(r["effective_from"], r["market"], r["currency"],
                                       {c: r[c] for c in RATE_CARD_COLUMNS[3:]}) for r in rows])
        tiers = await conn.fetch("SELECT * FROM billing.tiers")
        self.tiers = TierBook([TierRow(r["effective_from"], r["market"], r["category"], r["from_volume"],
                                       r["to_volume"], r["rate"]) for r in tiers])
        self.stamp = key

    async def refresh_from_pool(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            await self.refresh(conn)


class Metering:
    """Records facts and keeps the ledger priced; one instance per process."""

    def __init__(self, pool: asyncpg.Pool, tenants: TenantLookup, *, parallel: int = 2,
                 rates: RateCache | None = None) -> None:
        self.pool = pool
        self.tenants = tenants
        self.rates = rates or RateCache()  # shared with the HTTP API's invoices and estimates
        # A status batch is split by business-number lock bucket into this many transactions on as
        # many connections, run concurrently: while PostgreSQL works on one part, this process
        # prices another. The parts lock disjoint buckets, so they never wait on each other.
        self.parallel = max(1, parallel)
        # BSUIDs whose number is already in billing.contacts (committed): statuses carry both on
        # every message, so without this every batch would upsert thousands of known pairs.
        self._known_contacts: dict[str, None] = {}

    def _unknown_contacts(self, facts: Iterable[StatusFact | InboundRecord]) -> dict[str, str]:
        return {f.user_id: f.phone or f.customer for f in facts
                if f.user_id and f.user_id not in self._known_contacts}

    def _remember_contacts(self, contacts: dict[str, str]) -> None:
        """Called after the transaction that stored ``contacts`` committed."""
        for bsuid in contacts:
            self._known_contacts[bsuid] = None
        while len(self._known_contacts) > KNOWN_CONTACTS_MAX:
            del self._known_contacts[next(iter(self._known_contacts))]


    # --- facts in ------------------------------------------------------------------------------
    async def record_statuses(self, facts: Sequence[StatusFact]) -> int:
        """Returns how many ledger rows were written or changed. Every part is committed when this
        returns; if one fails, the exception propagates and the batch comes again (idempotent)."""
        facts = collapse_statuses(facts)
        if not facts:
            return 0
        if self.parallel == 1 or len(facts) < 500:
            return await self._record_statuses(facts)
        parts: list[list[StatusFact]] = [[] for _ in range(self.parallel)]
        for f in facts:
            parts[_bucket(f.phone_number_id) % self.parallel].append(f)
        done = await asyncio.gather(*(self._record_statuses(p) for p in parts if p), return_exceptions=True)
        for r in done:
            if isinstance(r, BaseException):
                raise r
        return sum(r for r in done if isinstance(r, int))

    async def _record_statuses(self, facts: list[StatusFact]) -> int:
        contacts = self._unknown_contacts(facts)
        async with self.pool.acquire() as conn, conn.transaction():
            await _lock_numbers(conn, (f.phone_number_id for f in facts), {f.tenant_id for f in facts})
            await _copy_in(conn, "_deliveries_in", facts)  # facts are rows in column order
            changed = await conn.fetch(
                f"""INSERT INTO billing.deliveries AS d
                   SELECT f.wamid, f.tenant_id, f.phone_number_id, f.waba_id, coalesce(ca.kept, f.customer),
                          f.delivered_at, f.meta_rank, f.meta_billable, f.meta_pricing_model, f.meta_type,
                          f.meta_category FROM _deliveries_in f {KEPT_CONTACT}
                   ON CONFLICT (wamid) DO UPDATE SET
                     delivered_at = LEAST(d.delivered_at, excluded.delivered_at),
                     tenant_id = coalesce(d.tenant_id, excluded.tenant_id),
                     waba_id = coalesce(d.waba_id, excluded.waba_id),
                     meta_rank = CASE WHEN excluded.meta_rank < coalesce(d.meta_rank, 32767)
                                      THEN excluded.meta_rank ELSE d.meta_rank END,
                     meta_billable = CASE WHEN excluded.meta_rank < coalesce(d.meta_rank, 32767)
                                      THEN excluded.meta_billable ELSE d.meta_billable END,
                     meta_pricing_model = CASE WHEN excluded.meta_rank < coalesce(d.meta_rank, 32767)
                                      THEN excluded.meta_pricing_model ELSE d.meta_pricing_model END,
                     meta_type = CASE WHEN excluded.meta_rank < coalesce(d.meta_rank, 32767)
                                      THEN excluded.meta_type ELSE d.meta_type END,
                     meta_category = CASE WHEN excluded.meta_rank < coalesce(d.meta_rank, 32767)
                                      THEN excluded.meta_category ELSE d.meta_category END
                   WHERE excluded.delivered_at < d.delivered_at
                      OR (d.delivered_at IS NULL AND excluded.delivered_at IS NOT NULL)
                      OR excluded.meta_rank < coalesce(d.meta_rank, 32767)
                      OR (d.tenant_id IS NULL AND excluded.tenant_id IS NOT NULL)
                   RETURNING phone_number_id, customer, delivered_at""")
            affected: dict[Key, datetime] = {}
            for r in changed:
                if r["delivered_at"] is not None:
                    _touch(affected, (r["phone_number_id"], r["customer"]), r["delivered_at"])
            await _learn_contacts(conn, contacts, affected)
            written = await self._reprice(conn, affected)
        self._remember_contacts(contacts)
        return written

    async def record_sends(self, facts: Sequence[SendFact]) -> int:
        if not facts:
            return 0
        unique = list({f.wamid: f for f in facts}.values())
        async with self.pool.acquire() as conn, conn.transaction():
            await _lock_numbers(conn, (f.phone_number_id for f in unique), {f.tenant_id for f in unique})
            inserted = await conn.fetch(
                f"""INSERT INTO billing.sends
                   SELECT f.wamid, f.tenant_id, f.phone_number_id, coalesce(ca.kept, f.customer), f.is_template,
                          f.category, f.free_window, f.sent_at
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::text[],
                               $8::timestamptz[])
                        AS f(wamid, tenant_id, phone_number_id, customer, is_template, category, free_window, sent_at)
                   {KEPT_CONTACT}
                   ON CONFLICT (wamid) DO NOTHING RETURNING wamid""",
                [f.wamid for f in unique], [f.tenant_id for f in unique], [f.phone_number_id for f in unique],
                [f.customer for f in unique], [f.is_template for f in unique], [f.category for f in unique],
                [f.free_window for f in unique], [f.sent_at for f in unique])
            if not inserted:
                return 0
            # Only a send whose message was already delivered changes a price.
            delivered = await conn.fetch(
                "SELECT phone_number_id, customer, delivered_at FROM billing.deliveries"
                " WHERE wamid = ANY($1::text[]) AND delivered_at IS NOT NULL", [r["wamid"] for r in inserted])
            affected: dict[Key, datetime] = {}
            for r in delivered:
                _touch(affected, (r["phone_number_id"], r["customer"]), r["delivered_at"])
            return await self._reprice(conn, affected)

    async def record_inbound(self, facts: Sequence[InboundRecord]) -> int:
        if not facts:
            return 0
        unique = list({f.wamid: f for f in facts}.values())
        contacts = self._unknown_contacts(unique)
        async with self.pool.acquire() as conn, conn.transaction():
            await _lock_numbers(conn, (f.phone_number_id for f in unique), {f.tenant_id for f in unique})
            inserted = await conn.fetch(
                f"""INSERT INTO billing.inbound
                   SELECT f.wamid, f.tenant_id, f.phone_number_id, coalesce(ca.kept, f.customer), f.received_at,
                          f.referral, f.ctwa_clid
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::bool[],
                               $7::text[]) AS f(wamid, tenant_id, phone_number_id, customer, received_at, referral,
                                                ctwa_clid)
                   {KEPT_CONTACT}
                   ON CONFLICT (wamid) DO NOTHING RETURNING phone_number_id, customer, received_at""",
                [f.wamid for f in unique], [f.tenant_id for f in unique], [f.phone_number_id for f in unique],
                [f.customer for f in unique], [f.at for f in unique], [f.referral for f in unique],
                [f.ctwa_clid for f in unique])
            affected: dict[Key, datetime] = {}
            for r in inserted:
                _touch(affected, (r["phone_number_id"], r["customer"]), r["received_at"])
            await _learn_contacts(conn, contacts, affected)
            written = await self._reprice(conn, affected)
        self._remember_contacts(contacts)
        return written

    async def record_tier_updates(self, updates: Sequence[TierUpdate]) -> int:
        """Keep Meta's volume-tier events (idempotent on their event id); returns how many were new."""
        if not updates:
            return 0
        async with self.pool.acquire() as conn:
            inserted = await conn.fetch(
                """INSERT INTO billing.tier_updates
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                        $7::bigint[], $8::bigint[], $9::timestamptz[], $10::jsonb[])
                   ON CONFLICT (event_id) DO NOTHING RETURNING event_id""",
                [u.event_id for u in updates], [u.tenant_id for u in updates], [u.waba_id for u in updates],
                [u.month for u in updates], [u.region for u in updates], [u.category for u in updates],
                [u.tier_from for u in updates], [u.tier_to for u in updates], [u.updated_at for u in updates],
                [u.raw for u in updates])
        return len(inserted)

    async def fold_contacts(self, tenant_id: str, kept: str, absorbed: Sequence[str]) -> int:
        """Two contacts found to be one person (``ContactMerged``; ADR 0117): the facts kept under the
        absorbed keys move to the kept contact and its timelines are re-priced from the earliest
        moved fact (a reply under one identifier may fall in a window opened under the other); the
        absorbed keys become aliases of the kept contact (``domain.contacts.fold``: a chain ends on
        its last contact, a repeat absorbs nothing), so a fact stamped with one that is metered
        later lands on the kept contact too. Returns the ledger rows written.

        Why no fact slips between: the fold holds the tenant's merge lock exclusively from before
        its first read, and every fact insert holds it shared while it maps and inserts (one
        transaction), so on any replica a fact either committed before the fold read the tables
        (and the fold's UPDATE moves it) or is inserted after the fold committed (and reads its
        aliases). The fold's number locks alone would not do: it cannot know on which numbers a
        fact still in flight will land."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", MERGE_LOCK_CLASS, _tenant_key(tenant_id))
            known = {r["absorbed"]: r["kept"] for r in await conn.fetch(
                "SELECT absorbed, kept FROM billing.contact_aliases"
                " WHERE tenant_id = $1 AND absorbed = ANY($2::text[])",
                tenant_id, [kept, *absorbed])}
            merge = fold(kept, absorbed, known)
            if not merge.absorbed:
                return 0
            gone = list(merge.absorbed)
            await conn.execute(  # keep the aliases flat: those of a contact absorbed now follow it
                "UPDATE billing.contact_aliases SET kept = $2, folded_at = now()"
                " WHERE tenant_id = $1 AND kept = ANY($3::text[])", tenant_id, merge.kept, gone)
            await conn.execute(
                "INSERT INTO billing.contact_aliases (tenant_id, absorbed, kept)"
                " SELECT $1, a, $2 FROM unnest($3::text[]) a"
                " ON CONFLICT (tenant_id, absorbed) DO UPDATE SET kept = excluded.kept, folded_at = now()",
                tenant_id, merge.kept, gone)
            # the send records too (pricing reads them by wamid), so that all of a person's facts have one key
            await conn.execute(
                "UPDATE billing.sends SET customer = $3 WHERE tenant_id = $1 AND customer = ANY($2::text[])",
                tenant_id, gone, merge.kept)
            numbers = [r["phone_number_id"] for r in await conn.fetch(
                "SELECT phone_number_id FROM billing.deliveries WHERE tenant_id = $1 AND customer = ANY($2::text[])"
                " UNION SELECT phone_number_id FROM billing.inbound WHERE tenant_id = $1"
                " AND customer = ANY($2::text[])", tenant_id, gone)]
            if not numbers:
                return 0
            await _lock_numbers(conn, numbers)
            moved = list(await conn.fetch(
                "UPDATE billing.deliveries SET customer = $3 WHERE tenant_id = $1 AND customer = ANY($2::text[])"
                " RETURNING phone_number_id, delivered_at AS at", tenant_id, gone, merge.kept))
            moved += await conn.fetch(
                "UPDATE billing.inbound SET customer = $3 WHERE tenant_id = $1 AND customer = ANY($2::text[])"
                " RETURNING phone_number_id, received_at AS at", tenant_id, gone, merge.kept)
            affected: dict[Key, datetime] = {}
            for r in moved:
                if r["at"] is not None:
                    _touch(affected, (r["phone_number_id"], merge.kept), r["at"])
            return await self._reprice(conn, affected)

    async def reprice_since(self, since: datetime) -> int:
        """Re-price every timeline with a delivery on or after ``since`` (after a rate import)."""
        total = 0
        async with self.pool.acquire() as conn:
            keys = await conn.fetch(
                "SELECT phone_number_id, customer, min(delivered_at) AS t FROM billing.deliveries"
                " WHERE delivered_at >= $1 GROUP BY 1, 2", since)
        for i in range(0, len(keys), 2000):
            chunk = keys[i:i + 2000]
            async with self.pool.acquire() as conn, conn.transaction():
                await _lock_numbers(conn, (r["phone_number_id"] for r in chunk))
                total += await self._reprice(conn, {(r["phone_number_id"], r["customer"]): r["t"] for r in chunk})
        return total

    # --- pricing -------------------------------------------------------------------------------
    async def _reprice(self, conn: AnyConnection, affected: dict[Key, datetime]) -> int:
        if not affected:
            return 0
        await self.rates.refresh(conn)
        keys = list(affected)
        write_from = [affected[k] for k in keys]
        # CBP conversations chain from the start of a timeline: read it all when CBP is involved.
        read_from = [NEG_INF if t < PMP_START + PMP_LOOKBACK else t - PMP_LOOKBACK for t in write_from]
        write_from = [NEG_INF if r == NEG_INF else w for r, w in zip(read_from, write_from, strict=True)]
        facts = await conn.fetch(TIMELINE_FACTS, [k[0] for k in keys], [k[1] for k in keys], read_from, write_from)
        by_key_out: dict[Key, list[OutboundFact]] = defaultdict(list)
        by_key_in: dict[Key, list[InboundFact]] = defaultdict(list)
        tenant_of: dict[Key, str | None] = {}
        account_of: dict[Key, str] = {}
        for (kind, pnid, customer, wamid, at, tenant_id, waba_id, billable, model, type_, category,
             is_template, send_category, send_tenant) in facts:
            key = (pnid, customer)
            if kind:
                if kind == 1:
                    meta = MetaPricing(billable, model, type_, category) \
                        if model or category or type_ or billable is not None else None
                    by_key_out[key].append(OutboundFact(wamid, at, is_template, send_category, meta))
                else:  # context: only its delivery time is used
                    by_key_out[key].append(OutboundFact(wamid, at))
                if key not in tenant_of or tenant_of[key] is None:
                    tenant_of[key] = tenant_id or send_tenant
                if waba_id and key not in account_of:
                    account_of[key] = waba_id
            else:
                by_key_in[key].append(InboundFact(at, billable))  # billable carries the referral flag
                tenant_of.setdefault(key, tenant_id)
        rows: list[tuple[Any, ...]] = []
        book = self.rates.rates
        tenants: dict[tuple[str | None, str], TenantInfo] = {}  # per batch: few tenants, many timelines
        businesses: dict[str | None, Business] = {}
        bsuids = [k[1] for k in keys if is_bsuid(k[1])]
        phones: dict[str, str] = {}
        if bsuids:
            phones = {r["bsuid"]: r["phone"] for r in await conn.fetch(
                "SELECT bsuid, phone FROM billing.contacts WHERE bsuid = ANY($1::text[])", bsuids)}
        for key, since in zip(keys, write_from, strict=True):
            outbound_facts = by_key_out.get(key)
            if not outbound_facts:
                continue
            pnid = key[0]
            tenant_key = (tenant_of.get(key), pnid)
            tenant = tenants.get(tenant_key)
            if tenant is None:
                tenant = tenants[tenant_key] = self.tenants(*tenant_key)
            business = businesses.get(tenant.country)
            if business is None:
                business = businesses[tenant.country] = Business(tenant.country, book)
            timeline = Timeline(key[1], by_key_in.get(key, ()), outbound_facts, account_of.get(key) or pnid,
                                phones.get(key[1]))
            for p in price_timeline(timeline, business, since=since):
                rows.append(_ledger_row(p, pnid, tenant))
        if not rows:
            return 0
        await _copy_in(conn, "_ledger_in", rows)
        result = await conn.fetch(LEDGER_UPSERT)
        return len(result)


# The facts of the timelines to re-price, in one round trip:
#  1: outbound messages to write (delivered from write_from on), with their send record;
#  2: context outbound messages (read_from ≤ delivered < write_from), only when a referral in that
#     span could have opened a free entry point window still open at write_from (their time
#     is all a later PMP price needs);
#  0: inbound messages from read_from on (windows, referrals).
# LATERAL … OFFSET 0 keeps each part an index lookup per timeline (the planner has no statistics
# for the key arrays and would otherwise sort or hash whole tables).
TIMELINE_FACTS = """
SELECT 1, k.pnid, k.customer, d.wamid, d.delivered_at, d.tenant_id, d.waba_id, d.meta_billable,
       d.meta_pricing_model, d.meta_type, d.meta_category, s.is_template, s.category, s.tenant_id
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS k(pnid, customer, read_from, write_from)
CROSS JOIN LATERAL (SELECT * FROM billing.deliveries d WHERE d.phone_number_id = k.pnid
                    AND d.customer = k.customer AND d.delivered_at >= k.write_from OFFSET 0) d
LEFT JOIN LATERAL (SELECT s.is_template, s.category, s.tenant_id FROM billing.sends s WHERE s.wamid = d.wamid) s
       ON true
UNION ALL
SELECT 2, k.pnid, k.customer, d.wamid, d.delivered_at, d.tenant_id, d.waba_id, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS k(pnid, customer, read_from, write_from)
CROSS JOIN LATERAL (SELECT d.wamid, d.delivered_at, d.tenant_id, d.waba_id FROM billing.deliveries d
                    WHERE d.phone_number_id = k.pnid AND d.customer = k.customer
                      AND d.delivered_at >= k.read_from AND d.delivered_at < k.write_from OFFSET 0) d
WHERE k.read_from < k.write_from AND EXISTS (
    SELECT FROM billing.inbound r WHERE r.phone_number_id = k.pnid AND r.customer = k.customer
       AND r.received_at >= k.read_from AND r.received_at < k.write_from AND r.referral)
UNION ALL
SELECT 0, k.pnid, k.customer, NULL, i.received_at, i.tenant_id, NULL, i.referral,
       NULL, NULL, NULL, NULL, NULL, NULL
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS k(pnid, customer, read_from, write_from)
CROSS JOIN LATERAL (SELECT * FROM billing.inbound i WHERE i.phone_number_id = k.pnid
                    AND i.customer = k.customer AND i.received_at >= k.read_from OFFSET 0) i
"""

# The kept contact of a fact ``f``'s customer that was folded into another (ADR 0117): one index
# probe per fact, in the statement that inserts it (LATERAL … OFFSET 0: no hash of the whole table).
KEPT_CONTACT = ("LEFT JOIN LATERAL (SELECT ca.kept FROM billing.contact_aliases ca"
                " WHERE ca.tenant_id = f.tenant_id AND ca.absorbed = f.customer OFFSET 0) ca ON true")

# Batches reach PostgreSQL by binary COPY into per-connection temp tables (much cheaper than
# array parameters), then one INSERT … SELECT … ON CONFLICT.
DELIVERIES_IN = ("wamid text, tenant_id text, phone_number_id text, waba_id text, customer text, "
                 "delivered_at timestamptz, meta_rank int2, meta_billable bool, meta_pricing_model text, "
                 "meta_type text, meta_category text, user_id text")
LEDGER_IN = ("wamid text, tenant_id text, phone_number_id text, account text, delivered_at timestamptz, "
             "month text, pricing_model text, category text, type text, billable bool, market text, "
             "country text, currency text, amount numeric, conversation_id text, opens_conversation bool, "
             "meta_billable bool, meta_pricing_model text, meta_type text, meta_category text, rules text, "
             "market_source text")


async def _copy_in(conn: AnyConnection, table: str, records: Sequence[tuple[Any, ...]]) -> None:
    """Binary COPY into a temp table that :func:`_lock_numbers` created in this transaction's session."""
    await conn.copy_records_to_table(table, records=records)


async def _learn_contacts(conn: AnyConnection, contacts: dict[str, str], affected: dict[Key, datetime]) -> None:
    """Remember BSUID → number; a newly learned one re-prices that BSUID's timelines (its market
    may change from the BSUID's prefix to the number's), whatever order the records came in."""
    if not contacts:
        return
    learned = await conn.fetch(
        "INSERT INTO billing.contacts SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT (bsuid) DO NOTHING RETURNING bsuid", list(contacts), list(contacts.values()))
    if not learned:
        return
    for r in await conn.fetch(
            "SELECT phone_number_id, customer, min(delivered_at) AS t FROM billing.deliveries"
            " WHERE customer = ANY($1::text[]) AND delivered_at IS NOT NULL GROUP BY 1, 2",
            [r["bsuid"] for r in learned]):
        _touch(affected, (r["phone_number_id"], r["customer"]), r["t"])


def _touch(affected: dict[Key, datetime], key: Key, t: datetime) -> None:
    prev = affected.get(key)
    if prev is None or t < prev:
        affected[key] = t


def _ledger_row(p: PricedMessage, phone_number_id: str, tenant: TenantInfo) -> tuple[Any, ...]:
    m = p.meta
    return (p.wamid, tenant.tenant_id, phone_number_id, p.account, p.delivered_at, month_of(p.delivered_at, tenant.tz),
            p.pricing_model, p.category, p.type, p.billable, p.market, p.country, p.currency, p.amount,
            p.conversation_id, p.opens_conversation, m.billable if m else None, m.pricing_model if m else None,
            m.type if m else None, m.category if m else None, p.rules, p.market_source)


LEDGER_UPSERT = """
INSERT INTO billing.ledger AS l (wamid, tenant_id, phone_number_id, account, delivered_at, month, pricing_model,
    category, type, billable, market, country, currency, amount, conversation_id, opens_conversation,
    meta_billable, meta_pricing_model, meta_type, meta_category, rules, market_source)
SELECT * FROM _ledger_in
ON CONFLICT (wamid) DO UPDATE SET
    tenant_id = excluded.tenant_id, phone_number_id = excluded.phone_number_id, account = excluded.account,
    delivered_at = excluded.delivered_at, month = excluded.month, pricing_model = excluded.pricing_model,
    category = excluded.category, type = excluded.type, billable = excluded.billable, market = excluded.market,
    country = excluded.country, currency = excluded.currency, amount = excluded.amount,
    conversation_id = excluded.conversation_id, opens_conversation = excluded.opens_conversation,
    meta_billable = excluded.meta_billable, meta_pricing_model = excluded.meta_pricing_model,
    meta_type = excluded.meta_type, meta_category = excluded.meta_category,
    rules = excluded.rules, market_source = excluded.market_source,
    priced_at = now(), revision = l.revision + 1
WHERE (l.tenant_id, l.account, l.delivered_at, l.month, l.pricing_model, l.category, l.type, l.billable, l.market,
       l.country, l.currency, l.amount, l.conversation_id, l.opens_conversation, l.meta_billable,
       l.meta_pricing_model, l.meta_type, l.meta_category, l.rules, l.market_source)
  IS DISTINCT FROM
      (excluded.tenant_id, excluded.account, excluded.delivered_at, excluded.month, excluded.pricing_model,
       excluded.category, excluded.type, excluded.billable, excluded.market, excluded.country, excluded.currency,
       excluded.amount, excluded.conversation_id, excluded.opens_conversation, excluded.meta_billable,
       excluded.meta_pricing_model, excluded.meta_type, excluded.meta_category, excluded.rules,
       excluded.market_source)
RETURNING wamid
"""


# --- reads ---------------------------------------------------------------------------------------

LEDGER_COLUMNS = ("wamid, delivered_at, pricing_model, category, type, billable, market, country, currency, "
                  "amount, account, conversation_id, opens_conversation, "
                  "meta_billable, meta_pricing_model, meta_type, meta_category, rules, market_source")


def priced_from_row(r: asyncpg.Record) -> PricedMessage:
    meta = None
    if r["meta_pricing_model"] or r["meta_category"] or r["meta_type"] or r["meta_billable"] is not None:
        meta = MetaPricing(r["meta_billable"], r["meta_pricing_model"], r["meta_type"], r["meta_category"])
    return PricedMessage(r["wamid"], r["delivered_at"], r["pricing_model"], r["category"], r["type"], r["billable"],
                         r["market"], r["country"], r["currency"], r["amount"], r["account"],
                         r["conversation_id"], r["opens_conversation"], meta, r["rules"], r["market_source"])


async def month_ledger(conn: AnyConnection | asyncpg.Pool, tenant_id: str, month: str) -> list[PricedMessage]:
    rows = await conn.fetch(f"SELECT {LEDGER_COLUMNS} FROM billing.ledger WHERE tenant_id = $1 AND month = $2",
                            tenant_id, month)
    return [priced_from_row(r) for r in rows]


async def months_ledger(conn: AnyConnection | asyncpg.Pool, tenant_id: str, months: list[str]
                        ) -> list[tuple[str, PricedMessage]]:
    rows = await conn.fetch(f"SELECT month, {LEDGER_COLUMNS} FROM billing.ledger"
                            " WHERE tenant_id = $1 AND month = ANY($2::text[])", tenant_id, months)
    return [(r["month"], priced_from_row(r)) for r in rows]


async def tier_updates(conn: AnyConnection | asyncpg.Pool, tenant_id: str, month: str) -> list[TierUpdate]:
    rows = await conn.fetch(
        "SELECT event_id, tenant_id, waba_id, month, region, category, tier_from, tier_to, updated_at, raw::text"
        " FROM billing.tier_updates WHERE tenant_id = $1 AND month = $2", tenant_id, month)
    return [TierUpdate(*r) for r in rows]


async def ledger_totals(conn: AnyConnection | asyncpg.Pool) -> dict[str, Decimal | int]:
    """Whole-ledger totals (for exactness checks)."""
    r = await conn.fetchrow(
        "SELECT count(*) n, count(*) FILTER (WHERE billable) b, coalesce(sum(amount), 0) a FROM billing.ledger")
    assert r is not None  # an aggregate always returns a row
    return {"messages": r["n"], "billable": r["b"], "amount": r["a"]}


async def ledger_fingerprint(conn: AnyConnection | asyncpg.Pool) -> str:
    """md5 of every ledger row's priced content in wamid order (two runs priced alike ⇔ equal)."""
    return str(await conn.fetchval(
        """SELECT md5(coalesce(string_agg(concat_ws('|', wamid, tenant_id, month, pricing_model, category, type,
                  billable, market, currency, amount::text, conversation_id, rules, market_source),
                  E'\\n' ORDER BY wamid), ''))
           FROM billing.ledger"""))
