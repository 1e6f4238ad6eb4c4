"""The sender's tables (schema ``sender``), read and written in batches with asyncpg: each
request's state and Meta's statuses here, the rest by what it keeps (``store_customers``,
``store_templates``, ``store_limits``), all on one pool as :class:`SenderStore`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from parley_common.contracts import STATUS_ORDER, MessageStatus

from parley_sender.domain.outcomes import RESOLVABLE, SETTLED, MessageState, sql_states
from parley_sender.store_customers import CustomerTables
from parley_sender.store_limits import LimitTables
from parley_sender.store_templates import TemplateTables

MIGRATIONS = Path(__file__).parent / "migrations"
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
_ACCEPTED = MessageState.ACCEPTED.value
_IN_DOUBT = MessageState.IN_DOUBT.value
# No call lasts as long as the in-doubt deadline: past it, a row in these states has no call in flight.
_OVERDUE = f"state IN ({sql_states(frozenset({MessageState.IN_DOUBT, MessageState.SENDING}))})"
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


class MessageTables:
    """``sender.messages`` (each request's state) and ``sender.deliveries`` (Meta's statuses)."""

    pool: asyncpg.Pool

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
            f"""UPDATE sender.messages SET state = '{_ACCEPTED}', wamid = $3, reason = NULL, updated_at = now()
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
                UPDATE sender.messages m SET state = '{_ACCEPTED}', wamid = one.wamid, reason = NULL,
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
                WHERE {_OVERDUE} AND updated_at < now() - make_interval(secs => $1)
                ORDER BY updated_at LIMIT $2""",
            older_than_s,
            limit,
        )
        return [_row(r) for r in rows]

    async def mark_unresolved(self, ids: Sequence[str], older_than_s: float, reason: str) -> list[str]:
        """Give up waiting (after the results were published): final, the tenant may resend."""
        rows = await self.pool.fetch(
            f"""UPDATE sender.messages SET state = '{MessageState.UNRESOLVED.value}', reason = $3, updated_at = now()
               WHERE message_id = ANY($1) AND {_OVERDUE}
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

    async def in_doubt_summary(self) -> tuple[int, float]:
        """How many sends are in doubt, and the age in seconds of the oldest (0 when none); read
        through the partial index of in-doubt rows."""
        row = await self.pool.fetchrow(
            "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(updated_at)), 0) AS oldest"
            f" FROM sender.messages WHERE state = '{_IN_DOUBT}'"
        )
        return (int(row["n"]), float(row["oldest"])) if row is not None else (0, 0.0)


class SenderStore(MessageTables, CustomerTables, TemplateTables, LimitTables):
    """The sender's tables (schema ``sender``) on one pool, grouped by what they keep: requests
    and statuses (here), customers (``store_customers``), templates (``store_templates``) and
    Meta's limits (``store_limits``)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
