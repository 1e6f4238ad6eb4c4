"""A tenant's send-API rate limit holds across ingest replicas: two ingest apps (each its own
pool, directory and producer) on one PostgreSQL, hammered at once, accept no more in all than the
tenant's limit (``ingest.rate_windows``, one atomic statement per request)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from support.tenancy import import_tenants

from .ingest_support import APP_2

pytestmark = pytest.mark.infra
LIMIT = 12
TENANT = "ingest-flood"


@pytest.fixture(scope="module")
async def flood_key(database_url: str, ingest_registry: dict[str, str]) -> str:
    keys = await import_tenants(database_url, {"tenants": [{
        "tenant_id": TENANT, "name": "Flood", "app_id": APP_2, "business_country": "GB",
        "time_zone": "Europe/London", "wabas": ["880000000199"],
        "settings": {"ingest_rate_limit": f"{LIMIT}/hour"},
        "phone_numbers": [{"phone_number_id": "880000000099", "display_phone_number": "15550100099",
                           "waba_id": "880000000199"}]}]}, keys_for=[TENANT], key_label="flood")
    return keys[TENANT]


@pytest.fixture
async def replicas(kafka_bootstrap: str, database_url: str, flood_key: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two ingest replicas, started after the tenant exists (both know its key at once)."""
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    async with AsyncExitStack() as stack:
        clients = []
        for i in range(2):
            app = create_app(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url))
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients.append(await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://replica-{i}", timeout=60)))
        yield clients


async def test_two_replicas_hammered_at_once_accept_no_more_than_the_tenants_limit(
    replicas: list[httpx.AsyncClient], flood_key: str
) -> None:
    headers = {"Authorization": f"Bearer {flood_key}"}

    async def one(i: int) -> int:
        # An empty body passes the rate limit and is then refused (422) without touching Kafka.
        return (await replicas[i % 2].post("/v1/messages", headers=headers, json={})).status_code

    codes = Counter(await asyncio.gather(*(one(i) for i in range(4 * LIMIT))))
    assert set(codes) <= {422, 429}, codes  # the key was known to both: nothing refused as unknown
    assert codes[422] == LIMIT, codes  # counted once for the tenant, whichever replica took it
    assert codes[429] == 3 * LIMIT
