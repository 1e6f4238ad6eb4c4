"""Ingest's app against the real Kafka and PostgreSQL of the session (tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from support.tenancy import import_tenants

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
    return await import_tenants(database_url, REGISTRY, keys_for=[t["tenant_id"] for t in REGISTRY["tenants"]],
                                 key_label="ingest tests")


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
