"""Kill the sender mid-stream, restart it, and prove no request is lost or sent twice."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from parley_common.topics import MESSAGES_OUT, SENDS

from .harness import Producer, collect, new_id, outbound, sender_settings, simulated_tenant, start_sender

pytestmark = pytest.mark.infra
# Slow numbers: the stream must outlast the sender's start-up (~2 s of group joins) to be cut.
NUMBERS = {"7001": 60, "7002": 60}
N = 600


async def test_killed_mid_stream_then_restarted_sends_every_request_exactly_once(
    kafka_bootstrap: str, database_url: str
) -> None:
    run = new_id("kill")
    ids = [f"{run}-{i}" for i in range(N)]
    async with simulated_tenant(database_url, NUMBERS, tenant="restart", waba="waba-r") as simulated:
        sim_url = simulated.url
        async with Producer(kafka_bootstrap) as p:
            for i, mid in enumerate(ids):
                pn = "7001" if i % 2 else "7002"
                await p.send(MESSAGES_OUT.name, outbound(mid, pn, f"4420712{i:05d}"), pn)
        settings = sender_settings(kafka_bootstrap, database_url, sim_url, batch_max_records=50)
        async with httpx.AsyncClient(base_url=sim_url) as sim:
            first = await start_sender(settings)
            # Kill once the stream is flowing (the numbers' limits keep it going for ~5 s).
            for _ in range(1500):
                accepted = (await sim.get("/_sim/stats")).json()["requests"]["accepted"]
                if accepted >= N // 4:
                    break
                await asyncio.sleep(0.02)
            await first.kill()
            at_kill = (await sim.get("/_sim/stats")).json()["requests"]["accepted"]
            assert 0 < at_kill < N, (await sim.get("/_sim/stats")).json()
            second = await start_sender(settings)
            try:
                wanted = set(ids)
                results = await collect(
                    kafka_bootstrap,
                    SENDS.name,
                    lambda rs: wanted <= {r["message_id"] for r in rs},
                    timeout_s=60,
                )
            finally:
                await second.shutdown()
            counts = {}
            for mid in ids:
                r = await sim.get("/_sim/messages", params={"biz_opaque_callback_data": mid})
                counts[mid] = r.json()["count"]
    outcomes = {r["message_id"]: r["outcome"] for r in results if r["message_id"] in wanted}
    assert set(outcomes) == wanted, f"{len(wanted - set(outcomes))} request(s) without a result"
    assert set(outcomes.values()) == {"accepted"}
    assert sorted(set(counts.values())) == [1], "every request reached the Cloud API exactly once"
