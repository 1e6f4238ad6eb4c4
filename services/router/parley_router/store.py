"""The router's own tables (schema ``router``): routed wamids, tenant intents, trained tenant models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

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

    async def tenant_intents(self, tenant_id: str | None = None) -> dict[str, dict[str, list[str]]]:
        """Intents added over HTTP: tenant -> intent name -> examples (one tenant, or all)."""
        rows = await self._pool.fetch(
            "SELECT tenant_id, name, examples FROM router.tenant_intents"
            " WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY tenant_id, name", tenant_id)
        out: dict[str, dict[str, list[str]]] = {}
        for r in rows:
            out.setdefault(r["tenant_id"], {})[r["name"]] = [str(x) for x in r["examples"]]
        return out

    async def put_tenant_intent(self, tenant_id: str, name: str, examples: list[str]) -> None:
        await self._pool.execute(
            """INSERT INTO router.tenant_intents (tenant_id, name, examples) VALUES ($1, $2, $3)
               ON CONFLICT (tenant_id, name) DO UPDATE SET examples = EXCLUDED.examples, updated_at = now()""",
            tenant_id, name, examples)

    async def delete_tenant_intent(self, tenant_id: str, name: str) -> bool:
        status = await self._pool.execute(
            "DELETE FROM router.tenant_intents WHERE tenant_id = $1 AND name = $2", tenant_id, name)
        return str(status).endswith(" 1")
