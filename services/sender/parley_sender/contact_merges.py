"""Folding a merged contact's state into the kept one (``ContactMerged``; docs/adr/0117-contacts.md).

Ingest found that two contacts of a tenant are one person. The windows with each of the
tenant's numbers, the consent and the place in the portfolio's messaging limit kept under the
absorbed keys move to the kept key, by the pure rules of ``domain.contacts``, in one transaction
(the portfolio's row lock first, as every reservation of the messaging limit takes it). A repeat
finds nothing left under the absorbed keys and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

import asyncpg
from parley_common.contracts import InboundMessage, OutboundMessage
from parley_common.db import AnyConnection

from parley_sender.domain.consent import ConsentState
from parley_sender.domain.contacts import latest, merge_consent, merge_windows
from parley_sender.domain.windows import ConversationWindows, CustomerServiceWindow, FreeEntryPointWindow


async def fold_contacts(
    pool: asyncpg.Pool, tenant_id: str, numbers: Sequence[str], kept: str, absorbed: Sequence[str]
) -> None:
    absorbed = [a for a in absorbed if a != kept]
    if not absorbed:
        return
    keys = [kept, *absorbed]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO sender.portfolios (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant_id)
        await conn.execute("SELECT 1 FROM sender.portfolios WHERE tenant_id = $1 FOR UPDATE", tenant_id)
        await _fold_windows(conn, list(numbers), kept, keys)
        await _fold_consent(conn, tenant_id, kept, keys)
        await _fold_reach(conn, tenant_id, kept, keys)
        # later requests and events still stamped with an absorbed key land on the kept contact
        await conn.execute(
            "UPDATE sender.contact_aliases SET kept = $2 WHERE tenant_id = $1 AND kept = ANY($3::text[])",
            tenant_id, kept, absorbed)
        await conn.execute(
            "INSERT INTO sender.contact_aliases (tenant_id, absorbed, kept) SELECT $1, a, $2 FROM unnest($3::text[]) a "
            "ON CONFLICT (tenant_id, absorbed) DO UPDATE SET kept = EXCLUDED.kept",
            tenant_id, kept, absorbed)


async def kept_contacts(conn: AnyConnection, tenant_id: str, keys: Sequence[str]) -> dict[str, str]:
    """The kept contact of each of ``keys`` that was folded into another (absent: not folded)."""
    rows = await conn.fetch("SELECT absorbed, kept FROM sender.contact_aliases WHERE tenant_id = $1 "
                            "AND absorbed = ANY($2::text[])", tenant_id, list(set(keys)))
    return {r["absorbed"]: r["kept"] for r in rows}


async def _fold_windows(conn: AnyConnection, numbers: list[str], kept: str, keys: list[str]) -> None:
    rows = await conn.fetch(
        # locked in the order the window tracker locks them (SenderStore.change_windows): no deadlock
        "SELECT * FROM sender.windows WHERE phone_number_id = ANY($1::text[]) AND customer_id = ANY($2::text[]) "
        'ORDER BY phone_number_id COLLATE "C", customer_id COLLATE "C" FOR UPDATE',
        numbers, keys,
    )
    by_number: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        by_number.setdefault(r["phone_number_id"], []).append(r)
    for number, found in by_number.items():
        if all(r["customer_id"] == kept for r in found):
            continue
        windows, wamid, wamid_at = ConversationWindows(), None, None
        for r in found:
            held = ConversationWindows(
                CustomerServiceWindow(r["last_inbound_at"]), FreeEntryPointWindow(r["referral_at"], r["fep_started_at"])
            )
            windows = merge_windows(windows, held)
            at = r["last_inbound_at"]
            if r["last_inbound_wamid"] and (wamid_at is None or (at is not None and at > wamid_at)):
                wamid, wamid_at = r["last_inbound_wamid"], at
        await conn.execute(
            "DELETE FROM sender.windows WHERE phone_number_id = $1 AND customer_id = ANY($2::text[])", number, keys)
        await conn.execute(
            "INSERT INTO sender.windows (phone_number_id, customer_id, last_inbound_at, last_inbound_wamid, "
            "referral_at, fep_started_at) VALUES ($1, $2, $3, $4, $5, $6)",
            number, kept, windows.csw.last_inbound_at, wamid, windows.fep.referral_at, windows.fep.started_at,
        )


async def _fold_consent(conn: AnyConnection, tenant_id: str, kept: str, keys: list[str]) -> None:
    rows = await conn.fetch(
        "SELECT * FROM sender.consent WHERE tenant_id = $1 AND customer_id = ANY($2::text[]) FOR UPDATE",
        tenant_id, keys,
    )
    if not rows or all(r["customer_id"] == kept for r in rows):
        return
    state = ConsentState()
    for r in rows:
        state = merge_consent(state, ConsentState(r["marketing_stopped"], r["changed_at"], r["source"]))
    await conn.execute("DELETE FROM sender.consent WHERE tenant_id = $1 AND customer_id = ANY($2::text[])",
                       tenant_id, keys)
    await conn.execute("INSERT INTO sender.consent VALUES ($1, $2, $3, $4, $5)",
                       tenant_id, kept, state.marketing_stopped, state.changed_at, state.source)


async def _fold_reach(conn: AnyConnection, tenant_id: str, kept: str, keys: list[str]) -> None:
    """One person holds one place in the messaging limit: the latest reach, its pending requests."""
    rows = await conn.fetch(
        "SELECT * FROM sender.reached WHERE tenant_id = $1 AND customer_id = ANY($2::text[])", tenant_id, keys)
    if not rows or all(r["customer_id"] == kept for r in rows):
        return
    reached_at: datetime | None = None
    for r in rows:
        reached_at = latest(reached_at, r["reached_at"])
    confirmed = any(r["confirmed"] for r in rows)
    pending = sorted({p for r in rows for p in r["pending"]})
    await conn.execute("DELETE FROM sender.reached WHERE tenant_id = $1 AND customer_id = ANY($2::text[])",
                       tenant_id, keys)
    await conn.execute(
        "INSERT INTO sender.reached (tenant_id, customer_id, reached_at, confirmed, pending) "
        "VALUES ($1, $2, $3, $4, $5::text[])",
        tenant_id, kept, reached_at, confirmed, pending,
    )


_M = TypeVar("_M", OutboundMessage, InboundMessage)


async def as_kept(pool: asyncpg.Pool, items: Sequence[_M]) -> list[_M]:
    """``items`` (send requests, inbound messages) with a contact folded into another restamped
    with the kept contact: one stamped before ingest merged may reach the sender after the fold."""
    wanted: dict[str, set[str]] = {}
    for m in items:
        if m.tenant_id and m.contact_id:
            wanted.setdefault(m.tenant_id, set()).add(m.contact_id)
    if not wanted:
        return list(items)
    async with pool.acquire() as conn:
        kept = {t: await kept_contacts(conn, t, sorted(ids)) for t, ids in wanted.items()}
    out: list[_M] = []
    for m in items:
        new = kept.get(m.tenant_id or "", {}).get(m.contact_id or "")
        out.append(m if new is None else m.model_copy(update={"contact_id": new}))
    return out
