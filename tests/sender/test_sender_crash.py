"""kill -9 of a real sender process mid-stream, then a restart: the crash semantics of ADR 0030.

1,000 templates for one number limited to 80/s against the simulator (answering after 100 ms, so
a few calls are always in flight). The sender runs as its own process (``python -m
parley_sender.cli run``) and is killed with SIGKILL once about 110 requests were accepted, then
started again. Counted afterwards:

- right after the kill, no more requests are recorded ``sending`` than calls could be in flight
  (before the fix every request of the batches being paced was: ~890 of them);
- every request reaches exactly one final state, and the simulator accepted at most one message
  for it;
- the requests cut off mid-call are the only ones in doubt: those the simulator did accept are
  resolved by their status webhook (matched on the message id the sender sent as callback data),
  the others are reported ``in_doubt`` on wa.sends after the deadline - none is left waiting.
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from parley_common.topics import MESSAGES_OUT, SENDS, STATUSES

from .harness import Producer, collect, free_port, new_id, outbound, sender_process, simulated_tenant, wait_ready

pytestmark = pytest.mark.infra
NUMBER = "7301"
N = 1000
IN_FLIGHT = 16  # max_in_flight_per_number of the sender under test
# Long enough that no call times out on a loaded machine (a timeout is in doubt too, rightly, but
# this test counts the requests a kill leaves in doubt).
HTTP_TIMEOUT_S = 30
DEADLINE_S = 45


async def states(database_url: str, ids: list[str]) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT message_id, state, wamid FROM sender.messages WHERE message_id = ANY($1)", ids
        )
    finally:
        await conn.close()
    return {r["message_id"]: r for r in rows}


def status(mid: str, wamid: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "event_id": f"{wamid}:sent",
        "tenant_id": "crash",
        "phone_number_id": NUMBER,
        "occurred_at": now,
        "wamid": wamid,
        "status": "sent",
        "recipient_id": "447700900123",
        "biz_opaque_callback_data": mid,
    }


async def test_kill_9_mid_stream_leaves_in_doubt_only_the_calls_in_flight_and_resolves_each(
    kafka_bootstrap: str, database_url: str
) -> None:
    sender_port = free_port()
    run = new_id("k9")
    ids = [f"{run}-{i}" for i in range(N)]
    async with simulated_tenant(database_url, {NUMBER: 80}, tenant="crash", waba="waba-c",
                                behaviour={"latency_ms": 100.0}) as simulated:
        sim_url = simulated.url
        env = os.environ | {
            "PARLEY_DATABASE_URL": database_url,
            "PARLEY_LOG_LEVEL": "WARNING",
            "PARLEY_SENDER_GRAPH_API_BASE": sim_url,
            "PARLEY_SENDER_HTTP_PORT": str(sender_port),
            "PARLEY_SENDER_HTTP_TIMEOUT_S": str(HTTP_TIMEOUT_S),
            "PARLEY_SENDER_MAX_IN_FLIGHT_PER_NUMBER": str(IN_FLIGHT),
            "PARLEY_SENDER_IN_DOUBT_DEADLINE_S": str(DEADLINE_S),
            "PARLEY_SENDER_IN_DOUBT_SWEEP_S": "1",
        }
        async with Producer(kafka_bootstrap) as p:
            for i, mid in enumerate(ids):
                await p.send(MESSAGES_OUT.name, outbound(mid, NUMBER, f"4479{i:08d}"), NUMBER)
        async with httpx.AsyncClient(base_url=sim_url) as sim:
            first = sender_process(env)
            try:
                for _ in range(3000):
                    if (await sim.get("/_sim/stats")).json()["requests"]["accepted"] >= 110:
                        break
                    await asyncio.sleep(0.01)
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            at_kill = await states(database_url, ids)
            sending_at_kill = [mid for mid, r in at_kill.items() if r["state"] == "sending"]
            assert len(sending_at_kill) <= IN_FLIGHT, f"{len(sending_at_kill)} recorded 'sending' after the kill"
            assert 0 < len([r for r in at_kill.values() if r["state"] == "accepted"]) < N

            second = sender_process(env)
            try:
                await wait_ready(sender_port, second)
                # Once the restarted process has read the cut-off requests again they are in doubt:
                # give those the simulator accepted their status webhook, as Meta would.
                for _ in range(300):
                    now = await states(database_url, sending_at_kill)
                    if not any(r["state"] == "sending" for r in now.values()):
                        break
                    await asyncio.sleep(0.1)
                in_doubt = [mid for mid, r in now.items() if r["state"] == "in_doubt"]
                reached_sim: dict[str, str] = {}
                for mid in in_doubt:
                    found = (await sim.get("/_sim/messages", params={"biz_opaque_callback_data": mid})).json()
                    if found["count"]:
                        reached_sim[mid] = found["data"][0]["wamid"]
                async with Producer(kafka_bootstrap) as p:
                    for mid, wamid in reached_sim.items():
                        await p.send(STATUSES.name, status(mid, wamid), NUMBER)
                wanted = set(ids)
                results = await collect(
                    kafka_bootstrap,
                    SENDS.name,
                    lambda rs: wanted <= {r["message_id"] for r in rs},
                    timeout_s=DEADLINE_S + 60,
                )
            finally:
                second.send_signal(signal.SIGINT)
                second.wait(30)
            counts = {}
            for mid in ids:
                r = await sim.get("/_sim/messages", params={"biz_opaque_callback_data": mid})
                counts[mid] = r.json()
    final = await states(database_url, ids)
    outcomes: dict[str, set[str]] = {}
    for r in results:
        if r["message_id"] in wanted:
            outcomes.setdefault(r["message_id"], set()).add(r["outcome"])
    assert set(outcomes) == wanted, f"{len(wanted - set(outcomes))} request(s) without a result"
    assert all(counts[mid]["count"] <= 1 for mid in ids), "the simulator accepted a request twice"
    assert {r["state"] for r in final.values()} <= {"accepted", "unresolved"}
    unresolved = {mid for mid, r in final.items() if r["state"] == "unresolved"}
    assert unresolved <= set(sending_at_kill), (
        f"only calls in flight at the kill may stay in doubt: {len(unresolved - set(sending_at_kill))} others"
    )
    for mid in ids:
        if mid in unresolved:
            assert outcomes[mid] == {"in_doubt"}
            assert counts[mid]["count"] == 0, "a request the simulator accepted was resolved by its status"
        else:
            assert outcomes[mid] == {"accepted"}
            assert counts[mid]["count"] == 1 and counts[mid]["data"][0]["wamid"] == final[mid]["wamid"]
    assert set(reached_sim) <= {mid for mid, r in final.items() if r["state"] == "accepted"}
