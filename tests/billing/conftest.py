"""Billing test fixtures: the billing schema migrated into the session database, emptied per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from parley_billing.store import MIGRATIONS, Metering, TenantInfo

TABLES = ("ledger", "deliveries", "sends", "inbound", "invoice_lines", "invoices", "rate_cards", "tiers")


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
