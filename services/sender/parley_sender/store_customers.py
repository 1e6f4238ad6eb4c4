"""What the sender keeps about each customer of a business number: the customer-service and
free-entry-point windows, the inbound messages the window tracker has seen, and marketing consent.

The rules are the domain's (``domain/windows.py``, ``domain/consent.py``); these methods lock the
rows, let the domain decide and write what it returned (docs/adr/0007-one-source-per-rule.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg

from parley_sender.domain.consent import ConsentState
from parley_sender.domain.windows import ConversationWindows, CustomerServiceWindow, FreeEntryPointWindow

WindowKey = tuple[str, str]  # (business number, customer)
# The windows' new value from their current one, and the wamid that set the customer-service window.
WindowChange = Callable[[WindowKey, ConversationWindows], tuple[ConversationWindows, str | None]]
# Rows are locked in one order by every writer (byte order, whatever the database's collation).
_KEY_ORDER = 'k.p COLLATE "C", k.c COLLATE "C"'


class CustomerTables:
    """``sender.windows``, ``sender.inbound_refs`` and ``sender.consent``."""

    pool: asyncpg.Pool

    async def windows(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], ConversationWindows]:
        keys = list(set(keys))
        if not keys:
            return {}
        rows = await self.pool.fetch(
            """SELECT w.* FROM sender.windows w
               JOIN unnest($1::text[], $2::text[]) AS k(p, c) ON w.phone_number_id = k.p AND w.customer_id = k.c""",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {(r["phone_number_id"], r["customer_id"]): _windows(r) for r in rows}

    async def change_windows(
        self, keys: Iterable[WindowKey], change: WindowChange, *, create: bool = True
    ) -> dict[WindowKey, ConversationWindows]:
        """Change the windows of these (business number, customer) keys by a rule of
        ``domain/windows.py``: the rows are locked, ``change`` decides each key's new windows from
        its current ones (and the wamid of the inbound message that set the customer-service
        window, if any), and what changed is written. The rule lives only in the domain; this
        holds no copy of it. ``create``: a key without a row starts from no windows (else it is
        left alone). Returns the windows as written."""
        keys = list(set(keys))
        if not keys:
            return {}
        phones, customers = [k[0] for k in keys], [k[1] for k in keys]
        async with self.pool.acquire() as conn, conn.transaction():
            if create:  # a row to lock for every key (in one order, so writers never deadlock)
                await conn.execute(
                    f"""INSERT INTO sender.windows (phone_number_id, customer_id)
                        SELECT p, c FROM unnest($1::text[], $2::text[]) AS k(p, c) ORDER BY {_KEY_ORDER}
                        ON CONFLICT DO NOTHING""",
                    phones,
                    customers,
                )
            rows = await conn.fetch(
                f"""SELECT w.* FROM sender.windows w
                    JOIN unnest($1::text[], $2::text[]) AS k(p, c) ON w.phone_number_id = k.p AND w.customer_id = k.c
                    ORDER BY {_KEY_ORDER} FOR UPDATE OF w""",
                phones,
                customers,
            )
            written: dict[WindowKey, ConversationWindows] = {}
            updates = []
            for r in rows:
                key = (r["phone_number_id"], r["customer_id"])
                before = _windows(r)
                after, wamid = change(key, before)
                written[key] = after
                if after != before or (wamid is not None and wamid != r["last_inbound_wamid"]):
                    updates.append(
                        (*key, after.csw.last_inbound_at, wamid, after.fep.referral_at, after.fep.started_at)
                    )
            await conn.executemany(
                """UPDATE sender.windows SET last_inbound_at = $3,
                     last_inbound_wamid = COALESCE($4, last_inbound_wamid), referral_at = $5, fep_started_at = $6
                   WHERE phone_number_id = $1 AND customer_id = $2""",
                updates,
            )
        return written

    async def start_free_entry_points(self, items: Sequence[tuple[str, str, datetime]]) -> None:
        """The business replied at these times: an offered free entry point starts its 72 hours
        where the domain says it does (:meth:`FreeEntryPointWindow.on_send`)."""
        replied = {(p, c): at for p, c, at in items}

        def reply(key: WindowKey, w: ConversationWindows) -> tuple[ConversationWindows, str | None]:
            return replace(w, fep=w.fep.on_send(replied[key])), None

        await self.change_windows(replied, reply, create=False)

    async def record_inbound_refs(self, refs: Sequence[tuple[str, str, str, datetime]]) -> None:
        if refs:
            await self.pool.executemany(
                "INSERT INTO sender.inbound_refs VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING", refs
            )

    async def known_inbound(self, wamids: Sequence[str]) -> set[str]:
        if not wamids:
            return set()
        rows = await self.pool.fetch(
            "SELECT wamid FROM sender.inbound_refs WHERE wamid = ANY($1)", list(wamids)
        )
        return {r["wamid"] for r in rows}

    async def consent(self, tenant_id: str, customers: Sequence[str]) -> dict[str, ConsentState]:
        if not customers:
            return {}
        rows = await self.pool.fetch(
            "SELECT * FROM sender.consent WHERE tenant_id = $1 AND customer_id = ANY($2)",
            tenant_id,
            list(customers),
        )
        return {r["customer_id"]: _consent(r) for r in rows}

    async def apply_consent(
        self, tenant_id: str, customer_id: str, action: str, at: datetime, source: str
    ) -> ConsentState:
        """A consent change, applied by the domain's rule (:meth:`ConsentState.apply`: the later
        change wins) to the customer's locked row. Returns the state as it stands."""
        for _ in range(3):
            async with self.pool.acquire() as conn, conn.transaction():
                r = await conn.fetchrow(
                    "SELECT * FROM sender.consent WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE",
                    tenant_id,
                    customer_id,
                )
                before = _consent(r) if r is not None else ConsentState()
                after = before.apply(action, at, source)
                if after == before:
                    return before
                if r is not None:
                    await conn.execute(
                        """UPDATE sender.consent SET marketing_stopped = $3, changed_at = $4, source = $5
                           WHERE tenant_id = $1 AND customer_id = $2""",
                        tenant_id, customer_id, after.marketing_stopped, after.changed_at, after.source,
                    )
                    return after
                inserted = await conn.execute(
                    "INSERT INTO sender.consent VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING",
                    tenant_id, customer_id, after.marketing_stopped, after.changed_at, after.source,
                )
                if inserted.endswith(" 1"):
                    return after
            # another change inserted the customer's first row meanwhile: decide again against it
        raise RuntimeError("consent row kept changing under a new customer's first change")


def _consent(r: asyncpg.Record) -> ConsentState:
    return ConsentState(r["marketing_stopped"], r["changed_at"], r["source"])


def _windows(r: asyncpg.Record) -> ConversationWindows:
    return ConversationWindows(
        CustomerServiceWindow(r["last_inbound_at"]), FreeEntryPointWindow(r["referral_at"], r["fep_started_at"])
    )
