"""Ingest's own schema: idempotency keys of the send API (``ingest.idempotency_keys``) and the
per-tenant request counts behind its rate limits (``ingest.rate_windows``).

``reserve`` is one atomic upsert: it claims a fresh key, or takes over a key whose answer is
older than the TTL (or whose first request died in flight), else returns the stored row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class StoredAnswer:
    request_hash: str
    status_code: int | None  # None: the first request is still in flight
    response: Any


class IdempotencyStore:
    def __init__(self, pool: Callable[[], asyncpg.Pool], *, ttl_hours: int, stale_in_flight_s: int = 120) -> None:
        self._pool_of = pool  # the runtime's pool, opened when the service starts
        self._ttl_hours = ttl_hours
        self._stale_s = stale_in_flight_s

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._pool_of()

    async def reserve(self, tenant_id: str, key: str, request_hash: str) -> StoredAnswer | None:
        """None when this request now owns the key; else what the key already holds."""
        async with self._pool.acquire() as conn:
            claimed = await conn.fetchval(
                """INSERT INTO ingest.idempotency_keys (tenant_id, idem_key, request_hash)
                   VALUES ($1, $2, $3)
                   ON CONFLICT (tenant_id, idem_key) DO UPDATE
                     SET request_hash = EXCLUDED.request_hash, status_code = NULL, response = NULL,
                         created_at = now()
                     WHERE ingest.idempotency_keys.created_at < now() - make_interval(hours => $4)
                        OR (ingest.idempotency_keys.status_code IS NULL
                            AND ingest.idempotency_keys.created_at < now() - make_interval(secs => $5))
                   RETURNING true""",
                tenant_id,
                key,
                request_hash,
                self._ttl_hours,
                float(self._stale_s),
            )
            if claimed:
                return None
            row = await conn.fetchrow(
                "SELECT request_hash, status_code, response FROM ingest.idempotency_keys "
                "WHERE tenant_id = $1 AND idem_key = $2",
                tenant_id,
                key,
            )
        if row is None:  # expired and deleted between the two statements: claim again
            return await self.reserve(tenant_id, key, request_hash)
        return StoredAnswer(row["request_hash"], row["status_code"], row["response"])

    async def complete(self, tenant_id: str, key: str, status_code: int, response: Any) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE ingest.idempotency_keys SET status_code = $3, response = $4 "
                "WHERE tenant_id = $1 AND idem_key = $2",
                tenant_id,
                key,
                status_code,
                response,
            )

    async def release(self, tenant_id: str, key: str) -> None:
        """Forget an in-flight claim whose request failed, so a retry may run."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM ingest.idempotency_keys WHERE tenant_id = $1 AND idem_key = $2 "
                "AND status_code IS NULL",
                tenant_id,
                key,
            )

    async def purge_expired(self) -> int:
        async with self._pool.acquire() as conn:
            result = await conn.execute(
                "DELETE FROM ingest.idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
                self._ttl_hours,
            )
        return int(result.split()[-1])


class RateWindows:
    """Per-tenant request counts in fixed windows, in PostgreSQL so that a limit holds across every
    ingest replica. ``take`` is one statement: it counts the request only if the sliding-window
    estimate (the previous window's count, weighted by how much of it still overlaps the last
    ``window_s`` seconds, plus the current window's) stays within ``limit``."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool_of = pool

    @property
    def _pool(self) -> asyncpg.Pool:
        return self._pool_of()

    async def take(self, tenant_id: str, limit: int, window_s: int, now: float) -> bool:
        start = int(now) // window_s * window_s
        overlap = 1.0 - (now - start) / window_s
        async with self._pool.acquire() as conn:
            taken = await conn.fetchval(
                """WITH prev AS (
                       SELECT coalesce((SELECT hits FROM ingest.rate_windows
                                        WHERE tenant_id = $1 AND window_s = $2 AND window_start = $3 - $2), 0)
                              * $4::float8 AS weighted)
                   INSERT INTO ingest.rate_windows AS w (tenant_id, window_s, window_start, hits)
                   SELECT $1, $2, $3, 1 FROM prev WHERE prev.weighted + 1 <= $5
                   ON CONFLICT (tenant_id, window_s, window_start) DO UPDATE SET hits = w.hits + 1
                   WHERE (SELECT weighted FROM prev) + w.hits + 1 <= $5
                   RETURNING hits""",
                tenant_id, window_s, start, overlap, limit)
        return taken is not None

    async def purge(self, now: float) -> int:
        async with self._pool.acquire() as conn:
            result = await conn.execute(
                "DELETE FROM ingest.rate_windows WHERE window_start < $1::bigint - 2 * window_s", int(now))
        return int(result.split()[-1])
