"""The portfolio messaging limit on real Kafka, PostgreSQL and the simulator (ADR 0115).

The limit: unique customers a portfolio reaches with business-initiated templates in a rolling
24 hours. Shown here:

- one batch of 10 templates to 10 new customers with a limit of 5: exactly 5 go out (the count
  was once updated only after a batch's outcomes, so all 10 did);
- a template naming an invented ``reply_to_wamid`` is not exempt (it once skipped the check);
- two sender processes sharing one portfolio, one killed with SIGKILL mid-stream: the portfolio
  never reaches more than its limit, and every request ends in a final state;
- a place held by a request that did not leave is given back, and only then.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from parley_common.db import create_pool, migrate
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_OUT, SENDS
from parley_sender.store import MIGRATIONS, SenderStore

from .harness import (
    Producer,
    RunningSender,
    collect,
    consumed,
    free_port,
    new_id,
    outbound,
    sender_process,
    sender_settings,
    simulated_tenant,
    start_sender,
    wait_ready,
)

pytestmark = pytest.mark.infra
LIMIT = 5
ONE = "8501"
ONE_WABA = "waba-pl1"
PAIR_NUMBERS = {"8511": 1000, "8512": 1000, "8513": 1000, "8514": 1000}
PAIR_WABA = "waba-pl2"


async def results(kafka: str, ids: set[str], timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    def done(rs: list[dict[str, Any]]) -> bool:
        return ids <= {r["message_id"] for r in rs}

    found = await collect(kafka, SENDS.name, done, timeout_s)
    return {r["message_id"]: r for r in found if r["message_id"] in ids}


async def customers_reached(sim_url: str, numbers: set[str]) -> set[str]:
    """Who the simulator (Meta's side) received a message for, from these numbers."""
    async with httpx.AsyncClient(base_url=sim_url) as sim:
        data = (await sim.get("/_sim/messages", params={"compact": "true", "limit": 100000})).json()["data"]
    return {m["to"] for m in data if m["phone_number_id"] in numbers}


@pytest.fixture(scope="module")
async def one(kafka_bootstrap: str, database_url: str) -> AsyncIterator[tuple[str, RunningSender]]:
    async with simulated_tenant(database_url, {ONE: 1000}, tenant="limit-one", messaging_limit=LIMIT,
                                waba=ONE_WABA) as sim:
        sender = await start_sender(sender_settings(kafka_bootstrap, database_url, sim.url))
        try:
            yield sim.url, sender
        finally:
            await sender.shutdown()


async def test_one_batch_of_ten_new_customers_sends_five_then_an_invented_reply_reference_is_not_exempt(
    kafka_bootstrap: str, one: tuple[str, RunningSender]
) -> None:
    sim_url, _ = one
    run = new_id("pl")
    ids = [f"{run}-{i}" for i in range(10)]
    async with Producer(kafka_bootstrap) as p:
        for i, mid in enumerate(ids):
            await p.send(MESSAGES_OUT.name, outbound(mid, ONE, f"4478{i:08d}"), ONE)
    got = await results(kafka_bootstrap, set(ids))
    outcomes = sorted(r["outcome"] for r in got.values())
    assert outcomes == ["accepted"] * LIMIT + ["refused"] * (10 - LIMIT)
    assert all("messaging_limit_reached" in (r.get("reason") or "") for r in got.values() if r["outcome"] == "refused")
    assert len(await customers_reached(sim_url, {ONE})) == LIMIT

    # A customer reached already is not new: a second template to them goes out.
    again = f"{run}-again"
    reached = sorted(await customers_reached(sim_url, {ONE}))[0]
    # A new customer, with a reply reference nobody ever received: still business-initiated.
    invented = f"{run}-invented"
    async with Producer(kafka_bootstrap) as p:
        await p.send(MESSAGES_OUT.name, outbound(again, ONE, reached), ONE)
        await p.send(
            MESSAGES_OUT.name,
            outbound(invented, ONE, "447899999999", reply_to_wamid="wamid.invented-by-the-caller"),
            ONE,
        )
    got = await results(kafka_bootstrap, {again, invented})
    assert got[again]["outcome"] == "accepted"
    assert got[invented]["outcome"] == "refused"
    assert "messaging_limit_reached" in got[invented]["reason"]
    assert len(await customers_reached(sim_url, {ONE})) == LIMIT


async def test_the_limit_meta_reports_replaces_the_registry_value(
    kafka_bootstrap: str, database_url: str, one: tuple[str, RunningSender]
) -> None:
    """After the first test the portfolio has reached its 5; Meta then reports 7, and after it an
    older report of 6 arrives on the same partition, which changes nothing: two of three new
    customers get through.

    No fixed sleeps: the test waits until the accounts consumer committed past the older report
    (its effects are durable by then), however long a loaded machine takes to get there."""
    sim_url, _ = one
    run = new_id("plr")
    now = datetime.now(UTC)
    events = [
        {"event_id": f"{run}-cap", "tenant_id": "limit-one", "phone_number_id": ONE, "waba_id": ONE_WABA,
         "occurred_at": now.isoformat(),
         "kind": "business_capability_update", "value": {"max_daily_conversations_per_business": 7}},
        {"event_id": f"{run}-old", "tenant_id": "limit-one", "phone_number_id": ONE, "waba_id": ONE_WABA,
         "occurred_at": now.replace(year=now.year - 1).isoformat(),
         "kind": "phone_number_quality_update", "value": {"max_daily_conversations_per_business": "6"}},
    ]
    async with Producer(kafka_bootstrap) as p:
        written = [await p.send(ACCOUNT_EVENTS.name, ev, ONE) for ev in events]
    partition, last = written[-1]
    await consumed(kafka_bootstrap, "parley-sender-accounts", ACCOUNT_EVENTS.name, partition, last)
    conn = await asyncpg.connect(database_url)
    try:
        reported = await conn.fetchval("SELECT reported_limit FROM sender.portfolios WHERE tenant_id = 'limit-one'")
    finally:
        await conn.close()
    assert reported == 7
    ids = [f"{run}-{i}" for i in range(3)]
    async with Producer(kafka_bootstrap) as p:
        for i, mid in enumerate(ids):
            await p.send(MESSAGES_OUT.name, outbound(mid, ONE, f"4476{i:08d}"), ONE)
    got = await results(kafka_bootstrap, set(ids), timeout_s=180)
    assert sorted(r["outcome"] for r in got.values()) == ["accepted", "accepted", "refused"]
    assert len(await customers_reached(sim_url, {ONE})) == 7


async def test_a_throughput_upgrade_from_meta_changes_the_governor_live(
    kafka_bootstrap: str, database_url: str, one: tuple[str, RunningSender]
) -> None:
    """The registry says 1,000/s for this number; Meta first reports nothing, then an upgrade
    event: the number's governor grants what the event says, read from the database by every
    replica (here: the running sender, and a reload as another replica would do it).

    It once read the running sender's state as soon as the database row appeared, racing the
    handler's own reload that follows the write; it now waits for the consumer's commit, which
    comes after both."""
    _, running = one
    sender = running.app.state.sender
    run = new_id("thr")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM sender.number_throughput WHERE phone_number_id = $1", ONE)
    finally:
        await conn.close()
    await sender.reload_throughput(force=True)
    pacer = sender.numbers.pacer(ONE, 80)  # as if the registry had said 80/s
    assert pacer.limit.limit == 80
    event = {
        "event_id": f"{run}-up", "tenant_id": "limit-one", "phone_number_id": ONE, "waba_id": ONE_WABA,
        "occurred_at": datetime.now(UTC).isoformat(), "kind": "phone_number_quality_update",
        "value": {"event": "THROUGHPUT_UPGRADE", "display_phone_number": f"1555{ONE}"},
    }
    async with Producer(kafka_bootstrap) as p:
        partition, offset = await p.send(ACCOUNT_EVENTS.name, event, ONE)
    await consumed(kafka_bootstrap, "parley-sender-accounts", ACCOUNT_EVENTS.name, partition, offset)
    # the replica that consumed the event re-read the table at once
    assert sender.reported_mps[ONE] == 1000
    assert sender.pacer(ONE).limit.limit == 1000
    assert pacer.limit.limit == 1000  # changed in place: a backlog waiting on it speeds up
    # another replica, on its next periodic read
    sender.reported_mps = {}
    await sender.reload_throughput(force=True)
    assert sender.reported_mps[ONE] == 1000


async def test_two_sender_processes_share_one_portfolio_limit_and_lose_nothing_when_one_is_killed(
    kafka_bootstrap: str, database_url: str
) -> None:
    run = new_id("pl2")
    numbers = list(PAIR_NUMBERS)
    # 40 requests, 20 customers (each written to twice, from two numbers), spread over 4 numbers.
    reqs = [(f"{run}-{i}", numbers[i % 4], f"4477{i % 20:08d}") for i in range(40)]
    ids = [mid for mid, _, _ in reqs]
    async with simulated_tenant(database_url, PAIR_NUMBERS, tenant="limit-two", messaging_limit=LIMIT, waba=PAIR_WABA,
                                behaviour={"latency_ms": 150.0}) as simulated:  # calls are in flight at the kill
        sim_url = simulated.url
        base = os.environ | {
            "PARLEY_DATABASE_URL": database_url,
            "PARLEY_LOG_LEVEL": "WARNING",
            "PARLEY_SENDER_GRAPH_API_BASE": sim_url,
            "PARLEY_SENDER_HTTP_TIMEOUT_S": "5",
            "PARLEY_SENDER_IN_DOUBT_DEADLINE_S": "15",
            "PARLEY_SENDER_IN_DOUBT_SWEEP_S": "1",
        }
        ports = [free_port(), free_port()]
        procs = [sender_process(base | {"PARLEY_SENDER_HTTP_PORT": str(p)}) for p in ports]
        try:
            for p, proc in zip(ports, procs, strict=True):
                await wait_ready(p, proc)
            async with Producer(kafka_bootstrap) as producer:
                for mid, number, customer in reqs:
                    await producer.send(MESSAGES_OUT.name, outbound(mid, number, customer), number)
            async with httpx.AsyncClient(base_url=sim_url) as sim:
                for _ in range(3000):
                    if (await sim.get("/_sim/stats")).json()["requests"]["accepted"] >= 1:
                        break
                    await asyncio.sleep(0.01)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(10)
            got = await results(kafka_bootstrap, set(ids), timeout_s=120)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
        reached = await customers_reached(sim_url, set(PAIR_NUMBERS))
    assert len(reached) <= LIMIT, f"the portfolio reached {len(reached)} customers, limit {LIMIT}"
    assert set(got) == set(ids), f"{len(set(ids) - set(got))} requests without a result"
    accepted = {r["message_id"] for r in got.values() if r["outcome"] == "accepted"}
    assert accepted, "nothing was sent"
    by_id = {mid: customer for mid, _, customer in reqs}
    assert {by_id[mid] for mid in accepted} <= reached
    conn = await asyncpg.connect(database_url)
    try:
        counted = await conn.fetchval(
            "SELECT count(*) FROM sender.reached"
            " WHERE tenant_id = 'limit-two' AND reached_at > now() - interval '1 day'"
        )
    finally:
        await conn.close()
    assert counted <= LIMIT


async def test_a_place_is_given_back_only_when_no_request_holding_it_left(database_url: str) -> None:
    pool = await create_pool(database_url)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "sender", MIGRATIONS)
        store, tid, now = SenderStore(pool), new_id("portfolio"), datetime.now(UTC)
        assert await store.reserve_reach(tid, 2, [("m1", "a"), ("m2", "a"), ("m3", "b"), ("m4", "c")], now) == {
            "m1",
            "m2",
            "m3",
        }
        await store.release_reach([(tid, "a", "m1")])  # m2 still holds a's place
        assert await store.reserve_reach(tid, 2, [("m5", "c")], now) == set()
        await store.release_reach([(tid, "a", "m2")])  # nobody holds it: free
        assert await store.reserve_reach(tid, 2, [("m5", "c")], now) == {"m5"}
        await store.record_reached([(tid, "c", now)])  # c was reached: releasing c's request changes nothing
        await store.release_reach([(tid, "c", "m5"), (tid, "b", "m3")])
        assert await store.reserve_reach(tid, 2, [("m6", "d"), ("m7", "e")], now) == {"m6"}
    finally:
        await pool.close()
