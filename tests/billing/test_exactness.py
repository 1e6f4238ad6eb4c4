"""Exactness on real PostgreSQL: duplicates, shuffling, late events and replays change nothing."""

from __future__ import annotations

from importlib import resources

import asyncpg
import pytest
from parley_billing.store import Metering, ledger_fingerprint, ledger_totals

from .traffic import chaos, feed, generate

pytestmark = pytest.mark.infra

TABLES = "billing.ledger, billing.deliveries, billing.sends, billing.inbound"


async def _import_example_rates(pool: asyncpg.Pool) -> None:
    from parley_billing.ratecards import import_rate_card

    text = resources.files("parley_billing.data").joinpath("example_rate_card.csv").read_text()
    async with pool.acquire() as conn:
        await import_rate_card(conn, text)


async def test_replayed_shuffled_duplicated_late_stream_gives_exactly_the_clean_totals(
        metering: Metering, billing_pool: asyncpg.Pool) -> None:
    await _import_example_rates(billing_pool)
    events = generate(customers=400, messages_per_customer=6)
    await feed(metering, events, batch=500)
    clean_totals = await ledger_totals(billing_pool)
    clean = await ledger_fingerprint(billing_pool)
    assert clean_totals["billable"] > 100 and clean_totals["amount"] > 0

    await billing_pool.execute(f"TRUNCATE {TABLES}")
    await feed(metering, chaos(events), batch=500)
    assert await ledger_totals(billing_pool) == clean_totals
    assert await ledger_fingerprint(billing_pool) == clean


async def test_each_delivered_message_is_one_ledger_row(metering: Metering, billing_pool: asyncpg.Pool) -> None:
    events = generate(customers=50, messages_per_customer=4, seed=3)
    await feed(metering, events + events, batch=64)
    delivered = {e[1]["wamid"] for e in events if e[0] == "statuses" and e[1]["status"] in ("delivered", "read")}
    rows = await billing_pool.fetch("SELECT wamid FROM billing.ledger")
    assert sorted(r["wamid"] for r in rows) == sorted(delivered)
