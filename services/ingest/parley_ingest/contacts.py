"""Ingest's contact book: every identifier Meta gives a customer, resolved to the tenant's contact
before the event goes to Kafka, so that every service keys the person's rules on ``contact_id``
(docs/adr/0117-contacts.md).

One transaction per webhook or send request: the identifiers it names are locked (transaction
advisory locks, in one order, so two ingest replicas resolving the same person wait for each
other instead of creating two contacts), the contacts holding them are read, the pure rules
(``domain.contacts``) decide, and the result is written. A merge is announced on Kafka
(``ContactMerged``); the absorbed keys stay in ``unannounced`` until the announcement was
acknowledged, so a webhook that failed after the merge (Kafka down, Meta retries) announces it
again.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg
from parley_common.contracts import (
    AccountEvent,
    ContactMerged,
    InboundMessage,
    MessageStatus,
    body_hash,
    utcnow,
)
from parley_common.db import AnyConnection
from parley_common.meta.webhook import NormalisedWebhook

from parley_ingest.domain.contact_events import (
    bsuid_changes,
    preference_sightings,
    sighting_of_message,
    sighting_of_status,
)
from parley_ingest.domain.contacts import BsuidChange, Contact, ContactBatch, Sighting, is_parent_bsuid


def _lock_key(tenant_id: str, identifier: str) -> int:
    digest = hashlib.blake2b(f"{tenant_id}\x1f{identifier}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass
class TenantWork:
    sightings: list[tuple[Sighting, datetime]] = field(default_factory=list)
    changes: list[tuple[BsuidChange, datetime]] = field(default_factory=list)
    inbound: list[tuple[str, Sighting]] = field(default_factory=list)  # (wamid, sighting)

    def identifiers(self) -> set[str]:
        out: set[str] = set()
        for s, _ in self.sightings:
            out.update(s.identifiers())
        for c, _ in self.changes:
            out.update(i for i in (c.old, c.new, c.phone) if i)
        return out


@dataclass(frozen=True)
class Resolved:
    """What one batch decided: the contact key of each (tenant, identifier), and the merges."""

    keys: dict[tuple[str, str], str]
    merges: list[ContactMerged]
    contacts: dict[tuple[str, str], Contact] = field(default_factory=dict)

    def key(self, tenant_id: str | None, identifier: str | None) -> str | None:
        if tenant_id is None or identifier is None:
            return None
        return self.keys.get((tenant_id, identifier))


class ContactBook:
    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool_of = pool  # the runtime's pool, opened when the service starts

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._pool_of()

    async def resolve(self, work: dict[str, TenantWork], *, phone_number_ids: dict[str, str]) -> Resolved:
        """Resolve every tenant's work in one transaction; ``phone_number_ids`` gives each tenant
        a number to key its merge announcements by."""
        keys: dict[tuple[str, str], str] = {}
        merges: list[ContactMerged] = []
        contacts: dict[tuple[str, str], Contact] = {}
        if not any(w.identifiers() for w in work.values()):
            return Resolved(keys, merges, contacts)
        async with self._pool.acquire() as conn, conn.transaction():
            locks = sorted({_lock_key(t, i) for t, w in work.items() for i in w.identifiers()})
            await conn.execute(
                "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM unnest($1::bigint[]) k ORDER BY k) s",
                locks,
            )
            for tenant_id, w in work.items():
                batch = ContactBatch(await self._known(conn, tenant_id, w.identifiers()))
                for seen, at in w.sightings:
                    batch.see(seen, at)
                for change, at in w.changes:
                    batch.change(change, at)
                await self._write(conn, tenant_id, batch)
                inbound = [(wamid, batch.key_of(s.identifiers()[0])) for wamid, s in w.inbound]
                await conn.executemany(
                    "INSERT INTO ingest.inbound_contacts (tenant_id, wamid, contact_id) VALUES ($1, $2, $3) "
                    "ON CONFLICT (tenant_id, wamid) DO UPDATE SET contact_id = EXCLUDED.contact_id",
                    [(tenant_id, wamid, key) for wamid, key in inbound if key],
                )
                for ident in w.identifiers():
                    if (contact := batch.known.get(ident)) is not None:
                        keys[(tenant_id, ident)] = contact.contact_id
                        contacts[(tenant_id, ident)] = contact
                pending = await conn.fetch(
                    "SELECT contact_id, unannounced FROM ingest.contacts WHERE tenant_id = $1 "
                    "AND contact_id = ANY($2::text[]) AND cardinality(unannounced) > 0",
                    tenant_id, sorted(set(keys[(tenant_id, i)] for i in w.identifiers() if (tenant_id, i) in keys)),
                )
                for r in pending:
                    merges.append(_announcement(tenant_id, phone_number_ids[tenant_id], r["contact_id"],
                                                list(r["unannounced"])))
        return Resolved(keys, merges, contacts)

    async def addressees(self, tenant_id: str, named: Sequence[tuple[str | None, str | None, str | None]],
                         ) -> list[Contact | None]:
        """The contact of each send request, given as (to, to_user_id, reply_to): the customer it
        names (made known if new), else the sender of the inbound message it replies to (None when
        this tenant never received that message)."""
        work = TenantWork()
        for to, user_id, _ in named:
            seen = request_sighting(to, user_id)
            if seen is not None:
                work.sightings.append((seen, utcnow()))
        resolved = await self.resolve({tenant_id: work}, phone_number_ids={tenant_id: ""}) if work.sightings \
            else Resolved({}, [])
        out: list[Contact | None] = []
        for to, user_id, reply_to in named:
            ident = to or user_id
            if ident:
                out.append(resolved.contacts.get((tenant_id, ident)))
            else:
                out.append(await self.contact_of_inbound(tenant_id, reply_to) if reply_to else None)
        return out

    async def announced(self, merges: Sequence[ContactMerged]) -> None:
        """The merges are on Kafka: stop announcing them."""
        if not merges:
            return
        async with self._pool.acquire() as conn:
            await conn.executemany(
                "UPDATE ingest.contacts SET unannounced = ARRAY(SELECT unnest(unannounced) EXCEPT "
                "SELECT unnest($3::text[])) WHERE tenant_id = $1 AND contact_id = $2",
                [(m.tenant_id, m.contact_id, m.absorbed) for m in merges],
            )

    async def contact_of_inbound(self, tenant_id: str, wamid: str) -> Contact | None:
        """The contact who wrote inbound message ``wamid`` to the tenant (a reply naming no one)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT c.* FROM ingest.inbound_contacts i JOIN ingest.contact_identifiers x "
                "ON x.tenant_id = i.tenant_id AND x.identifier = i.contact_id "
                "JOIN ingest.contacts c ON c.tenant_id = x.tenant_id AND c.contact_id = x.contact_id "
                "WHERE i.tenant_id = $1 AND i.wamid = $2",
                tenant_id, wamid,
            )
        return _contact(row) if row is not None else None

    async def purge_inbound(self, older_than_days: int) -> int:
        async with self._pool.acquire() as conn:
            result = await conn.execute(
                "DELETE FROM ingest.inbound_contacts WHERE received_at < now() - make_interval(days => $1)",
                older_than_days,
            )
        return int(result.split()[-1])

    @staticmethod
    async def _known(conn: AnyConnection, tenant_id: str, identifiers: Iterable[str]) -> dict[str, Contact]:
        rows = await conn.fetch(
            "SELECT x.identifier, c.* FROM ingest.contact_identifiers x JOIN ingest.contacts c "
            "ON c.tenant_id = x.tenant_id AND c.contact_id = x.contact_id "
            "WHERE x.tenant_id = $1 AND x.identifier = ANY($2::text[])",
            tenant_id, sorted(identifiers),
        )
        return {r["identifier"]: _contact(r) for r in rows}

    @staticmethod
    async def _write(conn: AnyConnection, tenant_id: str, batch: ContactBatch) -> None:
        absorbed_by = {gone: kept for kept, gone_keys in batch.absorbed.items() for gone in gone_keys}
        if absorbed_by:
            await conn.executemany(
                "UPDATE ingest.contact_identifiers SET contact_id = $3 WHERE tenant_id = $1 AND contact_id = $2",
                [(tenant_id, gone, kept) for gone, kept in absorbed_by.items()],
            )
            await conn.execute(
                "DELETE FROM ingest.contacts WHERE tenant_id = $1 AND contact_id = ANY($2::text[])",
                tenant_id, list(absorbed_by),
            )
        await conn.executemany(
            """INSERT INTO ingest.contacts AS c
                 (tenant_id, contact_id, first_seen, phone, bsuid, parent_bsuid, username, unannounced)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[])
               ON CONFLICT (tenant_id, contact_id) DO UPDATE SET
                 phone = EXCLUDED.phone, bsuid = EXCLUDED.bsuid, parent_bsuid = EXCLUDED.parent_bsuid,
                 username = EXCLUDED.username,
                 unannounced = ARRAY(SELECT DISTINCT unnest(c.unannounced || EXCLUDED.unannounced))""",
            [
                (tenant_id, c.contact_id, c.first_seen, c.phone, c.bsuid, c.parent_bsuid, c.username,
                 batch.absorbed.get(c.contact_id, []))
                for c in batch.changed.values()
            ],
        )
        held: dict[str, str] = {}
        for c in batch.changed.values():
            for ident in (c.contact_id, *c.identifiers()):
                held[ident] = c.contact_id
        await conn.executemany(
            "INSERT INTO ingest.contact_identifiers (tenant_id, identifier, contact_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (tenant_id, identifier) DO UPDATE SET contact_id = EXCLUDED.contact_id",
            [(tenant_id, ident, key) for ident, key in held.items()],
        )


def _contact(r: asyncpg.Record) -> Contact:
    return Contact(r["contact_id"], r["first_seen"], r["phone"], r["bsuid"], r["parent_bsuid"], r["username"])


def _announcement(tenant_id: str, phone_number_id: str, kept: str, absorbed: list[str]) -> ContactMerged:
    at = utcnow()
    return ContactMerged(
        event_id=body_hash("contact_merged", tenant_id, kept, sorted(absorbed)), tenant_id=tenant_id,
        tenant_source="ingest:contacts", phone_number_id=phone_number_id, occurred_at=at, received_at=at,
        contact_id=kept, absorbed=sorted(absorbed),
    )


def request_sighting(to: str | None, to_user_id: str | None) -> Sighting | None:
    if to:
        return Sighting(phone=to)
    if to_user_id:
        return Sighting(parent_bsuid=to_user_id) if is_parent_bsuid(to_user_id) else Sighting(bsuid=to_user_id)
    return None


def work_of_webhook(normalised: NormalisedWebhook) -> tuple[dict[str, TenantWork], dict[str, str]]:
    """What a webhook asks of the contact book, per bound tenant (unbound events are never acted on)."""
    work: dict[str, TenantWork] = defaultdict(TenantWork)
    numbers: dict[str, str] = {}
    for m in normalised.messages:
        seen = sighting_of_message(m)
        if m.tenant_id is None or seen is None:
            continue
        numbers.setdefault(m.tenant_id, m.phone_number_id)
        work[m.tenant_id].sightings.append((seen, m.event_time))
        work[m.tenant_id].inbound.append((m.wamid, seen))
    for st in normalised.statuses:
        seen = sighting_of_status(st)
        if st.tenant_id is None or seen is None:
            continue
        numbers.setdefault(st.tenant_id, st.phone_number_id)
        work[st.tenant_id].sightings.append((seen, st.event_time))
    for ev in normalised.account_events:
        if ev.tenant_id is None:
            continue
        changes = bsuid_changes(ev)
        prefs = preference_sightings(ev)
        if changes or prefs:
            numbers.setdefault(ev.tenant_id, ev.phone_number_id)
        work[ev.tenant_id].changes.extend((c, ev.event_time) for c in changes)
        work[ev.tenant_id].sightings.extend((p, ev.event_time) for p in prefs)
    return {t: w for t, w in work.items() if w.identifiers()}, numbers


def stamp(normalised: NormalisedWebhook, resolved: Resolved) -> NormalisedWebhook:
    """The webhook's events, each carrying its customer's contact."""
    def of_message(m: InboundMessage) -> InboundMessage:
        key = resolved.key(m.tenant_id, m.customer_wa_id or m.customer_user_id or m.customer_parent_user_id)
        return m.model_copy(update={"contact_id": key}) if key else m

    def of_status(s: MessageStatus) -> MessageStatus:
        key = resolved.key(s.tenant_id, s.recipient_id or s.recipient_user_id or s.recipient_parent_user_id)
        return s.model_copy(update={"contact_id": key}) if key else s

    def of_account(ev: AccountEvent) -> AccountEvent:
        named = {c.old for c in bsuid_changes(ev)} | {c.new for c in bsuid_changes(ev)}
        named |= {i for p in preference_sightings(ev) for i in p.identifiers()}
        found = {i: k for i in named if (k := resolved.key(ev.tenant_id, i))}
        return ev.model_copy(update={"contacts": found}) if found else ev

    return replace(
        normalised,
        messages=[of_message(m) for m in normalised.messages],
        statuses=[of_status(s) for s in normalised.statuses],
        account_events=[of_account(e) for e in normalised.account_events],
    )
