"""``parley-billing``: run the service, rate offline, import rate cards and tiers, invoice, reconcile.

    parley-billing run
    parley-billing rate --rate-card FILE [--tiers FILE] --webhooks FILE [--sends FILE] --business-country CC
    parley-billing ratecard import FILE
    parley-billing tiers import FILE
    parley-billing invoice --tenant T --month YYYY-MM [--format json|csv] [--finalise]
    parley-billing reconcile --tenant T --month YYYY-MM
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import orjson
import typer
from parley_common.db import AnyConnection

from parley_billing.domain.rates import RateBook, RateFileError, TierBook, parse_rate_card, parse_tiers
from parley_billing.settings import BillingSettings

app = typer.Typer(help="Parley billing: metering, pricing, invoices, reconciliation.", no_args_is_help=True)
ratecard = typer.Typer(help="Rate cards (versioned by effective date).", no_args_is_help=True)
tiers_app = typer.Typer(help="Monthly volume tier tables.", no_args_is_help=True)
app.add_typer(ratecard, name="ratecard")
app.add_typer(tiers_app, name="tiers")

T = TypeVar("T")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{what} {path}: {getattr(exc, 'strerror', None) or exc}")
        raise


@app.command()
def run() -> None:
    """Start the billing service (HTTP on PARLEY_BILLING_HTTP_PORT, default 8084)."""
    from parley_common.runtime import serve

    from parley_billing.app import create_app

    settings = BillingSettings()
    serve(create_app(settings), settings)


@app.command()
def rate(
    rate_card: Annotated[Path, typer.Option("--rate-card", help="rate card CSV")],
    webhooks: Annotated[Path, typer.Option("--webhooks", help="JSON Lines of raw Meta webhook payloads")],
    business_country: Annotated[str, typer.Option("--business-country", help="ISO 3166-1 alpha-2")],
    tiers: Annotated[Path | None, typer.Option("--tiers", help="volume tier CSV")] = None,
    sends: Annotated[Path | None, typer.Option("--sends", help="JSON Lines of SendResult records")] = None,
    time_zone: Annotated[str, typer.Option("--time-zone", help="the business's time zone (monthly tiers)")] = "UTC",
) -> None:
    """Price delivered outbound messages offline: one JSON line each, then a summary line."""
    from parley_billing.rater import RaterInputError, message_line, read_inputs, summary
    from parley_billing.rater import rate as rate_messages

    country = business_country.strip().upper()
    if len(country) != 2 or not country.isalpha():
        _fail(f"--business-country {business_country!r} is not an ISO 3166-1 alpha-2 code")
    try:
        tz = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        _fail(f"--time-zone {time_zone!r} is not a known time zone")
        raise
    try:
        book = RateBook(parse_rate_card(_read(rate_card, "rate card")))
    except RateFileError as exc:
        _fail(f"rate card {rate_card}: {exc}")
        raise
    tier_book = None
    if tiers is not None:
        try:
            tier_book = TierBook(parse_tiers(_read(tiers, "tier table")))
        except RateFileError as exc:
            _fail(f"tier table {tiers}: {exc}")
            raise
    try:
        with webhooks.open("rb") as wh:
            if sends is not None:
                with sends.open("rb") as sf:
                    inputs = read_inputs(wh, sf, webhooks_name=str(webhooks), sends_name=str(sends))
            else:
                inputs = read_inputs(wh, webhooks_name=str(webhooks))
    except OSError as exc:
        _fail(f"{exc.filename}: {exc.strerror}")
        raise
    except RaterInputError as exc:
        _fail(str(exc))
        raise
    priced = sorted(rate_messages(inputs, rates=book, tiers=tier_book, business_country=country, tz=tz),
                    key=lambda p: (p.delivered_at, p.wamid))
    out = sys.stdout.buffer
    for p in priced:
        out.write(orjson.dumps(message_line(p)) + b"\n")
    out.write(orjson.dumps(summary(priced)) + b"\n")
    out.flush()


async def _with_conn(fn: Callable[[AnyConnection], Awaitable[T]]) -> T:
    from parley_common.db import migrate

    from parley_billing.store import MIGRATIONS

    try:
        conn = await asyncpg.connect(BillingSettings().database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"cannot reach PostgreSQL: {exc}")
        raise
    try:
        await migrate(conn, "billing", MIGRATIONS)
        return await fn(conn)
    finally:
        await conn.close()


async def _reprice_after_import(since: Any) -> int:
    from parley_common.db import create_pool

    from parley_billing.store import Metering

    settings = BillingSettings()
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        lookup = await _tenant_lookup(pool)
        return await Metering(pool, lookup).reprice_since(datetime.combine(since, time(), UTC) - timedelta(days=1))
    finally:
        await pool.close()


async def _tenant_lookup(pool: asyncpg.Pool) -> Any:
    from parley_common.tenancy.directory import TenantDirectory

    from parley_billing.store import tenant_lookup

    try:
        directory = await TenantDirectory.load(pool)
    except asyncpg.UndefinedTableError:
        directory = TenantDirectory()
    return tenant_lookup(lambda: directory)


@ratecard.command("import")
def ratecard_import(path: Path) -> None:
    """Import a rate card CSV (one transaction; a bad row rejects the file), then re-price."""
    from parley_billing.ratecards import import_rate_card

    text = _read(path, "rate card")
    try:
        n, since = asyncio.run(_with_conn(lambda c: import_rate_card(c, text)))
    except RateFileError as exc:
        _fail(f"{path}: {exc}; nothing was imported")
        return
    repriced = asyncio.run(_reprice_after_import(since))
    typer.echo(f"imported {n} rate row(s) effective from {since}; {repriced} ledger row(s) re-priced")


@tiers_app.command("import")
def tiers_import(path: Path) -> None:
    """Import a volume tier CSV (one transaction; a bad row rejects the file)."""
    from parley_billing.ratecards import import_tiers

    text = _read(path, "tier table")
    try:
        n, since = asyncio.run(_with_conn(lambda c: import_tiers(c, text)))
    except RateFileError as exc:
        _fail(f"{path}: {exc}; nothing was imported")
        return
    typer.echo(f"imported {n} tier row(s) effective from {since} (applied when invoices are computed)")


def _month(month: str) -> str:
    from parley_billing.api import month_problem

    problem = month_problem(month)
    if problem is not None:
        _fail(f"--month {month!r} {problem}")
    return month


async def _tenant_report(tenant_id: str, fn: Callable[..., Awaitable[dict[str, Any]]], **kw: Any) -> dict[str, Any]:
    from parley_common.db import create_pool, migrate

    from parley_billing.store import MIGRATIONS, RateCache

    settings = BillingSettings()
    try:
        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"cannot reach PostgreSQL: {exc}")
        raise
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "billing", MIGRATIONS)
        lookup = await _tenant_lookup(pool)
        info = lookup(tenant_id, "")
        if info.country is None:
            _fail(f"unknown tenant {tenant_id!r}")
        cache = RateCache()
        await cache.refresh_from_pool(pool)
        return await fn(pool, info, tiers=cache.tiers, **kw)
    finally:
        await pool.close()


@app.command()
def invoice(tenant: str = typer.Option(..., "--tenant"), month: str = typer.Option(..., "--month"),
            fmt: str = typer.Option("json", "--format", help="json or csv"),
            finalise: bool = typer.Option(False, "--finalise", help="freeze the month if it has closed")) -> None:
    """Print a tenant's invoice for a month (a draft unless it was, or with --finalise is, finalised)."""
    from parley_billing import invoicing

    if fmt not in ("json", "csv"):
        _fail("--format must be json or csv")
    settings = BillingSettings()
    doc = asyncio.run(_tenant_report(tenant, invoicing.invoice, month=_month(month), now=datetime.now(UTC),
                                     grace=timedelta(hours=settings.finalise_grace_hours), finalise=finalise))
    if finalise and doc["status"] != "final":
        _fail(f"month {month} is not closed yet; nothing was finalised")
    typer.echo(invoicing.invoice_csv(doc) if fmt == "csv" else json.dumps(doc, indent=2))


@app.command()
def reconcile(tenant: str = typer.Option(..., "--tenant"), month: str = typer.Option(..., "--month")) -> None:
    """Where Parley's pricing and Meta's pricing objects disagree, for a tenant and month."""
    from parley_billing import invoicing

    doc = asyncio.run(_tenant_report(tenant, invoicing.reconciliation, month=_month(month)))
    typer.echo(json.dumps(doc, indent=2))


def main() -> None:
    app(prog_name="parley-billing")


if __name__ == "__main__":
    main()
