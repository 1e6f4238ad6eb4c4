"""The HTTP API on real PostgreSQL, in-process over ASGI: usage, invoices (JSON and CSV, finalised
months frozen, late events as adjustments), reconciliation, estimates, per-tenant auth and errors."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from .billing_scenario import (
    OCT_IN_LIST,
    SEPT_BR_TOTAL,
    SEPT_IN_TOTAL,
    TENANT_BR,
    TENANT_IN,
    as_events,
    late_and_october,
    september,
)
from .traffic import feed

pytestmark = pytest.mark.infra


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _meter_september(app: FastAPI) -> None:
    a, b = september()
    await feed(app.state.metering, as_events(a.records + b.records))


def _sum(lines: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(x["amount"]) for x in lines), Decimal(0))


async def test_usage_is_grouped_per_tenant_in_its_time_zone(client: httpx.AsyncClient, billing_app: FastAPI,
                                                            tenant_keys: dict[str, str]) -> None:
    await _meter_september(billing_app)
    r = await client.get("/v1/usage", params={"from": "2026-09-01", "to": "2026-09-30"},
                         headers=bearer(tenant_keys[TENANT_IN]))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["tenant_id"] == TENANT_IN and doc["time_zone"] == "Asia/Kolkata"
    groups = {(g["market"], g["category"], g["type"]): g for g in doc["groups"]}
    # a9 was delivered 2026-09-30 20:00Z, already October in India: not in September's usage.
    assert set(groups) == {("India", "marketing", "regular"), ("India", "utility", "free_customer_service"),
                           ("India", "service", "free_customer_service"),
                           ("United Kingdom", "authentication", "regular"), ("Brazil", "marketing", "regular")}
    assert groups[("India", "marketing", "regular")] == {
        "market": "India", "category": "marketing", "type": "regular", "pricing_model": "PMP", "currency": "USD",
        "rules": "PMP-2026-08", "messages": 1, "billable": 1, "unpriced": 0, "per_token": 0,
        "list_amount": "0.01180000", "amount": "0.01180000"}
    assert groups[("India", "utility", "free_customer_service")]["billable"] == 0
    assert sum(Decimal(g["list_amount"]) for g in doc["groups"]) == SEPT_IN_TOTAL
    # One day later in the period takes in a9.
    r = await client.get("/v1/usage", params={"from": "2026-09-01", "to": "2026-10-01"},
                         headers=bearer(tenant_keys[TENANT_IN]))
    assert sum(Decimal(g["list_amount"]) for g in r.json()["groups"]) == SEPT_IN_TOTAL + OCT_IN_LIST

    # The other tenant sees its own message only, never tenant IN's.
    r = await client.get("/v1/usage", params={"from": "2026-09-01", "to": "2026-10-31"},
                         headers=bearer(tenant_keys[TENANT_BR]))
    doc = r.json()
    assert doc["tenant_id"] == TENANT_BR and doc["time_zone"] == "America/Sao_Paulo"
    assert [(g["market"], g["category"], g["messages"], Decimal(g["list_amount"])) for g in doc["groups"]] == [
        ("Brazil", "marketing", 1, SEPT_BR_TOTAL)]


async def test_finalised_invoice_never_changes_and_late_events_are_adjusted_next_month(
        client: httpx.AsyncClient, billing_app: FastAPI, tenant_keys: dict[str, str]) -> None:
    await _meter_september(billing_app)
    key = bearer(tenant_keys[TENANT_IN])
    r = await client.post("/v1/invoices/2026-09/finalise", headers=key)  # reading never finalises
    assert r.status_code == 200, r.text
    sept = r.json()
    assert sept["status"] == "final" and sept["finalised_at"] and sept["adjustments"] == []
    assert Decimal(sept["totals"]["USD"]) == SEPT_IN_TOTAL == _sum(sept["lines"])
    assert {(x["market"], x["category"], x["type"], x["messages"]) for x in sept["lines"]} == {
        ("India", "marketing", "regular", 1), ("India", "utility", "free_customer_service", 1),
        ("India", "service", "free_customer_service", 1), ("United Kingdom", "authentication", "regular", 1),
        ("Brazil", "marketing", "regular", 1)}

    # A September message arrives after September was finalised, and an October one.
    await feed(billing_app.state.metering, as_events(late_and_october().records))
    again = (await client.get("/v1/invoices/2026-09", headers=key)).json()
    assert again == sept  # frozen: same lines, totals and finalisation time

    october = (await client.post("/v1/invoices/2026-10/finalise", headers=key)).json()
    assert october["status"] == "final"
    assert [(x["for_month"], x["market"], x["category"], x["type"], x["messages"], Decimal(x["amount"]))
            for x in october["adjustments"]] == [("2026-09", "India", "marketing", "regular", 1, Decimal("0.0118"))]
    assert {(x["category"], x["messages"], Decimal(x["amount"])) for x in october["lines"]} == {
        ("marketing", 1, Decimal("0.0118")), ("utility", 1, OCT_IN_LIST)}  # a8, and a9 (October in IST)
    assert Decimal(october["totals"]["USD"]) == Decimal("0.0118") + Decimal("0.0118") + OCT_IN_LIST
    # The adjustment is made once: asking again (or for a later month) does not repeat it.
    assert (await client.get("/v1/invoices/2026-10", headers=key)).json() == october
    november = (await client.get("/v1/invoices/2026-11", headers=key)).json()
    assert november["status"] == "draft" and november["adjustments"] == [] and november["lines"] == []

    # The CSV is the same invoice: ?format=csv, or Accept: text/csv.
    for r in (await client.get("/v1/invoices/2026-10", params={"format": "csv"}, headers=key),
              await client.get("/v1/invoices/2026-10", headers={**key, "Accept": "text/csv"})):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert {x["line"] for x in rows} == {"charge", "adjustment", "total"}
        assert [(x["for_month"], Decimal(x["amount"])) for x in rows if x["line"] == "adjustment"] == [
            ("2026-09", Decimal("0.0118"))]
        assert sum(Decimal(x["amount"]) for x in rows if x["line"] != "total") == \
            Decimal(next(x["amount"] for x in rows if x["line"] == "total")) == Decimal(october["totals"]["USD"])
        assert {x["tenant_id"] for x in rows} == {TENANT_IN}

    # Tenant BR's September invoice holds its own message only.
    br = (await client.post("/v1/invoices/2026-09/finalise", headers=bearer(tenant_keys[TENANT_BR]))).json()
    assert br["tenant_id"] == TENANT_BR and br["time_zone"] == "America/Sao_Paulo"
    assert [(x["market"], x["messages"]) for x in br["lines"]] == [("Brazil", 1)]
    assert Decimal(br["totals"]["USD"]) == SEPT_BR_TOTAL


async def test_reconciliation_reports_where_parley_and_meta_disagree(
        client: httpx.AsyncClient, billing_app: FastAPI, tenant_keys: dict[str, str]) -> None:
    await _meter_september(billing_app)
    r = await client.get("/v1/reconciliation/2026-09", headers=bearer(tenant_keys[TENANT_IN]))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["tenant_id"], doc["messages"], doc["agree"], doc["meta_missing"], doc["disagree"]) == (
        TENANT_IN, 5, 2, 1, 2)
    diffs = {(d["kind"], d["parley"]["category"], d["meta"]["category"]): d for d in doc["differences"]}
    # a2: a utility template in the customer's window is free; Meta charged it.
    assert diffs[("differs", "utility", "utility")] == {
        "parley": {"billable": False, "type": "free_customer_service", "category": "utility"},
        "meta": {"billable": True, "type": "regular", "category": "utility"}, "kind": "differs",
        "reason": "Meta charges, Parley does not", "messages": 1, "parley_amount": "0"}
    # a5: Parley's send record says marketing, Meta's status says utility.
    assert diffs[("differs", "marketing", "utility")]["messages"] == 1
    assert Decimal(diffs[("differs", "marketing", "utility")]["parley_amount"]) == Decimal("0.0625")
    # a3: Meta sent no pricing object.
    missing = diffs[("meta pricing missing", "authentication", None)]
    assert missing["messages"] == 1 and Decimal(missing["parley_amount"]) == Decimal("0.022")

    br = (await client.get("/v1/reconciliation/2026-09", headers=bearer(tenant_keys[TENANT_BR]))).json()
    assert (br["tenant_id"], br["messages"], br["agree"], br["differences"]) == (TENANT_BR, 1, 1, [])


async def test_estimates_price_a_campaign_at_list_rates_for_the_tenants_country(
        client: httpx.AsyncClient, tenant_keys: dict[str, str]) -> None:
    body = {"send_on": "2026-12-01", "items": [
        {"country": "IN", "category": "marketing", "recipients": 1000},
        {"country": "gb", "category": "authentication", "recipients": 10},
        {"country": "IN", "category": "authentication", "recipients": 100}]}
    r = await client.post("/v1/estimates", json=body, headers=bearer(tenant_keys[TENANT_IN]))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model"] == "PMP" and doc["send_on"] == "2026-12-01"
    assert [(x["country"], x["market"], x["category"], Decimal(x["unit_price"]), Decimal(x["amount"]))
            for x in doc["lines"]] == [
        ("IN", "India", "marketing", Decimal("0.0118"), Decimal("11.8")),
        ("GB", "United Kingdom", "authentication", Decimal("0.022"), Decimal("0.22")),  # no international rate
        ("IN", "India", "authentication", Decimal("0.0014"), Decimal("0.14"))]
    assert Decimal(doc["totals"]["USD"]) == Decimal("12.16")
    # From a Brazilian business, authentication to India is international.
    r = await client.post("/v1/estimates", json={"send_on": "2026-12-01", "items": [body["items"][2]]},
                          headers=bearer(tenant_keys[TENANT_BR]))
    line = r.json()["lines"][0]
    assert (line["category"], Decimal(line["amount"])) == ("authentication-international", Decimal("3.04"))
    # Before 2025-07-01 the estimate says it is priced by conversation-based pricing.
    r = await client.post("/v1/estimates", json={"send_on": "2025-03-01", "items": [body["items"][0]]},
                          headers=bearer(tenant_keys[TENANT_IN]))
    assert r.json()["model"] == "CBP" and Decimal(r.json()["lines"][0]["unit_price"]) == Decimal("0.0107")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/usage?from=2026-09-01&to=2026-09-30"), ("GET", "/v1/invoices/2026-09"),
    ("GET", "/v1/invoices/2026-09?format=csv"), ("GET", "/v1/reconciliation/2026-09"), ("POST", "/v1/estimates"),
    ("POST", "/v1/invoices/2026-09/finalise")])
async def test_every_route_needs_a_valid_tenant_key(client: httpx.AsyncClient, tenant_keys: dict[str, str],
                                                    method: str, path: str) -> None:
    body = {"items": [{"country": "IN", "category": "marketing", "recipients": 1}]}
    for headers in ({}, bearer("not-a-key"), bearer(tenant_keys[TENANT_IN] + "x"),
                    {"Authorization": f"Basic {tenant_keys[TENANT_IN]}"}, {"Authorization": "Bearer "}):
        r = await client.request(method, path, headers=headers, json=body if path == "/v1/estimates" else None)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    ok = await client.request(method, path, headers=bearer(tenant_keys[TENANT_IN]),
                              json=body if path == "/v1/estimates" else None)
    assert ok.status_code == 200, ok.text


def _errors(r: httpx.Response) -> list[tuple[tuple[str, ...], str]]:
    assert r.status_code == 422, r.text
    return [(tuple(str(x) for x in e["loc"]), e["msg"]) for e in r.json()["detail"]]


@pytest.mark.parametrize(("path", "loc", "reason"), [
    ("/v1/invoices/2026-13", ("path", "month"), "pattern"),
    ("/v1/invoices/sept", ("path", "month"), "pattern"),
    ("/v1/invoices/2026-09?format=xml", ("query", "format"), "pattern"),
    ("/v1/reconciliation/26-09", ("path", "month"), "pattern"),
    ("/v1/usage?from=2026-09-31&to=2026-10-01", ("query", "from"), "date"),
    ("/v1/usage?from=yesterday&to=2026-10-01", ("query", "from"), "date"),
    ("/v1/usage?to=2026-10-01", ("query", "from"), "required"),
    ("/v1/usage?from=2026-10-02&to=2026-10-01", ("query", "to"), "before 'from'"),
    ("/v1/usage?from=2020-01-01&to=2026-10-01", ("query", "to"), "longer than 400 days"),
])
async def test_bad_months_and_dates_are_422_naming_the_field(client: httpx.AsyncClient,
                                                              tenant_keys: dict[str, str], path: str,
                                                              loc: tuple[str, ...], reason: str) -> None:
    errors = _errors(await client.get(path, headers=bearer(tenant_keys[TENANT_IN])))
    assert any(e_loc == loc and reason in msg for e_loc, msg in errors), errors


@pytest.mark.parametrize(("body", "loc", "reason"), [
    ({"items": []}, ("body", "items"), "at least 1"),
    ({}, ("body", "items"), "required"),
    ({"items": [{"country": "XX", "category": "marketing", "recipients": 5}]},
     ("body", "items", "0", "country"), "not a country"),
    ({"items": [{"country": "India", "category": "marketing", "recipients": 5}]},
     ("body", "items", "0", "country"), "pattern"),
    ({"items": [{"country": "IN", "category": "promotion", "recipients": 5}]},
     ("body", "items", "0", "category"), "pattern"),
    ({"items": [{"country": "IN", "category": "utility", "recipients": -1}]},
     ("body", "items", "0", "recipients"), "greater than or equal to 0"),
    ({"send_on": "2026-02-30", "items": [{"country": "IN", "category": "utility", "recipients": 1}]},
     ("body", "send_on"), "date"),
])
async def test_bad_estimate_bodies_are_422_naming_the_field(client: httpx.AsyncClient,
                                                            tenant_keys: dict[str, str], body: dict[str, Any],
                                                            loc: tuple[str, ...], reason: str) -> None:
    errors = _errors(await client.post("/v1/estimates", json=body, headers=bearer(tenant_keys[TENANT_IN])))
    assert any(e_loc == loc and reason in msg for e_loc, msg in errors), errors


async def test_an_estimate_body_that_is_not_json_is_422(client: httpx.AsyncClient,
                                                         tenant_keys: dict[str, str]) -> None:
    r = await client.post("/v1/estimates", content=b"{not json",
                          headers={**bearer(tenant_keys[TENANT_IN]), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


async def test_usage_shows_what_will_be_invoiced_with_volume_tiers_applied_and_unpriced_lines_counted(
        client: httpx.AsyncClient, billing_app: FastAPI, billing_pool: Any, tenant_keys: dict[str, str]) -> None:
    from parley_billing.ratecards import import_rate_card, import_tiers

    from .billing_scenario import C_IN, PN_IN, WABA_IN, Builder, meta

    async with billing_pool.acquire() as conn:
        await import_tiers(conn, "effective_from,market,category,from_volume,to_volume,rate\n"
                                 "2026-10-01,India,utility,1,1,0.0014\n2026-10-01,India,utility,2,,0.0010\n")
        # Turkey has no service rate on this card: a charged reply there is unpriced, never 0.
        await import_rate_card(conn, "effective_from,market,currency,marketing,utility,authentication,"
                                     "authentication_international,service\n2026-11-01,Turkey,USD,0.0109,0.0009,"
                                     "0.0009,,\n")
    b = Builder(TENANT_IN, PN_IN, WABA_IN)
    b.outbound("wamid.t1", C_IN, "2026-11-03T10:00:00", category="utility", pricing=meta(True, "regular", "utility"))
    b.outbound("wamid.t2", C_IN, "2026-11-25T10:00:00", category="utility", pricing=meta(True, "regular", "utility"))
    b.inbound("wamid.tr-in", "905321234567", "2026-11-04T09:00:00")
    b.outbound("wamid.tr", "905321234567", "2026-11-04T09:10:00", category=None,
               pricing=meta(True, "regular", "service"))
    await feed(billing_app.state.metering, as_events(b.records))
    r = await client.get("/v1/usage", params={"from": "2026-11-20", "to": "2026-11-30"},
                         headers=bearer(tenant_keys[TENANT_IN]))
    assert r.status_code == 200, r.text
    [group] = r.json()["groups"]  # t2 only: the second charged utility message of November in India
    assert (group["category"], Decimal(group["list_amount"]), Decimal(group["amount"])) == (
        "utility", Decimal("0.0014"), Decimal("0.0010"))
    november = (await client.get("/v1/usage", params={"from": "2026-11-01", "to": "2026-11-30"},
                                 headers=bearer(tenant_keys[TENANT_IN]))).json()["groups"]
    by_cat = {g["category"]: g for g in november}
    assert Decimal(by_cat["utility"]["amount"]) == Decimal("0.0024")
    assert (by_cat["service"]["market"], by_cat["service"]["billable"], by_cat["service"]["unpriced"],
            Decimal(by_cat["service"]["amount"])) == ("Turkey", 1, 1, 0)
    invoice = (await client.get("/v1/invoices/2026-11", headers=bearer(tenant_keys[TENANT_IN]))).json()
    assert sum(Decimal(x["amount"]) for x in invoice["lines"]) == Decimal("0.0024")
    assert [x["unpriced"] for x in invoice["lines"] if x["category"] == "service"] == [1]


async def test_estimates_use_the_rules_of_the_send_date_replies_in_windows_included(
        client: httpx.AsyncClient, tenant_keys: dict[str, str]) -> None:
    items = [{"country": "IN", "category": "service", "recipients": 1000},
             {"country": "IN", "category": "utility", "recipients": 100, "in_service_window": True}]
    key = bearer(tenant_keys[TENANT_IN])
    sept = (await client.post("/v1/estimates", json={"send_on": "2026-09-30", "items": items}, headers=key)).json()
    assert sept["rules"]["name"] == "PMP-2026-08" and sept["totals"] == {"USD": "0"}
    assert [(x["type"], x["billable"]) for x in sept["lines"]] == [("free_customer_service", False)] * 2
    octo = (await client.post("/v1/estimates", json={"send_on": "2026-10-01", "items": items}, headers=key)).json()
    assert octo["rules"]["name"] == "PMP-2026-10"
    assert [(x["type"], x["billable"], Decimal(x["amount"])) for x in octo["lines"]] == [
        ("regular", True, Decimal("1.4")), ("regular", True, Decimal("0.14"))]
    # Without send_on the billing app's clock gives the day (2026-11-20 in these tests).
    today = (await client.post("/v1/estimates", json={"items": items}, headers=key)).json()
    assert (today["send_on"], today["rules"]["name"]) == ("2026-11-20", "PMP-2026-10")
