"""Billing's API against hostile input and against reads that change state, on real PostgreSQL:
impossible months and periods are a 422 naming the problem, and reading an invoice never
finalises a month (finalising is a POST, or ``parley-billing invoice --finalise``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from support.tenancy import import_tenants

pytestmark = pytest.mark.infra

TENANT = "sec-billing"


@pytest.fixture(scope="module")
async def billing(database_url: str) -> AsyncIterator[tuple[FastAPI, dict[str, str]]]:
    from parley_billing.app import create_app
    from parley_billing.settings import BillingSettings
    from parley_common.runtime import start_runtime, stop_runtime

    os.environ["SEC_BILLING_APP_SECRET"] = "sec-billing-app-secret"
    keys = await import_tenants(database_url, {
        "apps": [{"app_id": "app-sec-billing", "app_secret_refs": ["env:SEC_BILLING_APP_SECRET"]}],
        "tenants": [{"tenant_id": TENANT, "name": "Billing input", "app_id": "app-sec-billing",
                     "business_country": "IN", "time_zone": "Asia/Kolkata", "wabas": ["waba-sec-billing"],
                     "phone_numbers": []}]}, keys_for=[TENANT], key_label="sec")
    key = keys[TENANT]
    app = create_app(BillingSettings(database_url=database_url, db_pool_max=4))
    await start_runtime(app.state.runtime, start_broker=False)
    try:
        yield app, {"Authorization": f"Bearer {key}"}
    finally:
        await stop_runtime(app.state.runtime)


@pytest.fixture
async def client(billing: tuple[FastAPI, dict[str, str]]) -> AsyncIterator[httpx.AsyncClient]:
    app, auth = billing
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://billing", headers=auth) as c:
        yield c


async def _finalised_months(app: FastAPI) -> list[str]:
    rows = await app.state.runtime.require_pool().fetch(
        "SELECT month FROM billing.invoices WHERE tenant_id = $1 ORDER BY month", TENANT)
    return [r["month"] for r in rows]


@pytest.mark.parametrize("path", ["/v1/invoices/0000-01", "/v1/invoices/9999-12", "/v1/invoices/0001-01",
                                  "/v1/reconciliation/0000-01", "/v1/reconciliation/9999-12",
                                  "/v1/invoices/0000-01?format=csv"])
async def test_a_month_outside_the_calendar_billing_knows_is_a_422(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 422, r.text
    assert "month" in r.text


@pytest.mark.parametrize("params", [{"from": "9999-12-01", "to": "9999-12-31"},
                                    {"from": "0001-01-01", "to": "0001-01-31"},
                                    {"from": "9999-12-31", "to": "9999-12-31"}])
async def test_a_usage_period_at_the_ends_of_the_calendar_is_a_422(client: httpx.AsyncClient,
                                                                  params: dict[str, str]) -> None:
    r = await client.get("/v1/usage", params=params)
    assert r.status_code == 422, r.text
    assert "year" in r.text


async def test_reading_a_closed_months_invoice_does_not_finalise_it(
        client: httpx.AsyncClient, billing: tuple[FastAPI, dict[str, str]]) -> None:
    app, _ = billing
    r = await client.get("/v1/invoices/2026-01")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "draft"
    assert (await client.get("/v1/invoices/2026-01", params={"format": "csv"})).status_code == 200
    assert "2026-01" not in await _finalised_months(app)


async def test_finalising_is_an_explicit_post_and_is_idempotent(
        client: httpx.AsyncClient, billing: tuple[FastAPI, dict[str, str]]) -> None:
    app, _ = billing
    r = await client.post("/v1/invoices/2026-02/finalise")
    assert r.status_code == 200, r.text
    final = r.json()
    assert final["status"] == "final" and final["finalised_at"]
    assert await _finalised_months(app) == ["2026-02"]
    assert (await client.post("/v1/invoices/2026-02/finalise")).json() == final
    assert (await client.get("/v1/invoices/2026-02")).json() == final


async def test_a_month_that_has_not_ended_cannot_be_finalised(client: httpx.AsyncClient,
                                                             billing: tuple[FastAPI, dict[str, str]]) -> None:
    r = await client.post("/v1/invoices/2999-12/finalise")
    assert r.status_code == 409, r.text
    assert "not closed" in r.json()["detail"]
    assert "2999-12" not in await _finalised_months(billing[0])
