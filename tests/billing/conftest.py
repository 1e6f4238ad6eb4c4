"""Billing test fixtures: the billing schema migrated into the session database, emptied per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from parley_billing.store import MIGRATIONS, Metering, TenantInfo

TABLES = ("ledger", "deliveries", "sends", "inbound", "invoice_lines", "invoices", "rate_cards", "tiers",
          "contacts", "tier_updates", "contact_aliases")


def tenant_lookup(tenant_id: str | None, phone_number_id: str) -> TenantInfo:
    if tenant_id == "acme":
        return TenantInfo("acme", "IN", ZoneInfo("Asia/Kolkata"))
    return TenantInfo(tenant_id, None, ZoneInfo("UTC"))


@pytest.fixture
async def billing_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    from parley_common.db import create_pool, migrate

    pool = await create_pool(database_url, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, "billing", MIGRATIONS)
        await conn.execute("TRUNCATE " + ", ".join(f"billing.{t}" for t in TABLES))
    yield pool
    await pool.close()


@pytest.fixture
async def metering(billing_pool: asyncpg.Pool) -> Metering:
    return Metering(billing_pool, tenant_lookup)


@pytest.fixture
async def tenant_keys(billing_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The scenario's two tenants in the registry and an API key each; the example rate card loaded."""
    from .billing_scenario import import_example_rates, import_tenants

    monkeypatch.setenv("PARLEY_BILLING_TEST_SECRET", "billing-test-app-secret")
    async with billing_pool.acquire() as conn:
        keys = await import_tenants(conn)
        await import_example_rates(conn)
    return keys


@pytest.fixture
async def billing_app(tenant_keys: dict[str, str], database_url: str) -> AsyncIterator[FastAPI]:
    """The billing app in-process with its runtime started (pool, migrations, tenant directory)
    but not its Kafka consumers: the HTTP API needs only PostgreSQL."""
    from parley_billing.app import create_app
    from parley_billing.settings import BillingSettings
    from parley_common.runtime import start_runtime, stop_runtime

    from .billing_scenario import NOW

    app = create_app(BillingSettings(database_url=database_url, db_pool_max=4), clock=lambda: NOW)
    rt = app.state.runtime
    await start_runtime(rt, start_broker=False)
    try:
        yield app
    finally:
        await stop_runtime(rt)


@pytest.fixture
async def client(billing_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=billing_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://billing") as c:
        yield c
