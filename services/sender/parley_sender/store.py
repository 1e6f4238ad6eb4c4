"""The sender's tables (schema ``sender``), read and written in batches with asyncpg."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from parley_common.contracts import STATUS_ORDER, MessageStatus

from parley_sender.domain.consent import ConsentState
from parley_sender.domain.governor import MessagingLimit
from parley_sender.domain.outcomes import RESOLVABLE, SETTLED, MessageState, sql_states
from parley_sender.domain.templates import Template, TemplateCatalogue
from parley_sender.domain.windows import ConversationWindows, CustomerServiceWindow, FreeEntryPointWindow

MIGRATIONS = Path(__file__).parent / "migrations"
WindowKey = tuple[str, str]  # (business number, customer)
# The windows' new value from their current one, and the wamid that set the customer-service window.
WindowChange = Callable[[WindowKey, ConversationWindows], tuple[ConversationWindows, str | None]]
# Rows are locked in one order by every writer (byte order, whatever the database's collation).
_KEY_ORDER = 'k.p COLLATE "C", k.c COLLATE "C"'
# Built from the states' sets (domain/outcomes.py): no write changes a settled row, and only
# in-doubt rows are resolved by a status webhook.
_NOT_SETTLED = (
    f"sender.messages.state NOT IN ({sql_states(SETTLED)})"
    # Reported in doubt after the deadline: never back to waiting (a real answer may still land).
    f" AND NOT (sender.messages.state = '{MessageState.UNRESOLVED.value}'"
    f" AND EXCLUDED.state = '{MessageState.IN_DOUBT.value}')"
)
_RESOLVABLE = f"state IN ({sql_states(RESOLVABLE)})"
_SENDING = MessageState.SENDING.value
# A 'sending' write is a claim: never over a row whose call another process may be making.
_HELD = (
    f"(EXCLUDED.state = '{_SENDING}'"
    f" AND sender.messages.state IN ('{_SENDING}', '{MessageState.IN_DOUBT.value}'))"
)


@dataclass(frozen=True)
class MessageRow:
    """A message's outcome as recorded (and as published on wa.sends)."""

    message_id: str
    tenant_id: str | None
    phone_number_id: str
    recipient: str | None
    state: str
    attempt: int
    wamid: str | None = None
    callback_data: str | None = None
    is_template: bool = False
    template_name: str | None = None
    category: str | None = None
    free_window: str | None = None
    reason: str | None = None
    error_code: int | None = None
    business_initiated: bool = False  # counted against the portfolio's messaging limit
    request: dict[str, Any] | None = None
    # The request as JSON text, when the caller has it already (the Kafka record's value): written
    # as is instead of re-serialising ``request``.
    request_json: str | None = None

    def values(self) -> tuple[Any, ...]:
        request = self.request_json
        if request is None and self.request is not None:
            request = orjson.dumps(self.request).decode()
        return (
            self.message_id,
            self.tenant_id,
            self.phone_number_id,
            self.recipient,
            self.state,
            self.attempt,
            self.wamid,
            self.callback_data,
            self.is_template,
            self.template_name,
            self.category,
            self.free_window,
            self.reason,
            self.error_code,
            self.business_initiated,
            request,
        )

    @property
    def message_state(self) -> MessageState:
        return MessageState(self.state)


_COLUMNS = (
    "message_id, tenant_id, phone_number_id, recipient, state, attempt, wamid, callback_data, "
    "is_template, template_name, category, free_window, reason, error_code, business_initiated, request"
)
# What the redelivery decision and the results need: everything but the request itself.
_STATE_COLUMNS = _COLUMNS.removesuffix(", request")

# The request goes in as JSON text (``MessageRow.values``), not through the pool's jsonb codec.
_VALUES = "$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16::text::jsonb"


def _row(r: asyncpg.Record) -> MessageRow:
    return MessageRow(**{k: r[k] for k in r.keys() if k in _FIELDS})


_FIELDS = frozenset(_COLUMNS.split(", "))


class SenderStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- messages --------------------------------------------------------------------------
    async def messages(self, ids: Sequence[str]) -> dict[str, MessageRow]:
        """The recorded state of these requests (without the stored request: see :meth:`requests`)."""
        rows = await self.pool.fetch(
            f"SELECT {_STATE_COLUMNS} FROM sender.messages WHERE message_id = ANY($1)", list(ids)
        )
        return {r["message_id"]: _row(r) for r in rows}

    async def requests(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored requests (for re-queued retries and dead letters)."""
        rows = await self.pool.fetch(
            "SELECT message_id, request FROM sender.messages WHERE message_id = ANY($1) AND request IS NOT NULL",
            list(ids),
        )
        return {r["message_id"]: r["request"] for r in rows}

    async def record_outcomes(
        self, rows: Sequence[MessageRow], conn: asyncpg.Connection | None = None, *, claim: str | None = None
    ) -> set[str]:
        """Upsert these rows (``conn``: a connection the caller holds, else one from the pool).

        A 'sending' row is a claim on the request's call: it carries ``claim`` and is not written
        over a row that another call holds ('sending', 'in_doubt') or that is settled. Returns the
        message ids of the 'sending' rows that did not win (their call belongs to someone else)."""
        if not rows:
            return set()
        sending = [r.message_id for r in rows if r.state == _SENDING]
        if sending and claim is None:
            raise ValueError("a 'sending' row needs a claim")
        db = conn or self.pool
        await db.executemany(
            f"""INSERT INTO sender.messages ({_COLUMNS}, claim) VALUES ({_VALUES}, $17)
                ON CONFLICT (message_id) DO UPDATE SET state = EXCLUDED.state, attempt = EXCLUDED.attempt,
                  wamid = COALESCE(EXCLUDED.wamid, sender.messages.wamid),
                  is_template = EXCLUDED.is_template, template_name = EXCLUDED.template_name,
                  category = EXCLUDED.category, free_window = EXCLUDED.free_window,
                  reason = EXCLUDED.reason, error_code = EXCLUDED.error_code,
                  business_initiated = EXCLUDED.business_initiated,
                  callback_data = COALESCE(EXCLUDED.callback_data, sender.messages.callback_data),
                  request = COALESCE(EXCLUDED.request, sender.messages.request),
                  claim = COALESCE(EXCLUDED.claim, sender.messages.claim), updated_at = now()
                WHERE {_NOT_SETTLED} AND NOT {_HELD}""",
            [(*r.values(), claim if r.state == _SENDING else None) for r in rows],
        )
        if not sending:
            return set()
        won = await db.fetch(
            "SELECT message_id FROM sender.messages WHERE message_id = ANY($1) AND claim = $2 AND state = $3",
            sending,
            claim,
            _SENDING,
        )
        return set(sending) - {r["message_id"] for r in won}

    async def message_for_tenant(self, tenant_id: str, message_id: str) -> dict[str, Any] | None:
        r = await self.pool.fetchrow(
            """SELECT m.*, d.status AS delivery_status, d.sent_at, d.delivered_at, d.read_at, d.failed_at,
                      d.errors AS delivery_errors
               FROM sender.messages m LEFT JOIN sender.deliveries d ON d.wamid = m.wamid
               WHERE m.message_id = $1 AND m.tenant_id = $2""",
            message_id,
            tenant_id,
        )
        return dict(r) if r else None

    async def resolve_in_doubt(
        self, phone_number_id: str, callback_data: str, wamid: str
    ) -> MessageRow | None:
        """A status webhook names the request (by the callback data the sender sent, its message
        id): an in-doubt request becomes accepted with that wamid. At most one row, and never a
        wamid another message already has (old rows may share callback data)."""
        r = await self.pool.fetchrow(
            f"""UPDATE sender.messages SET state = 'accepted', wamid = $3, reason = NULL, updated_at = now()
                WHERE message_id = (
                    SELECT message_id FROM sender.messages
                    WHERE phone_number_id = $1 AND callback_data = $2 AND {_RESOLVABLE}
                    ORDER BY created_at LIMIT 1)
                  AND NOT EXISTS (SELECT 1 FROM sender.messages x WHERE x.wamid = $3)
                RETURNING {_STATE_COLUMNS}""",
            phone_number_id,
            callback_data,
            wamid,
        )
        return _row(r) if r else None

    async def delivered_wamid_for(self, phone_number_id: str, callback_data: str) -> str | None:
        """The wamid a status webhook reported for this callback data, if no message has it yet."""
        wamid: str | None = await self.pool.fetchval(
            """SELECT d.wamid FROM sender.deliveries d
               WHERE d.phone_number_id = $1 AND d.callback_data = $2
                 AND NOT EXISTS (SELECT 1 FROM sender.messages x WHERE x.wamid = d.wamid)
               LIMIT 1""",
            phone_number_id,
            callback_data,
        )
        return wamid

    async def resolve_from_deliveries(self, limit: int = 1000) -> list[MessageRow]:
        """In-doubt requests whose status webhook was recorded before they were in doubt (the
        status came while the call, or the crash, was under way): accepted with that wamid."""
        rows = await self.pool.fetch(
            f"""WITH found AS (
                    SELECT DISTINCT ON (d.wamid) m.message_id, d.wamid
                    FROM sender.messages m
                    JOIN sender.deliveries d
                      ON d.phone_number_id = m.phone_number_id AND d.callback_data = m.callback_data
                    WHERE m.{_RESOLVABLE}
                      AND NOT EXISTS (SELECT 1 FROM sender.messages x WHERE x.wamid = d.wamid)
                    ORDER BY d.wamid, m.created_at
                    LIMIT $1),
                one AS (SELECT DISTINCT ON (message_id) message_id, wamid FROM found
                        ORDER BY message_id, wamid)
                UPDATE sender.messages m SET state = 'accepted', wamid = one.wamid, reason = NULL,
                       updated_at = now()
                FROM one WHERE m.message_id = one.message_id AND m.{_RESOLVABLE}
                RETURNING {", ".join("m." + c for c in _STATE_COLUMNS.split(", "))}""",
            limit,
        )
        return [_row(r) for r in rows]

    async def overdue_in_doubt(self, older_than_s: float, limit: int = 1000) -> list[MessageRow]:
        """Requests in doubt (or left 'sending' by a process that is gone) for longer than the
        deadline. No call lasts that long, so none of them can still be in flight."""
        rows = await self.pool.fetch(
            f"""SELECT {_STATE_COLUMNS} FROM sender.messages
                WHERE state IN ('in_doubt', 'sending') AND updated_at < now() - make_interval(secs => $1)
                ORDER BY updated_at LIMIT $2""",
            older_than_s,
            limit,
        )
        return [_row(r) for r in rows]

    async def mark_unresolved(self, ids: Sequence[str], older_than_s: float, reason: str) -> list[str]:
        """Give up waiting (after the results were published): final, the tenant may resend."""
        rows = await self.pool.fetch(
            """UPDATE sender.messages SET state = 'unresolved', reason = $3, updated_at = now()
               WHERE message_id = ANY($1) AND state IN ('in_doubt', 'sending')
                 AND updated_at < now() - make_interval(secs => $2)
               RETURNING message_id""",
            list(ids),
            older_than_s,
            reason,
        )
        return [r["message_id"] for r in rows]

    # --- statuses --------------------------------------------------------------------------
    async def record_statuses(self, statuses: Iterable[MessageStatus]) -> None:
        rows = []
        for s in statuses:
            rank = STATUS_ORDER.get(s.status)
            if rank is None:
                continue  # a status Meta added later: kept on the topic, not a state here
            at = s.occurred_at
            rows.append(
                (
                    s.wamid,
                    s.phone_number_id,
                    s.status,
                    rank,
                    s.biz_opaque_callback_data,
                    at if s.status == "sent" else None,
                    at if s.status == "delivered" else None,
                    at if s.status in ("read", "played") else None,
                    at if s.status == "failed" else None,
                    [e.model_dump(exclude_none=True) for e in s.errors],
                )
            )
        if not rows:
            return
        await self.pool.executemany(
            """INSERT INTO sender.deliveries AS d (wamid, phone_number_id, status, status_rank, callback_data,
                   sent_at, delivered_at, read_at, failed_at, errors)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
               ON CONFLICT (wamid) DO UPDATE SET
                 status = CASE WHEN d.status <> 'failed' AND EXCLUDED.status_rank > d.status_rank
                               THEN EXCLUDED.status ELSE d.status END,
                 status_rank = CASE WHEN d.status <> 'failed' AND EXCLUDED.status_rank > d.status_rank
                               THEN EXCLUDED.status_rank ELSE d.status_rank END,
                 callback_data = COALESCE(d.callback_data, EXCLUDED.callback_data),
                 sent_at = COALESCE(d.sent_at, EXCLUDED.sent_at),
                 delivered_at = COALESCE(d.delivered_at, EXCLUDED.delivered_at),
                 read_at = COALESCE(d.read_at, EXCLUDED.read_at),
                 failed_at = COALESCE(d.failed_at, EXCLUDED.failed_at),
                 errors = CASE WHEN EXCLUDED.errors = '[]'::jsonb THEN d.errors ELSE EXCLUDED.errors END,
                 updated_at = now()""",
            rows,
        )

    # --- windows ---------------------------------------------------------------------------
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

    # --- templates -------------------------------------------------------------------------
    async def catalogue(self, tenant_id: str) -> TemplateCatalogue:
        rows = await self.pool.fetch("SELECT * FROM sender.templates WHERE tenant_id = $1", tenant_id)
        return TemplateCatalogue.of(_template(r) for r in rows)

    async def templates(self, tenant_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT * FROM sender.templates WHERE tenant_id = $1 ORDER BY name, language", tenant_id
        )
        return [dict(r) for r in rows]

    async def upsert_templates(self, tenant_id: str, templates: Sequence[Template]) -> None:
        await self.pool.executemany(
            """INSERT INTO sender.templates (tenant_id, name, language, waba_id, template_id, category, status,
                   quality, parameter_format, components) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
               ON CONFLICT (tenant_id, name, language) DO UPDATE SET waba_id = EXCLUDED.waba_id,
                 template_id = EXCLUDED.template_id, category = EXCLUDED.category, status = EXCLUDED.status,
                 quality = COALESCE(EXCLUDED.quality, sender.templates.quality),
                 parameter_format = EXCLUDED.parameter_format, components = EXCLUDED.components,
                 updated_at = now()""",
            [
                (
                    tenant_id,
                    t.name,
                    t.language,
                    t.waba_id,
                    t.template_id,
                    t.category,
                    t.status,
                    t.quality,
                    t.parameter_format,
                    list(t.components),
                )
                for t in templates
            ],
        )

    async def remove_templates_not_in(
        self, tenant_id: str, waba_id: str, keep: Sequence[tuple[str, str]]
    ) -> int:
        result = await self.pool.execute(
            """DELETE FROM sender.templates WHERE tenant_id = $1 AND waba_id = $2
               AND (name, language) NOT IN (SELECT * FROM unnest($3::text[], $4::text[]))""",
            tenant_id,
            waba_id,
            [k[0] for k in keep],
            [k[1] for k in keep],
        )
        return int(result.split()[-1])

    async def update_template(
        self,
        tenant_id: str,
        *,
        template_id: str | None,
        name: str | None,
        language: str | None,
        **changes: str,
    ) -> int:
        sets = ", ".join(f"{col} = ${i + 5}" for i, col in enumerate(changes))
        result = await self.pool.execute(
            f"""UPDATE sender.templates SET {sets}, updated_at = now() WHERE tenant_id = $1 AND
                (($2::text IS NOT NULL AND template_id = $2) OR
                 (name = $3 AND ($4::text IS NULL OR language = $4)))""",
            tenant_id,
            template_id,
            name,
            language,
            *changes.values(),
        )
        return int(result.split()[-1])

    # --- consent and the messaging limit ---------------------------------------------------
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

    # --- the portfolio's messaging limit (docs/adr/0115-portfolio-messaging-limit.md) ---------
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
        if items:
            await self.pool.executemany(
                """INSERT INTO sender.reached AS r (tenant_id, customer_id, reached_at) VALUES ($1,$2,$3)
                   ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
                     reached_at = GREATEST(r.reached_at, EXCLUDED.reached_at), confirmed = true, pending = '{}'""",
                items,
            )

    async def in_doubt_summary(self) -> tuple[int, float]:
        """How many sends are in doubt, and the age in seconds of the oldest (0 when none); read
        through the partial index of in-doubt rows."""
        row = await self.pool.fetchrow(
            "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(updated_at)), 0) AS oldest"
            " FROM sender.messages WHERE state = 'in_doubt'"
        )
        return (int(row["n"]), float(row["oldest"])) if row is not None else (0, 0.0)


def _consent(r: asyncpg.Record) -> ConsentState:
    return ConsentState(r["marketing_stopped"], r["changed_at"], r["source"])


def _windows(r: asyncpg.Record) -> ConversationWindows:
    return ConversationWindows(
        CustomerServiceWindow(r["last_inbound_at"]), FreeEntryPointWindow(r["referral_at"], r["fep_started_at"])
    )


def _template(r: asyncpg.Record) -> Template:
    return Template(
        name=r["name"],
        language=r["language"],
        category=r["category"],
        status=r["status"],
        components=tuple(r["components"] or ()),
        parameter_format=r["parameter_format"],
        quality=r["quality"],
        template_id=r["template_id"],
        waba_id=r["waba_id"],
    )
