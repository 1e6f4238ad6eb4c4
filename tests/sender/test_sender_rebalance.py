"""A second sender joins the group mid-stream: partitions move, no request is lost or sent twice."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka.partitioner import murmur2
from parley_common.topics import MESSAGES_OUT, SENDS

from .harness import Producer, RunningSender, collect, new_id, outbound, sender_settings, simulated_tenant, start_sender

pytestmark = pytest.mark.infra
# Slow numbers, one on each of the test topics' three partitions, so that every member of the
# group ends up owning a partition with a backlog.
NUMBERS = {"7101": 20, "7103": 20, "7104": 20}
N = 900


def accepted_by(sender: RunningSender) -> float:
    total = 0.0
    for metric in sender.app.state.sender.metrics.sends.collect():
        total += sum(s.value for s in metric.samples if s.name.endswith("_total") and s.labels["outcome"] == "accepted")
    return total


async def test_second_sender_joining_mid_stream_moves_partitions_and_sends_each_request_once(
    kafka_bootstrap: str, database_url: str
) -> None:
    assert sorted((murmur2(pn.encode()) & 0x7FFFFFFF) % 3 for pn in NUMBERS) == [0, 1, 2]
    run = new_id("rebal")
    numbers = list(NUMBERS)
    ids = [f"{run}-{i}" for i in range(N)]
    async with simulated_tenant(database_url, NUMBERS, tenant="rebal", waba="waba-rb") as simulated:
        sim_url = simulated.url
        async with Producer(kafka_bootstrap) as p:
            for i, mid in enumerate(ids):
                pn = numbers[i % len(numbers)]
                await p.send(MESSAGES_OUT.name, outbound(mid, pn, f"4420713{i:05d}"), pn)
        settings = sender_settings(kafka_bootstrap, database_url, sim_url, batch_max_records=40)
        async with httpx.AsyncClient(base_url=sim_url) as sim:
            first = await start_sender(settings)
            second: RunningSender | None = None
            try:
                for _ in range(1500):
                    if (await sim.get("/_sim/stats")).json()["requests"]["accepted"] >= N // 10:
                        break
                    await asyncio.sleep(0.02)
                owned_alone = len(first.app.state.send_consumer.workers)
                second = await start_sender(settings)  # joins the group: a rebalance mid-stream
                at_join = (await sim.get("/_sim/stats")).json()["requests"]["accepted"]
                assert at_join < N
                wanted = set(ids)
                results = await collect(
                    kafka_bootstrap, SENDS.name, lambda rs: wanted <= {r["message_id"] for r in rs}, timeout_s=60
                )
                owned_shared = len(first.app.state.send_consumer.workers)
                by_first, by_second = accepted_by(first), accepted_by(second)
            finally:
                if second is not None:
                    await second.shutdown()
                await first.shutdown()
            counts = {}
            for mid in ids:
                r = await sim.get("/_sim/messages", params={"biz_opaque_callback_data": mid})
                counts[mid] = r.json()["count"]
    outcomes = {r["message_id"]: r["outcome"] for r in results if r["message_id"] in wanted}
    assert set(outcomes) == wanted, f"{len(wanted - set(outcomes))} request(s) without a result"
    assert set(outcomes.values()) == {"accepted"}
    assert sorted(set(counts.values())) == [1], "every request reached the Cloud API exactly once"
    assert owned_shared < owned_alone, "the first sender handed partitions over"
    assert by_first > 0 and by_second > 0 and by_first + by_second == N
