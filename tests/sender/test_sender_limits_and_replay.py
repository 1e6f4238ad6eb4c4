"""Meta's throttling answered by the simulator (130429, 131056), and the dead-letter commands end to
end: real Kafka, PostgreSQL, the simulator over HTTP and ``parley-sender deadletters ...`` run as
a process."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from parley_common.topics import MESSAGES_OUT, SENDS

from .harness import (
    Producer,
    RunningSender,
    collect,
    new_id,
    outbound,
    sender_settings,
    sim_count,
    simulated_tenant,
    start_sender,
)

pytestmark = pytest.mark.infra
FAST = "9301"  # the sender believes 1,000/s; the simulator is told lower during a test
PAIR = "9302"
NUMBERS = {FAST: 1000, PAIR: 1000}
WABA = "waba-lim"


class Env:
    def __init__(self, kafka: str, db: str, sim_url: str, sender: RunningSender) -> None:
        self.kafka, self.db, self.sim_url, self.sender = kafka, db, sim_url, sender

    async def results(self, ids: set[str], timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Every result record of ``ids`` (duplicates included), once each has one."""

        def done(rs: list[dict[str, Any]]) -> bool:
            return ids <= {r["message_id"] for r in rs}

        return [r for r in await collect(self.kafka, SENDS.name, done, timeout_s) if r["message_id"] in ids]

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.sim_url) as sim:
            data: dict[str, Any] = (await sim.get("/_sim/stats")).json()
            return data


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Env]:
    async with simulated_tenant(database_url, NUMBERS, tenant="limits", waba=WABA) as simulated:
        sim_url = simulated.url
        sender = await start_sender(sender_settings(kafka_bootstrap, database_url, sim_url, max_attempts=4))
        try:
            yield Env(kafka_bootstrap, database_url, sim_url, sender)
        finally:
            await sender.shutdown()


async def test_130429_from_the_cloud_api_backs_off_and_every_message_is_sent_once(env: Env) -> None:
    n = 30
    ids = [new_id("thr") for _ in range(n)]
    async with httpx.AsyncClient(base_url=env.sim_url) as sim:
        # Meta's side allows far less than the registry says: the sender must learn it from 130429.
        r = await sim.patch(f"/_sim/numbers/{FAST}", json={"throughput": 12})
        assert r.status_code == 200
        before = int((await env.stats())["errors_by_code"].get("130429", 0))
        try:
            async with Producer(env.kafka) as p:
                for i, mid in enumerate(ids):
                    await p.send(MESSAGES_OUT.name, outbound(mid, FAST, f"4420755{i:05d}"), FAST)
            results = await env.results(set(ids), timeout_s=45)
        finally:
            await sim.patch(f"/_sim/numbers/{FAST}", json={"throughput": 1000})
    throttled = int((await env.stats())["errors_by_code"].get("130429", 0)) - before
    assert throttled > 0, "the simulator never answered 130429: the test did not exercise the backoff"
    outcomes = {r["message_id"]: r for r in results}
    assert {r["outcome"] for r in outcomes.values()} == {"accepted"}
    assert max(r["attempt"] for r in outcomes.values()) >= 1  # some went through the retry topic
    assert all(r["outcome"] == "accepted" for r in results)  # no other outcome was ever published
    for mid in ids:
        assert await sim_count(env.sim_url, mid) == 1, mid


async def test_131056_from_the_cloud_api_backs_off_the_pair_and_sends_once(env: Env) -> None:
    customer = "442075699001"
    first, second = new_id("pair"), new_id("pair")
    async with httpx.AsyncClient(base_url=env.sim_url) as sim:
        # One message per 3 s to a customer at Meta's side, no burst: the second is answered 131056.
        r = await sim.patch("/_sim/behaviour", json={"pair_burst": 1, "pair_interval_s": 3.0})
        assert r.status_code == 200
        before = int((await env.stats())["errors_by_code"].get("131056", 0))
        try:
            async with Producer(env.kafka) as p:
                await p.send(MESSAGES_OUT.name, outbound(first, PAIR, customer), PAIR)
                await p.send(MESSAGES_OUT.name, outbound(second, PAIR, customer), PAIR)
            results = await env.results({first, second}, timeout_s=45)
        finally:
            await sim.patch("/_sim/behaviour", json={"pair_burst": 45, "pair_interval_s": 6.0})
    assert int((await env.stats())["errors_by_code"].get("131056", 0)) - before >= 1
    by_id = {r["message_id"]: r for r in results}
    assert by_id[first]["outcome"] == by_id[second]["outcome"] == "accepted"
    assert by_id[second]["attempt"] >= 1
    assert await sim_count(env.sim_url, first) == 1
    assert await sim_count(env.sim_url, second) == 1


async def _cli(*args: str) -> tuple[int, str, str]:
    """``parley-sender ...`` as its own process (same environment: Kafka, topic namespace)."""
    script = Path(sys.executable).parent / "parley-sender"
    proc = await asyncio.create_subprocess_exec(
        str(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=os.environ.copy(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dead_letter_listed_then_replayed_after_the_fix_is_sent_exactly_once(env: Env) -> None:
    mid = new_id("dl")
    async with httpx.AsyncClient(base_url=env.sim_url) as sim:
        await sim.patch("/_sim/behaviour", json={"error_5xx_rate": 1.0})
        try:
            async with Producer(env.kafka) as p:
                # Its last attempt (max_attempts=4): one more 5xx and it is dead-lettered.
                await p.send(MESSAGES_OUT.name, outbound(mid, FAST, "442075700001", attempt=3), FAST)
            failed = await env.results({mid})
        finally:
            await sim.patch("/_sim/behaviour", json={"error_5xx_rate": 0.0})
    assert [r["outcome"] for r in failed] == ["failed"]
    assert "attempts exhausted" in failed[0]["reason"]
    assert await sim_count(env.sim_url, mid) == 0

    code, out, _ = await _cli("deadletters", "list", "--limit", "10000")
    assert code == 0
    listed = [json.loads(line) for line in out.splitlines() if line.strip()]
    letter = next(le for le in listed if le["id"] == f"sender:{mid}")
    assert letter["source_topic"] == MESSAGES_OUT.name
    assert "442075700001" not in out  # the payload (with the customer's number) is never printed

    # The cause is fixed (the Cloud API answers again): replay it, twice, and it is sent once.
    for times in (1, 2):
        code, out, err = await _cli("deadletters", "replay", "--id", letter["id"])
        assert code == 0, err
        assert "1 dead letter(s) replayed" in out

        def accepted(rs: list[dict[str, Any]], times: int = times) -> bool:
            return sum(1 for r in rs if r["message_id"] == mid and r["outcome"] == "accepted") >= times

        results = await collect(env.kafka, SENDS.name, accepted, timeout_s=30)
    mine = [r for r in results if r["message_id"] == mid]
    assert {r["event_id"] for r in mine if r["outcome"] == "accepted"} == {f"{mid}:accepted"}
    assert len({r["wamid"] for r in mine if r["outcome"] == "accepted"}) == 1  # one send, result re-published
    assert await sim_count(env.sim_url, mid) == 1

    code, _, err = await _cli("deadletters", "replay", "--id", "sender:no-such-letter")
    assert code == 1 and "no dead letter" in err
