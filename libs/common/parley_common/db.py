"""The asyncpg pool and the migrations runner.

Migrations are plain ordered SQL files per service schema (``NNNN_name.sql``), applied once
each inside a transaction under an advisory lock, and recorded in
``<schema>.schema_migrations``. Why not Alembic or similar: see docs/adr/0003-migrations.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection of its own or one borrowed from a pool: every helper here takes either.
AnyConnection = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger("parley.db")


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection with the same codecs as the pool (json/jsonb as Python objects)."""
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection goes through on its way back to the pool, after asyncpg has rolled back
    any transaction left open: nothing more. asyncpg's default runs ``pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`` each time, a round trip per pooled query (about 5 % of the
    sender's CPU in the soak, and as much again in PostgreSQL), to undo session state Parley never
    leaves behind: no LISTEN, SET, cursors outside transactions or session advisory locks (the
    migrations runner's lock is released in its ``finally``)."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session,
        command_timeout=30, max_inactive_connection_lifetime=300, **kwargs,
    )
    assert pool is not None
    return pool


def _lock_id(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"parley-migrate:{schema}".encode()).digest()[:8], "big", signed=True)


async def migrate(dsn_or_conn: str | AnyConnection, schema: str, directory: Path) -> list[str]:
    """Apply every not yet applied ``*.sql`` file of ``directory`` in name order; returns the applied."""
    conn = await asyncpg.connect(dsn_or_conn) if isinstance(dsn_or_conn, str) else dsn_or_conn
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _lock_id(schema))
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                " version text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"]: r["checksum"] for r in
                    await conn.fetch(f'SELECT version, checksum FROM "{schema}".schema_migrations')}
            for path in sorted(directory.glob("*.sql")):  # noqa: ASYNC240 (a few small files at start-up)
                sql = path.read_text()
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if path.name in done:
                    if done[path.name] != checksum:
                        raise RuntimeError(f"migration {schema}/{path.name} changed after it was applied")
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (version, checksum) VALUES ($1, $2)',
                        path.name, checksum,
                    )
                applied.append(path.name)
                log.info("applied migration", extra={"schema": schema, "migration": path.name})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_id(schema))
    finally:
        if isinstance(dsn_or_conn, str):
            await conn.close()
    return applied
