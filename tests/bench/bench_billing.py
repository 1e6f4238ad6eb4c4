"""Benchmark: status events metered per second by one billing process into PostgreSQL.

    uv run python tests/bench/bench_billing.py [--customers N] [--batch N] [--no-kafka]

One synthetic stream (sends, inbound messages, statuses), three runs, each into a fresh database.
Two fifths of the customers talk in November 2026, where free-form replies (service messages) and
utility templates inside the customer-service window are charged; the result counts them
(``charged_service_replies``, ``charged_utility_after_2026_10``). Statuses carry the customer's
BSUID beside the number, as Meta's do since 2026 (billing keeps the pair for BSUID-only statuses).

1. **raw bytes → PostgreSQL** (``events_per_s``): the sends and inbound messages are pre-loaded,
   then the status events alone are timed as the batch subscriber handles them: raw JSON bytes →
   orjson → facts → COPY + set-based upsert → re-pricing → ledger, in batches of ``--batch``.
   Kafka is not in this figure.
2. **through Kafka** (``kafka_events_per_s``): the same status records are first produced to a
   benchmark topic namespace on the real broker (not timed); then the billing app runs in this
   process with its own consumers (``create_app``, lifespan) and the time from its first
   consumed record to the consumer group's lag reaching zero (offsets are committed after each
   database commit) is measured. The ledger must equal run 1's (``kafka_exact``).
3. **exactness** (``exact``): the whole stream replayed twice, 5 % duplicates, shuffled, 1 % held
   back to the very end (30 days late) must give exactly run 1's ledger (md5 over every row).

Also reports the benchmark process's own CPU seconds per run (PostgreSQL's CPU is not in it), as
the machine is shared. Writes bench-results/billing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from parley_billing.domain.facts import status_fact
from parley_billing.ratecards import import_rate_card
from parley_billing.settings import BillingSettings
from parley_billing.store import MIGRATIONS, Metering, TenantInfo, ledger_fingerprint, ledger_totals
from parley_common.db import create_pool, migrate

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.bench.cleanup import drop_database
from tests.billing.traffic import chaos, feed, generate

os.environ.setdefault("PARLEY_DEMO", "true")  # a local measurement: the demo redaction key will do

REPO = Path(__file__).resolve().parents[2]
SERVER_URL = os.environ.get("PARLEY_DATABASE_URL", "postgresql://parley:parley@127.0.0.1:55432/parley")
KAFKA = os.environ.get("PARLEY_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


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


async def _register_tenant(conn: asyncpg.Connection, numbers: list[str]) -> None:
    """Tenant ``acme`` owning the traffic's numbers: the billing app meters a status only for the
    tenant it was bound to, on that tenant's own number (ADR 0100)."""
    from parley_common.runtime import TENANCY_MIGRATIONS
    from parley_common.tenancy.cli import RegistryFile, import_registry

    os.environ.setdefault("PARLEY_BENCH_APP_SECRET", "bench-secret")
    await migrate(conn, "tenancy", TENANCY_MIGRATIONS)
    await import_registry(conn, RegistryFile.model_validate({
        "apps": [{"app_id": "bench-app", "app_secret_refs": ["env:PARLEY_BENCH_APP_SECRET"]}],
        "tenants": [{"tenant_id": "acme", "name": "Acme", "app_id": "bench-app", "business_country": "IN",
                     "time_zone": "Asia/Kolkata", "wabas": [f"waba-{n}" for n in numbers],
                     "phone_numbers": [{"phone_number_id": n, "display_phone_number": "91" + n,
                                        "waba_id": f"waba-{n}"} for n in numbers]}]}))


async def _raw_bytes_run(pool: asyncpg.Pool, others: list, statuses: list[bytes], batch: int
                         ) -> tuple[float, float]:
    metering = Metering(pool, lookup)
    await feed(metering, others, batch=batch)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(statuses), batch):
        facts = [f for raw in statuses[i:i + batch] if (f := status_fact(orjson.loads(raw))) is not None]
        await metering.record_statuses(facts)
    return time.perf_counter() - started, time.process_time() - cpu


async def _kafka_run(name: str, others: list, statuses: list[bytes], keys: list[bytes], batch: int
                     ) -> tuple[float, float]:
    """Statuses produced to Kafka first, then consumed by the billing app in this process."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from parley_billing.app import create_app
    from parley_billing.handlers import GROUP
    from parley_billing.settings import BillingSettings
    from parley_common.topics import STATUSES, consumer_group
    from parley_common.topics_cli import delete_namespace, ensure_topics

    namespace = f"bench{uuid.uuid4().hex[:8]}."
    os.environ["PARLEY_TOPIC_NAMESPACE"] = namespace
    await ensure_topics(KAFKA, partitions=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        topic = STATUSES.name
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, linger_ms=20, max_batch_size=512 * 1024,
                                    compression_type="lz4")
        await producer.start()
        try:
            sent = [await producer.send(topic, v, key=k) for v, k in zip(statuses, keys, strict=True)]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        parts = [TopicPartition(topic, p) for p in range(3)]
        probe = AIOKafkaConsumer(bootstrap_servers=KAFKA)
        await probe.start()
        try:
            ends = await probe.end_offsets(parts)
        finally:
            await probe.stop()
        total = sum(ends.values())

        async def lag() -> int:
            committed = await admin.list_consumer_group_offsets(consumer_group(GROUP), partitions=parts)
            return total - sum(committed[tp].offset for tp in parts if tp in committed and committed[tp].offset >= 0)

        pool = await _fresh_pool(name)
        try:
            await feed(Metering(pool, lookup), others, batch=batch)
            async with pool.acquire() as conn:
                await _register_tenant(conn, sorted({k.decode() for k in keys}))
        finally:
            await pool.close()
        app = create_app(BillingSettings(database_url=_db_url(name), kafka_bootstrap=KAFKA,
                                         batch_max_records=batch, log_level="WARNING"))

        async def same_tenant_view() -> None:  # as run 1 (no tenant registry here); before consuming
            app.state.metering.tenants = lookup

        app.state.runtime.on_start.append(same_tenant_view)
        async with app.router.lifespan_context(app):
            while (remaining := await lag()) == total:  # the group is joining; nothing committed yet
                await asyncio.sleep(0.02)
            # The first batch is committed: count from here, without the records it held.
            started, cpu, counted = time.perf_counter(), time.process_time(), remaining
            while await lag() > 0:
                await asyncio.sleep(0.05)
            elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        return counted / elapsed, counted / cpu_s
    finally:
        await admin.close()
        await delete_namespace(KAFKA, namespace)  # every topic of the run, even one a crash left half-made


async def main(customers: int, batch: int, with_kafka: bool) -> dict[str, object]:
    events = generate(customers=customers, messages_per_customer=6, seed=42,
                      numbers=[f"1000{i:02d}" for i in range(24)], late_start=datetime(2026, 11, 2, tzinfo=UTC),
                      with_bsuids=True)
    status_records = [r for t, r in events if t == "statuses"]
    statuses = [orjson.dumps(r) for r in status_records]
    keys = [r["phone_number_id"].encode() for r in status_records]
    others = [e for e in events if e[0] != "statuses"]
    names = [f"bench_billing_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    result: dict[str, object] = {}
    try:
        pool = await _fresh_pool(names[0])
        elapsed, cpu = await _raw_bytes_run(pool, others, statuses, batch)
        clean_totals = await ledger_totals(pool)
        clean_print = await ledger_fingerprint(pool)
        mix = await pool.fetchrow(
            "SELECT count(*) FILTER (WHERE category = 'service' AND billable) AS service,"
            " count(*) FILTER (WHERE category = 'service') AS replies,"
            " count(*) FILTER (WHERE category = 'utility' AND billable AND rules = 'PMP-2026-10'"
            "   AND type = 'regular') AS utility_after_change FROM billing.ledger")
        await pool.close()
        result["charged_service_replies"] = mix["service"]
        result["free_form_replies"] = mix["replies"]
        result["charged_utility_after_2026_10"] = mix["utility_after_change"]
        result.update({
            "events_per_s": round(len(statuses) / elapsed),
            "status_events": len(statuses), "seconds": round(elapsed, 3),
            "events_per_cpu_s": round(len(statuses) / cpu), "batch": batch,
            "path": "raw JSON bytes -> orjson -> facts -> COPY + upsert -> re-pricing -> ledger (no Kafka)",
        })
        print(f"raw bytes -> PostgreSQL: {result['events_per_s']} status events/s", flush=True)

        if with_kafka:
            per_s, per_cpu_s = await _kafka_run(names[1], others, statuses, keys, batch)
            pool = await asyncpg.create_pool(_db_url(names[1]), min_size=1, max_size=1)
            kafka_exact = await ledger_totals(pool) == clean_totals and await ledger_fingerprint(pool) == clean_print
            await pool.close()
            result.update({"kafka_events_per_s": round(per_s), "kafka_events_per_cpu_s": round(per_cpu_s),
                           "kafka_exact": kafka_exact,
                           "kafka_path": "Kafka (3 partitions) -> billing app's batch consumer -> PostgreSQL, "
                                         "until the group's committed lag is 0"})
            print(f"through Kafka: {result['kafka_events_per_s']} status events/s", flush=True)

        pool = await _fresh_pool(names[2])
        chaotic = chaos(events)
        started = time.perf_counter()
        await feed(Metering(pool, lookup), chaotic, batch=batch)
        chaos_elapsed = time.perf_counter() - started
        exact = await ledger_totals(pool) == clean_totals and await ledger_fingerprint(pool) == clean_print
        await pool.close()
    finally:
        for n in names:
            await drop_database(SERVER_URL, n)
    result.update({
        "exact": exact,
        "ledger_rows": clean_totals["messages"], "billable": clean_totals["billable"],
        "amount": str(clean_totals["amount"]),
        "chaos_events": len(chaotic), "chaos_events_per_s_all_topics": round(len(chaotic) / chaos_elapsed),
    })
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=BillingSettings.model_fields["batch_max_records"].default)
    parser.add_argument("--no-kafka", action="store_true", help="skip the run through Kafka")
    args = parser.parse_args()
    out = asyncio.run(main(args.customers, args.batch, not args.no_kafka))
    print(json.dumps(out, indent=2))
    (REPO / "bench-results").mkdir(exist_ok=True)
    (REPO / "bench-results" / "billing.json").write_text(json.dumps(out, indent=2) + "\n")
