"""The router's own tables (schema ``router``): routed wamids, tenant intents, trained tenant models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from parley_common.endpoint_calls import delivery_id

from parley_router.domain.routing import RoutingDecision


class RouterStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def already_routed(self, wamids: Sequence[str]) -> set[str]:
        if not wamids:
            return set()
        rows = await self._pool.fetch("SELECT wamid FROM router.routed WHERE wamid = ANY($1::text[])",
                                      list(wamids))
        return {r["wamid"] for r in rows}

    async def mark_routed(self, decisions: Sequence[RoutingDecision]) -> None:
        if not decisions:
            return
        r = [d.routed for d in decisions]
        await self._pool.execute(
            """INSERT INTO router.routed (wamid, tenant_id, intent, rule)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
               ON CONFLICT (wamid) DO NOTHING""",
            [x.wamid for x in r], [x.tenant_id for x in r], [x.intent for x in r], [x.rule for x in r])

    async def mark_routed_with_deliveries(self, decisions: Sequence[RoutingDecision]) -> int:
        """The batch's tenant endpoint calls into the outbox and its wamids into the dedupe table,
        in one transaction (both or neither); returns how many calls were queued."""
        calls = [d for d in decisions if d.webhook is not None and d.routed.tenant_id]
        if not calls:
            await self.mark_routed(decisions)
            return 0
        r = [d.routed for d in decisions]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO router.webhook_outbox (delivery_id, tenant_id, endpoint, phone_number_id,
                                                      event_id, body)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[])
                   ON CONFLICT (delivery_id) DO NOTHING""",
                [delivery_id(d.routed.event_id, d.webhook.endpoint) for d in calls if d.webhook],
                [d.routed.tenant_id for d in calls], [d.webhook.endpoint for d in calls if d.webhook],
                [d.routed.phone_number_id for d in calls], [d.routed.event_id for d in calls],
                [d.webhook.body for d in calls if d.webhook])
            await conn.execute(
                """INSERT INTO router.routed (wamid, tenant_id, intent, rule)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                   ON CONFLICT (wamid) DO NOTHING""",
                [x.wamid for x in r], [x.tenant_id for x in r], [x.intent for x in r], [x.rule for x in r])
        return len(calls)

    async def pending_deliveries(self, tenant_id: str | None = None) -> int:
        return int(await self._pool.fetchval(
            "SELECT count(*) FROM router.webhook_outbox WHERE $1::text IS NULL OR tenant_id = $1", tenant_id))

    async def prune_routed(self, older_than_days: int = 15) -> str:
        return str(await self._pool.execute(
            "DELETE FROM router.routed WHERE routed_at < now() - make_interval(days => $1)", older_than_days))

    async def load_tenant_model(self, tenant_id: str, fingerprint: str) -> bytes | None:
        value = await self._pool.fetchval(
            "SELECT model FROM router.tenant_models WHERE tenant_id=$1 AND fingerprint=$2",
            tenant_id, fingerprint)
        return bytes(value) if value is not None else None

    async def save_tenant_model(self, tenant_id: str, fingerprint: str, intents: dict[str, Any],
                                model: bytes) -> None:
        await self._pool.execute(
            """INSERT INTO router.tenant_models (tenant_id, fingerprint, intents, model) VALUES ($1,$2,$3,$4)
               ON CONFLICT (tenant_id, fingerprint) DO NOTHING""", tenant_id, fingerprint, intents, model)

    async def delete_tenant_models(self, tenant_id: str, *, keep: str | None) -> None:
        """Drop a tenant's stored models other than ``keep`` (all of them when None)."""
        await self._pool.execute(
            "DELETE FROM router.tenant_models WHERE tenant_id = $1 AND fingerprint IS DISTINCT FROM $2",
            tenant_id, keep)

    async def tenant_intents(self, tenant_id: str | None = None) -> dict[str, dict[str, list[str]]]:
        """Intents added over HTTP: tenant -> intent name -> examples (one tenant, or all)."""
        rows = await self._pool.fetch(
            "SELECT tenant_id, name, examples FROM router.tenant_intents"
            " WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, name", tenant_id)
        out: dict[str, dict[str, list[str]]] = {}
        for r in rows:
            out.setdefault(r["tenant_id"], {})[r["name"]] = [str(x) for x in r["examples"]]
        return out

    async def put_tenant_intent(self, tenant_id: str, name: str, examples: list[str], *,
                                max_intents: int, max_examples: int) -> str | None:
        """Store the intent unless the tenant's quotas would be exceeded (then: why, nothing stored).

        Checked and written under a per-tenant transaction lock, so concurrent requests (on any
        replica) cannot together pass a quota that each passes alone.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('router.tenant_intents:' || $1, 0))",
                               tenant_id)
            row = await conn.fetchrow(
                """SELECT count(*) AS intents, coalesce(sum(jsonb_array_length(examples)), 0) AS examples
                   FROM router.tenant_intents WHERE tenant_id = $1 AND name <> $2""", tenant_id, name)
            assert row is not None  # an aggregate always answers one row
            others, other_examples = int(row["intents"]), int(row["examples"])
            if others + 1 > max_intents:
                return f"the tenant already has {others} intents; at most {max_intents} are allowed"
            if other_examples + len(examples) > max_examples:
                return (f"the tenant's intents would have {other_examples + len(examples)} examples;"
                        f" at most {max_examples} are allowed")
            await conn.execute(
                """INSERT INTO router.tenant_intents (tenant_id, name, examples) VALUES ($1, $2, $3)
                   ON CONFLICT (tenant_id, name) DO UPDATE SET examples = EXCLUDED.examples, updated_at = now()""",
                tenant_id, name, examples)
        return None

    async def delete_tenant_intent(self, tenant_id: str, name: str) -> bool:
        status = await self._pool.execute(
            "DELETE FROM router.tenant_intents WHERE tenant_id = $1 AND name = $2", tenant_id, name)
        return str(status).endswith(" 1")
