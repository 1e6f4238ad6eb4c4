"""The database-backed commands (`ratecard import`, `tiers import`, `invoice`, `reconcile`) on real
PostgreSQL, through the console script's typer app. The CLI reads PARLEY_DATABASE_URL, which the
session's `database_url` fixture points at the session database."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from parley_billing.cli import _tenant_lookup, app
from parley_billing.domain.rates import parse_rate_card
from parley_billing.store import MIGRATIONS, Metering
from parley_common.db import create_pool, migrate
from typer.testing import CliRunner

from .billing_scenario import SEPT_IN_TOTAL, TENANT_BR, TENANT_IN, as_events, import_tenants, september
from .traffic import feed

pytestmark = pytest.mark.infra

runner = CliRunner()
CARD = Path(__file__).parents[2] / "services/billing/parley_billing/data/example_rate_card.csv"
TABLES = ("ledger", "deliveries", "sends", "inbound", "invoice_lines", "invoices", "rate_cards", "tiers")


def _run(coro):
    return asyncio.run(coro)


async def _query(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, "billing", MIGRATIONS)
        await conn.execute("TRUNCATE " + ", ".join(f"billing.{t}" for t in TABLES))
    finally:
        await conn.close()


async def _meter_september(url: str) -> None:
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await import_tenants(conn)
        a, b = september()
        await feed(Metering(pool, await _tenant_lookup(pool)), as_events(a.records + b.records))
    finally:
        await pool.close()


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("PARLEY_DATABASE_URL", database_url)
    monkeypatch.setenv("PARLEY_BILLING_TEST_SECRET", "billing-test-app-secret")
    _run(_reset(database_url))
    yield database_url


def _rate_rows(url: str) -> list[tuple[str, str, Decimal | None]]:
    rows = _run(_query(url, "SELECT effective_from::text d, market, marketing FROM billing.rate_cards ORDER BY 1, 2"))
    return [(r["d"], r["market"], r["marketing"]) for r in rows]


def test_ratecard_import_with_a_bad_row_exits_non_zero_naming_the_line_and_imports_nothing(
        db: str, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["ratecard", "import", str(CARD)])
    assert ok.exit_code == 0, ok.output
    shipped = len(parse_rate_card(CARD.read_text()))
    assert f"imported {shipped} rate row(s) effective from 2024-10-01" in ok.stdout
    before = _rate_rows(db)
    assert len(before) == shipped

    bad = tmp_path / "card.csv"
    bad.write_text("effective_from,market,currency,marketing,utility,authentication,authentication_international,"
                   "service\n"
                   "2026-09-01,India,USD,0.0200,0.0014,0.0014,,\n"  # line 2: fine
                   "2026-09-01,Peru,USD,0.0700,,,,\n"  # line 3: fine
                   "2026-09-01,Brazil,USD,cheap,0.0068,0.0068,,\n")  # line 4: not a price
    result = runner.invoke(app, ["ratecard", "import", str(bad)])
    assert result.exit_code != 0
    assert "line 4: marketing 'cheap' is not a decimal number" in result.stderr
    assert "nothing was imported" in result.stderr
    assert _rate_rows(db) == before  # not even lines 2 and 3

    for text, reason in [
        ("effective_from,market,currency\n2026-09-01,India,USD\n", "line 1: the header must be exactly"),
        (bad.read_text().replace("cheap", "0.05").replace("Peru,USD", "Peru,dollars"),
         "line 3: currency 'dollars' is not an ISO 4217 code"),
        (bad.read_text().replace("cheap", "0.05").replace("2026-09-01,Peru", "2026-09-31,Peru"),
         "line 3: effective_from '2026-09-31' is not a date"),
    ]:
        bad.write_text(text)
        result = runner.invoke(app, ["ratecard", "import", str(bad)])
        assert result.exit_code != 0 and reason in result.stderr, result.stderr
    assert _rate_rows(db) == before
    missing = runner.invoke(app, ["ratecard", "import", str(tmp_path / "nope.csv")])
    assert missing.exit_code != 0 and "No such file" in missing.stderr


def test_a_rate_card_import_reprices_the_ledger_from_its_effective_date(db: str, tmp_path: Path) -> None:
    assert runner.invoke(app, ["ratecard", "import", str(CARD)]).exit_code == 0
    _run(_meter_september(db))
    a1 = "SELECT amount FROM billing.ledger WHERE wamid = 'wamid.a1'"  # India marketing, 2026-09-10
    assert _run(_query(db, a1))[0]["amount"] == Decimal("0.0118")
    card = tmp_path / "sept.csv"
    card.write_text("effective_from,market,currency,marketing,utility,authentication,authentication_international,"
                    "service\n2026-09-05,India,USD,0.0150,0.0014,0.0014,0.0304,\n")
    result = runner.invoke(app, ["ratecard", "import", str(card)])
    assert result.exit_code == 0, result.output
    assert "imported 1 rate row(s) effective from 2026-09-05" in result.stdout
    assert _run(_query(db, a1))[0]["amount"] == Decimal("0.0150")


def test_tiers_import_rejects_overlaps_with_the_line_and_keeps_nothing(db: str, tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.csv"
    header = "effective_from,market,category,from_volume,to_volume,rate\n"
    tiers.write_text(header + "2026-09-01,India,utility,1,100000,0.0014\n2026-09-01,India,utility,100001,,0.0010\n")
    ok = runner.invoke(app, ["tiers", "import", str(tiers)])
    assert ok.exit_code == 0 and "imported 2 tier row(s)" in ok.stdout
    tiers.write_text(header + "2026-10-01,India,utility,1,100000,0.0014\n2026-10-01,India,utility,50000,,0.0010\n")
    bad = runner.invoke(app, ["tiers", "import", str(tiers)])
    assert bad.exit_code != 0 and "line 3: volume range 50000.." in bad.stderr and "overlaps" in bad.stderr
    rows = _run(_query(db, "SELECT effective_from::text d, from_volume FROM billing.tiers ORDER BY 1, 2"))
    assert [(r["d"], r["from_volume"]) for r in rows] == [("2026-09-01", 1), ("2026-09-01", 100001)]


def test_invoice_and_reconcile_commands_report_one_tenant_and_month(db: str) -> None:
    assert runner.invoke(app, ["ratecard", "import", str(CARD)]).exit_code == 0
    _run(_meter_september(db))

    draft = json.loads(runner.invoke(app, ["invoice", "--tenant", TENANT_IN, "--month", "2026-09"]).stdout)
    assert draft["status"] == "draft"  # printing an invoice never finalises the month
    result = runner.invoke(app, ["invoice", "--tenant", TENANT_IN, "--month", "2026-09", "--finalise"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["tenant_id"], doc["status"], doc["time_zone"]) == (TENANT_IN, "final", "Asia/Kolkata")
    assert Decimal(doc["totals"]["USD"]) == SEPT_IN_TOTAL
    assert sum(x["messages"] for x in doc["lines"]) == 5  # a9 is October in India

    result = runner.invoke(app, ["invoice", "--tenant", TENANT_IN, "--month", "2026-09", "--format", "csv"])
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [Decimal(x["amount"]) for x in rows if x["line"] == "total"] == [SEPT_IN_TOTAL]
    assert {x["status"] for x in rows} == {"final"}

    result = runner.invoke(app, ["reconcile", "--tenant", TENANT_IN, "--month", "2026-09"])
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert (rec["messages"], rec["agree"], rec["meta_missing"], rec["disagree"]) == (5, 2, 1, 2)
    br = json.loads(runner.invoke(app, ["reconcile", "--tenant", TENANT_BR, "--month", "2026-09"]).stdout)
    assert (br["tenant_id"], br["messages"], br["agree"]) == (TENANT_BR, 1, 1)

    for args, reason in [
        (["invoice", "--tenant", TENANT_IN, "--month", "2026-13"], "--month '2026-13' must be YYYY-MM"),
        (["invoice", "--tenant", TENANT_IN, "--month", "2026-09", "--format", "xml"], "--format must be json or csv"),
        (["invoice", "--tenant", "nobody", "--month", "2026-09"], "unknown tenant 'nobody'"),
        (["reconcile", "--tenant", TENANT_IN, "--month", "09-2026"], "must be YYYY-MM"),
        (["invoice", "--tenant", TENANT_IN, "--month", "0000-01"], "must be between 2000-01 and 2999-12"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and reason in result.stderr, (args, result.output)
