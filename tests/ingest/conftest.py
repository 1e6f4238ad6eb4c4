"""Ingest's app against the real Kafka and PostgreSQL of the session (tests/conftest.py)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from parley_common.db import migrate
from parley_common.runtime import TENANCY_MIGRATIONS
from parley_common.tenancy.cli import RegistryFile, add_api_key, import_registry

from .ingest_support import REGISTRY, SECRETS


@dataclass
class IngestEnv:
    app: FastAPI
    client: httpx.AsyncClient
    kafka_bootstrap: str
    keys: dict[str, str]  # tenant id → API key


@pytest.fixture(scope="session")
async def ingest_registry(database_url: str) -> dict[str, str]:
    """The test tenants in the session database; returns an API key per tenant."""
    os.environ.update(SECRETS)
    conn = await asyncpg.connect(database_url)
    for typ in ("json", "jsonb"):  # as parley_common.db's pool does
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
        await import_registry(conn, RegistryFile.model_validate(REGISTRY))
        keys = {}
        for t in REGISTRY["tenants"]:
            _, keys[t["tenant_id"]] = await add_api_key(conn, t["tenant_id"], "ingest tests")
        return keys
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def ingest(
    kafka_bootstrap: str, database_url: str, ingest_registry: dict[str, str]
) -> AsyncIterator[IngestEnv]:
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    settings = IngestSettings(
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        api_rate_limit="1000/second",
        produce_timeout_s=10.0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield IngestEnv(app, client, kafka_bootstrap, ingest_registry)
