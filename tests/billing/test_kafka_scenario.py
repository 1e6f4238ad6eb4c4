"""Billing end to end through real Kafka and PostgreSQL: the app's own consumers meter a shuffled,
duplicated stream of contract records; a restart and a full replay change nothing."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from parley_billing.app import create_app
from parley_billing.handlers import GROUP
from parley_billing.settings import BillingSettings
from parley_billing.store import ledger_fingerprint, ledger_totals
from parley_common.topics import DEAD_LETTERS, MESSAGES_IN, SENDS, STATUSES, consumer_group

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
from .traffic import Event, feed, generate

pytestmark = pytest.mark.infra


def _topic(kind: str) -> str:
    return {"statuses": STATUSES.name, "sends": SENDS.name, "inbound": MESSAGES_IN.name}[kind]


async def _publish(bootstrap: str, events: Sequence[Event], raw: Sequence[tuple[str, bytes]] = ()) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        batch = [producer.send(_topic(kind), orjson.dumps(record), key=record["phone_number_id"].encode())
                 for kind, record in events]
        batch += [producer.send(_topic(kind), value, key=b"poison") for kind, value in raw]
        await asyncio.gather(*(await asyncio.gather(*batch)))
    finally:
        await producer.stop()


async def _lag(bootstrap: str) -> int:
    """Records on billing's three topics not yet committed by its consumer group."""
    topics = [STATUSES.name, SENDS.name, MESSAGES_IN.name]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics(topics)
        parts = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        assert {tp.topic for tp in parts} == set(topics), described
        ends = await consumer.end_offsets(parts)
        committed = await admin.list_consumer_group_offsets(consumer_group(GROUP), partitions=parts)
        return sum(end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
                   for tp, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


async def _settle(bootstrap: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (lag := await _lag(bootstrap)) > 0:
        assert time.monotonic() < deadline, f"billing did not consume everything: lag {lag}"
        await asyncio.sleep(0.5)


@asynccontextmanager
async def _running(database_url: str, kafka_bootstrap: str) -> AsyncIterator[FastAPI]:
    """The billing app with its full lifespan: pool, migrations, tenants and the Kafka consumers."""
    app = create_app(BillingSettings(database_url=database_url, kafka_bootstrap=kafka_bootstrap, db_pool_max=4,
                                     batch_timeout_ms=50))
    async with app.router.lifespan_context(app):
        yield app


async def _by_tenant(pool: asyncpg.Pool) -> dict[str | None, tuple[int, Decimal]]:
    rows = await pool.fetch("SELECT tenant_id, count(*) n, coalesce(sum(amount), 0) a FROM billing.ledger"
                            " GROUP BY tenant_id")
    return {r["tenant_id"]: (r["n"], r["a"]) for r in rows}


async def test_billing_meters_a_shuffled_duplicated_stream_from_kafka_once_and_replays_change_nothing(
        kafka_bootstrap: str, database_url: str, billing_pool: asyncpg.Pool, tenant_keys: dict[str, str]) -> None:
    a, b = september()
    hand_priced = as_events(a.records + b.records + late_and_october().records)
    generated = generate(customers=120, messages_per_customer=4, seed=5, numbers=("bill-gen-1", "bill-gen-2"),
                         tenant_id="bill-gen")

    # The clean result of the generated stream, metered directly (no Kafka), for comparison.
    async with _running(database_url, kafka_bootstrap) as app:
        await feed(app.state.metering, generated)
    clean_print = await ledger_fingerprint(billing_pool)
    clean_generated = await _by_tenant(billing_pool)
    await billing_pool.execute("TRUNCATE billing.ledger, billing.deliveries, billing.sends, billing.inbound")

    # Everything once, 5 % again, shuffled; plus two records that cannot be facts.
    rnd = random.Random(3)
    stream = hand_priced + generated
    stream = stream + rnd.sample(stream, len(stream) // 20)
    rnd.shuffle(stream)
    poison = [("statuses", b'{"status": "delivered", "occurred_at": "2026-09-01T00:00:00+00:00"}'),
              ("sends", b"[1, 2, 3]")]
    await _publish(kafka_bootstrap, stream, poison)
    async with _running(database_url, kafka_bootstrap):
        await _settle(kafka_bootstrap)
    after_first = await ledger_totals(billing_pool)
    first_print = await ledger_fingerprint(billing_pool)

    delivered = {r["wamid"] for kind, r in stream if kind == "statuses" and r["status"] in ("delivered", "read")}
    wamids = [r["wamid"] for r in await billing_pool.fetch("SELECT wamid FROM billing.ledger")]
    assert sorted(wamids) == sorted(delivered)  # one row per delivered message, none twice
    by_tenant = await _by_tenant(billing_pool)
    assert by_tenant[TENANT_IN] == (8, SEPT_IN_TOTAL + OCT_IN_LIST + Decimal("0.0118") * 2)  # a1-a5, a7-a9
    assert by_tenant[TENANT_BR] == (1, SEPT_BR_TOTAL)
    assert by_tenant["bill-gen"] == clean_generated["bill-gen"]
    templates = await billing_pool.fetchval(
        "SELECT count(*) FROM billing.ledger l JOIN billing.sends s USING (wamid) WHERE s.is_template")
    assert templates == len({r["wamid"] for kind, r in stream if kind == "sends" and r["is_template"]
                             and r["wamid"] in delivered})

    # The two poison records went to the dead-letter topic, the rest of their batches was metered.
    letters = await _dead_letters(kafka_bootstrap, 2)
    assert {x["source_topic"] for x in letters} == {STATUSES.name, SENDS.name}
    assert all(x["service"] == "billing" for x in letters)

    # Restart and replay every record again, in another order: no total, no row changes.
    rnd.shuffle(stream)
    await _publish(kafka_bootstrap, stream)
    async with _running(database_url, kafka_bootstrap):
        await _settle(kafka_bootstrap)
    assert await ledger_totals(billing_pool) == after_first
    assert await ledger_fingerprint(billing_pool) == first_print
    gen_rows = await billing_pool.fetch("SELECT wamid FROM billing.ledger WHERE tenant_id = 'bill-gen'")
    assert len(gen_rows) == clean_generated["bill-gen"][0]
    # Generated ledger rows are exactly what the direct, in-order run priced.
    await billing_pool.execute("DELETE FROM billing.ledger WHERE tenant_id <> 'bill-gen'")
    assert await ledger_fingerprint(billing_pool) == clean_print


async def _dead_letters(bootstrap: str, n: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(DEAD_LETTERS.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            out += [orjson.loads(r.value) for records in batch.values() for r in records
                    if orjson.loads(r.value).get("service") == "billing"]
    finally:
        await consumer.stop()
    assert len(out) == n, out
    return out
