"""Poison records and outages through the real consumers, on the real Kafka and PostgreSQL (issue 12).

- A record no database can store (NUL in a wamid, as a signed webhook put it on wa.messages.in
  before ingest refused such values) used to wedge the router and billing forever, and under
  load the whole consumer. Now it is dead-lettered alone and every other record, on its
  partition and on the others, takes effect.
- A PostgreSQL outage (a proxy in front of the shared server, cut and restored) makes billing
  back off, with readiness false, one sleep between every two tries, and recover without loss.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from parley_common.deadletter import Backoff
from parley_common.topics import DEAD_LETTERS, MESSAGES_IN, MESSAGES_ROUTED
from support.tenancy import import_tenants
from support.waiting import eventually

from .tcp_proxy import TcpProxy

pytestmark = pytest.mark.infra

NUMBERS = [f"10700000000{i:04d}" for i in range(24)]  # keys over every partition of wa.messages.in


TENANT = "failures-shop"


@pytest.fixture(scope="module", autouse=True)
async def _numbers_registered(database_url: str) -> None:
    """The numbers belong to one tenant: consumers act only on events bound to the tenant that
    owns their number (ADR 0100), as ingest binds them."""
    import os

    os.environ.setdefault("FAILURES_APP_SECRET", "failures-secret")
    await import_tenants(database_url, {
        "apps": [{"app_id": "failures-app", "app_secret_refs": ["env:FAILURES_APP_SECRET"]}],
        "tenants": [{"tenant_id": TENANT, "name": "Failures", "app_id": "failures-app",
                     "business_country": "US", "time_zone": "UTC", "wabas": ["failures-waba"],
                     "phone_numbers": [{"phone_number_id": n, "display_phone_number": n,
                                        "waba_id": "failures-waba"} for n in NUMBERS]}]})


def _inbound(wamid: str, number: str) -> bytes:
    return orjson.dumps({"event_id": wamid, "wamid": wamid, "tenant_id": TENANT, "phone_number_id": number,
                         "occurred_at": datetime.now(UTC).isoformat(), "customer_wa_id": "16505550199",
                         "type": "text", "text": "where is my order?"})


async def _produce(bootstrap: str, records: Sequence[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(MESSAGES_IN.name, value, key=key.encode()) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str, marker: bytes, until: Any, wait_s: float = 90) -> list[Any]:
    """Records of ``topic`` holding ``marker``, read until ``until(records)`` or ``wait_s``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"failures-test-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    found: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    try:
        while loop.time() < deadline and not until(found):
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                found += [r for r in recs if marker in r.value]
    finally:
        await consumer.stop()
    return found


async def test_nul_in_a_wamid_wedges_neither_router_nor_billing_and_other_partitions_flow(
    kafka_bootstrap: str, database_url: str
) -> None:
    from parley_billing.app import create_app as billing_app
    from parley_billing.settings import BillingSettings
    from parley_router.app import create_app as router_app
    from parley_router.settings import RouterSettings

    run = uuid.uuid4().hex[:8]
    poison = f"wamid.{run}.\x00poison"
    good = [(NUMBERS[i % len(NUMBERS)], f"wamid.{run}.ok{i}") for i in range(240)]
    records = [(NUMBERS[0], _inbound(poison, NUMBERS[0])), *((n, _inbound(w, n)) for n, w in good)]
    router = router_app(RouterSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                       batch_timeout_ms=50))
    billing = billing_app(BillingSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                          db_pool_max=4, batch_timeout_ms=50))
    async with router.router.lifespan_context(router), billing.router.lifespan_context(billing):
        await _produce(kafka_bootstrap, records)
        routed = await _read(kafka_bootstrap, MESSAGES_ROUTED.name, run.encode(),
                             lambda found: len(found) >= len(good))
        pool: asyncpg.Pool = billing.state.runtime.require_pool()

        async def metered() -> bool:
            n = await pool.fetchval("SELECT count(*) FROM billing.inbound WHERE wamid LIKE $1", f"wamid.{run}.%")
            return bool(n == len(good))

        await eventually(metered, what="billing metering every good message beside the poison")
        letters = await _read(kafka_bootstrap, DEAD_LETTERS.name, run.encode(),
                              lambda found: {orjson.loads(r.value)["service"] for r in found} >= {"router", "billing"})
        router_guard = router.state.router_service.guard
        billing_guard = billing.state.consumer_guards[MESSAGES_IN.base]

    assert sorted(orjson.loads(r.value)["wamid"] for r in routed) == sorted(w for _, w in good)
    by_service = {}
    for r in letters:
        letter = orjson.loads(r.value)
        by_service.setdefault(letter["service"], []).append(letter)
    for service in ("router", "billing"):
        # one letter, though a rebalance (billing's three subscribers join one group) may hand the
        # batch out again before its offsets were committed: the letter's id is the same each time
        assert len({letter["event_id"] for letter in by_service[service]}) == 1
        letter = by_service[service][0]
        assert letter["error_type"] == "CharacterNotInRepertoireError", letter
        assert "\x00" not in letter["reason"] and run not in letter["reason"]
        assert orjson.loads(letter["payload"])["wamid"] == poison  # replayable as it was
    for guard in (router_guard, billing_guard):
        assert guard.dead_lettered >= 1 and guard.transient_failures == 0 and guard.not_ready == set()


async def test_a_postgresql_outage_makes_billing_back_off_not_ready_and_recover_without_loss(
    kafka_bootstrap: str, database_url: str
) -> None:
    from parley_billing.app import create_app as billing_app
    from parley_billing.settings import BillingSettings

    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    through_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}"))
    app = billing_app(BillingSettings(kafka_bootstrap=kafka_bootstrap, database_url=through_proxy,
                                      db_pool_max=4, batch_timeout_ms=50))
    run = uuid.uuid4().hex[:8]
    wamids = [(NUMBERS[i % len(NUMBERS)], f"wamid.{run}.pg{i}") for i in range(120)]
    direct = await asyncpg.connect(database_url)
    try:
        async with app.router.lifespan_context(app):
            guard = app.state.consumer_guards[MESSAGES_IN.base]
            guard.backoff = Backoff(base_s=0.05, max_s=0.8)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://billing")
            await proxy.cut()
            await _produce(kafka_bootstrap, [(n, _inbound(w, n)) for n, w in wamids[:60]])

            async def backing_off() -> bool:
                return guard.transient_failures >= 4

            await eventually(backing_off,
                             what=lambda: f"billing backing off ({guard.transient_failures} transient failures of 4)")
            ready = (await client.get("/readyz")).json()
            assert ready["checks"]["consumers"] is False and ready["status"] == "not ready"
            assert guard.not_ready == {"billing:wa.messages.in"}
            await _produce(kafka_bootstrap, [(n, _inbound(w, n)) for n, w in wamids[60:]])
            await proxy.restore()

            async def all_metered() -> bool:
                n = await direct.fetchval("SELECT count(*) FROM billing.inbound WHERE wamid LIKE $1",
                                          f"wamid.{run}.%")
                return bool(n == len(wamids)) and not guard.not_ready

            await eventually(all_metered,
                             what=lambda: f"every message metered after the outage (not ready: {guard.not_ready})")
            await asyncio.sleep(1)  # redeliveries, if any, would land now
            stored = await direct.fetch("SELECT wamid FROM billing.inbound WHERE wamid LIKE $1", f"wamid.{run}.%")
            assert sorted(r["wamid"] for r in stored) == sorted(w for _, w in wamids)  # none lost, none twice
            assert (await client.get("/readyz")).json()["checks"]["consumers"] is True
            await client.aclose()
    finally:
        await direct.close()
        await proxy.cut()
    # No hot loop: every failed try was followed by one backoff sleep, and the delays grew.
    assert guard.transient_failures >= 4 and len(guard.delays) == guard.transient_failures
    # Each delay is the backoff of its place in the streak: uniform in [cap/2, cap], the cap doubling
    # from 0.05 s up to 0.8 s (so the third try waits at least as long as the first could have).
    caps = [min(0.8, 0.05 * 2**i) for i in range(len(guard.delays))]
    assert all(cap / 2 <= d <= cap for d, cap in zip(guard.delays, caps, strict=True)), guard.delays
    assert max(guard.delays) <= 0.8 and guard.dead_lettered == 0
    assert json.dumps(guard.delays)  # the schedule is reported in the failure output above if any
