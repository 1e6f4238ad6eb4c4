"""Benchmark: status events metered per second by one billing process into PostgreSQL.

    uv run python tests/bench/bench_billing.py [--customers N] [--batch N]

Pre-loads the send records and inbound messages of a synthetic stream, then times the status
events alone: raw JSON bytes → decode → facts → set-based upsert → re-pricing → ledger, in
batches as the Kafka batch subscriber gets them (Kafka itself is not in the timed path). Then the
exactness check in the same run: the whole stream replayed twice, 5 % duplicates, shuffled, 1 %
held back to the end (30 days late) must give exactly the clean run's ledger. Writes
bench-results/billing.json with events_per_s and exact.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from parley_billing.domain.facts import status_fact
from parley_billing.ratecards import import_rate_card
from parley_billing.store import MIGRATIONS, Metering, TenantInfo, ledger_fingerprint, ledger_totals
from parley_billing.traffic import chaos, feed, generate
from parley_common.db import create_pool, migrate

REPO = Path(__file__).resolve().parents[2]
SERVER_URL = os.environ.get("PARLEY_DATABASE_URL", "postgresql://parley:parley@127.0.0.1:55432/parley")


def lookup(tenant_id: str | None, phone_number_id: str) -> TenantInfo:
    return TenantInfo(tenant_id, "IN", ZoneInfo("Asia/Kolkata"))


def _db_url(name: str) -> str:
    p = urlsplit(SERVER_URL)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


async def _fresh_pool(name: str) -> asyncpg.Pool:
    admin = await asyncpg.connect(SERVER_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    pool = await create_pool(_db_url(name), min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn, "billing", MIGRATIONS)
        card = (REPO / "services/billing/parley_billing/data/example_rate_card.csv").read_text()
        await import_rate_card(conn, card)
    return pool


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(SERVER_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def main(customers: int, batch: int) -> dict[str, object]:
    events = generate(customers=customers, messages_per_customer=6, seed=42, numbers=[f"1000{i:02d}" for i in range(24)])
    statuses = [orjson.dumps(r) for t, r in events if t == "statuses"]
    others = [e for e in events if e[0] != "statuses"]
    names = [f"bench_billing_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        pool = await _fresh_pool(names[0])
        metering = Metering(pool, lookup)
        await feed(metering, others, batch=batch)
        started = time.perf_counter()
        for i in range(0, len(statuses), batch):
            facts = [f for raw in statuses[i:i + batch] if (f := status_fact(orjson.loads(raw))) is not None]
            await metering.record_statuses(facts)
        elapsed = time.perf_counter() - started
        clean_totals = await ledger_totals(pool)
        clean_print = await ledger_fingerprint(pool)
        await pool.close()

        pool = await _fresh_pool(names[1])
        chaotic = chaos(events)
        started = time.perf_counter()
        await feed(Metering(pool, lookup), chaotic, batch=batch)
        chaos_elapsed = time.perf_counter() - started
        chaos_totals = await ledger_totals(pool)
        exact = chaos_totals == clean_totals and await ledger_fingerprint(pool) == clean_print
        await pool.close()
    finally:
        for n in names:
            await _drop(n)
    result: dict[str, object] = {
        "events_per_s": round(len(statuses) / elapsed),
        "exact": exact,
        "status_events": len(statuses),
        "seconds": round(elapsed, 3),
        "batch": batch,
        "ledger_rows": clean_totals["messages"],
        "billable": clean_totals["billable"],
        "amount": str(clean_totals["amount"]),
        "chaos_events": len(chaotic),
        "chaos_events_per_s_all_topics": round(len(chaotic) / chaos_elapsed),
        "path": "raw JSON bytes -> facts -> PostgreSQL upsert -> re-pricing -> ledger (no Kafka)",
    }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    out = asyncio.run(main(args.customers, args.batch))
    print(json.dumps(out, indent=2))
    (REPO / "bench-results").mkdir(exist_ok=True)
    (REPO / "bench-results" / "billing.json").write_text(json.dumps(out, indent=2) + "\n")
