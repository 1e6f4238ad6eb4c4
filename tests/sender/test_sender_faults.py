"""The sender under the faults of issue 12, against real Kafka, PostgreSQL and the simulator.

- a send request PostgreSQL cannot store (NUL in its text or callback data) is dead-lettered
  with a reason and its partition moves on;
- callback data reused across a campaign wedges nothing: sends carry the request's own id as
  callback data, a sibling's status never gives its wamid to another message, and a request cut
  off mid-call never takes a sibling's wamid;
- what another replica finished meanwhile is read from the database, never from this process's
  memory (a partition coming back is not served stale state).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from parley_common.topics import MESSAGES_OUT, SENDS, STATUSES
from parley_sender.cli import read_dead_letters

from .harness import (
    TOKEN,
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
PN = "7401"


class Env:
    def __init__(self, kafka: str, db: str, sim_url: str, keys: dict[str, str], sender: RunningSender) -> None:
        self.kafka, self.db, self.sim_url, self.keys, self.sender = kafka, db, sim_url, keys, sender

    async def results(self, ids: set[str], timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
        found = await collect(self.kafka, SENDS.name, lambda rs: ids <= {r["message_id"] for r in rs}, timeout_s)
        return {r["message_id"]: r for r in found if r["message_id"] in ids}

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.db)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sender.app), base_url="http://sender")

    async def state(self, mid: str) -> asyncpg.Record | None:
        rows = await self.sql("SELECT state, wamid, attempt FROM sender.messages WHERE message_id = $1", mid)
        return rows[0] if rows else None


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Env]:
    async with simulated_tenant(database_url, {PN: 200}, tenant="faults", waba="waba-f") as simulated:
        sim_url = simulated.url
        keys = simulated.keys
        # Retries far off: a retried request stays 'retrying' while a test looks at it.
        settings = sender_settings(
            kafka_bootstrap,
            database_url,
            sim_url,
            retry_initial_s=30.0,
            retry_max_s=60.0,
            in_doubt_deadline_s=60.0,
            in_doubt_sweep_s=0.5,
        )
        sender = await start_sender(settings)
        try:
            yield Env(kafka_bootstrap, database_url, sim_url, keys, sender)
        finally:
            await sender.shutdown()


def with_nul(mid: str, field: str) -> bytes:
    """A text request whose ``field`` holds U+0000 (as JSON carries it: the escape \\u0000)."""
    body = outbound(mid, PN, "442071230001", kind="text")
    marker = "NUL-HERE"
    if field == "text":
        body["content"] = {"body": f"a{marker}b"}
    else:
        body["biz_opaque_callback_data"] = f"cb{marker}"
    return orjson.dumps(body).replace(marker.encode(), b"\\u0000")


@pytest.mark.parametrize("field", ["text", "callback"])
async def test_a_request_postgresql_cannot_store_is_dead_lettered_and_the_partition_moves_on(
    env: Env, field: str
) -> None:
    poison, after = new_id("nul"), new_id("after")
    async with Producer(env.kafka) as p:
        await p.send(MESSAGES_OUT.name, with_nul(poison, field), PN)
        await p.send(MESSAGES_OUT.name, outbound(after, PN, "442071230002"), PN)
    assert (await env.results({after}))[after]["outcome"] == "accepted"
    letters = [le for le in await read_dead_letters(env.kafka) if poison in le.payload]
    assert len(letters) >= 1
    expected = "content.body" if field == "text" else "biz_opaque_callback_data"
    assert f"{expected} contains NUL (U+0000)" in letters[0].reason
    assert "\x00" not in letters[0].reason
    assert await env.state(poison) is None and await sim_count(env.sim_url, poison) == 0


async def test_a_campaign_reusing_callback_data_sends_each_request_under_its_own_id(env: Env) -> None:
    ids = [new_id("camp") for _ in range(3)]
    async with Producer(env.kafka) as p:
        for i, mid in enumerate(ids):
            await p.send(
                MESSAGES_OUT.name, outbound(mid, PN, f"44207123100{i}", biz_opaque_callback_data="spring-sale"), PN
            )
    results = await env.results(set(ids))
    assert {r["outcome"] for r in results.values()} == {"accepted"}
    assert [await sim_count(env.sim_url, mid) for mid in ids] == [1, 1, 1]
    assert await sim_count(env.sim_url, "spring-sale") == 0


def status(wamid: str, callback: str, s: str = "sent") -> dict[str, Any]:
    return {
        "event_id": f"{wamid}:{s}",
        "tenant_id": "faults",
        "phone_number_id": PN,
        "occurred_at": datetime.now(UTC).isoformat(),
        "wamid": wamid,
        "status": s,
        "recipient_id": "442071239999",
        "biz_opaque_callback_data": callback,
    }


async def insert_row(env: Env, mid: str, state: str, callback: str, wamid: str | None = None) -> None:
    await env.sql(
        """INSERT INTO sender.messages (message_id, tenant_id, phone_number_id, recipient, state, attempt,
               wamid, callback_data, is_template)
           VALUES ($1, 'faults', $2, '442071239999', $3, 0, $4, $5, true)""",
        mid,
        PN,
        state,
        wamid,
        callback,
    )


async def test_a_siblings_status_never_wedges_in_doubt_resolution(env: Env) -> None:
    """Rows written before requests carried their own id share the tenant's callback data."""
    shared = new_id("legacy-cb")
    sibling, doubt1, doubt2 = new_id("sib"), new_id("d1"), new_id("d2")
    w_sibling, w_new, w_later = f"wamid.{sibling}", f"wamid.{new_id()}", f"wamid.{new_id()}"
    await insert_row(env, sibling, "accepted", shared, w_sibling)
    await insert_row(env, doubt1, "in_doubt", shared)
    await insert_row(env, doubt2, "in_doubt", shared)
    async with Producer(env.kafka) as p:
        await p.send(STATUSES.name, status(w_sibling, shared, "delivered"), PN)  # the sibling's own status
        await p.send(STATUSES.name, status(w_new, shared), PN)  # the status of one in-doubt send
        await p.send(STATUSES.name, status(w_later, "unrelated"), PN)  # later records still flow
    for _ in range(150):
        if await env.sql("SELECT 1 FROM sender.deliveries WHERE wamid = $1", w_later):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the statuses consumer is stuck")
    states = {mid: await env.state(mid) for mid in (sibling, doubt1, doubt2)}
    assert states[sibling]["wamid"] == w_sibling  # type: ignore[index]
    resolved = [mid for mid in (doubt1, doubt2) if states[mid]["state"] == "accepted"]  # type: ignore[index]
    assert len(resolved) == 1 and states[resolved[0]]["wamid"] == w_new  # type: ignore[index]
    results = await env.results({resolved[0]})
    assert results[resolved[0]]["outcome"] == "accepted"


async def test_a_request_cut_off_mid_call_never_takes_a_siblings_wamid(env: Env) -> None:
    shared = new_id("legacy-cb")
    sibling, cut, after = new_id("sib"), new_id("cut"), new_id("after")
    w_sibling = f"wamid.{sibling}"
    await insert_row(env, sibling, "accepted", shared, w_sibling)
    await env.sql(
        "INSERT INTO sender.deliveries (wamid, phone_number_id, status, status_rank, callback_data) "
        "VALUES ($1, $2, 'delivered', 2, $3)",
        w_sibling,
        PN,
        shared,
    )
    await insert_row(env, cut, "sending", shared)  # a process died during this call
    async with Producer(env.kafka) as p:
        await p.send(MESSAGES_OUT.name, outbound(cut, PN, "442071239999"), PN)
        await p.send(MESSAGES_OUT.name, outbound(after, PN, "442071230003"), PN)
    assert (await env.results({after}))[after]["outcome"] == "accepted"  # the partition moved on
    row = await env.state(cut)
    assert row is not None and row["state"] == "in_doubt" and row["wamid"] is None
    assert await sim_count(env.sim_url, cut) == 0  # never re-sent blindly


async def test_a_request_another_replica_finished_is_read_from_the_database(env: Env) -> None:
    """This process saw the request fail and scheduled its retry; another replica (here: the test)
    sent the retry meanwhile. When the retry comes back here, the database decides: no resend."""
    mid = new_id("stale")
    async with httpx.AsyncClient(base_url=env.sim_url) as sim:
        await sim.patch("/_sim/behaviour", json={"error_5xx_rate": 1.0})
        async with Producer(env.kafka) as p:
            await p.send(MESSAGES_OUT.name, outbound(mid, PN, "442071230004"), PN)
        for _ in range(150):
            row = await env.state(mid)
            if row is not None and row["state"] == "retrying":
                break
            await asyncio.sleep(0.1)
        await sim.patch("/_sim/behaviour", json={"error_5xx_rate": 0.0})
        assert row is not None and row["state"] == "retrying" and row["attempt"] == 1
        other = await sim.post(
            f"/v24.0/{PN}/messages",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={
                "messaging_product": "whatsapp",
                "to": "442071230004",
                "type": "template",
                "template": {
                    "name": "order_update",
                    "language": {"code": "en_US"},
                    "components": [
                        {
                            "type": "body",
                            "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-1"}],
                        }
                    ],
                },
                "biz_opaque_callback_data": mid,
            },
        )
        wamid = other.json()["messages"][0]["id"]
    await env.sql("UPDATE sender.messages SET state = 'accepted', wamid = $2 WHERE message_id = $1", mid, wamid)
    async with Producer(env.kafka) as p:
        await p.send(MESSAGES_OUT.name, outbound(mid, PN, "442071230004", attempt=1), PN)
    result = (await env.results({mid}))[mid]
    assert result["outcome"] == "accepted" and result["wamid"] == wamid
    await asyncio.sleep(1.0)
    assert await sim_count(env.sim_url, mid) == 1


async def test_in_doubt_past_the_deadline_is_reported_and_a_recorded_status_resolves_it(env: Env) -> None:
    """The sweep: a request in doubt for longer than the deadline (60 s here) is reported
    ``in_doubt`` on wa.sends and shown so to the tenant, who may resend; one whose status webhook
    was recorded before it was in doubt is accepted with that wamid."""
    old, known = new_id("overdue"), new_id("known")
    w_known = f"wamid.{known}"
    await insert_row(env, old, "in_doubt", old)
    await env.sql(
        "UPDATE sender.messages SET updated_at = now() - interval '1 hour', request = $2::jsonb WHERE message_id = $1",
        old,
        orjson.dumps(outbound(old, PN, "442071239999", biz_opaque_callback_data="tenant-ref-9")).decode(),
    )
    await env.sql(
        "INSERT INTO sender.deliveries (wamid, phone_number_id, status, status_rank, callback_data) "
        "VALUES ($1, $2, 'sent', 1, $3)",
        w_known,
        PN,
        known,
    )
    await insert_row(env, known, "in_doubt", known)
    results = await env.results({old, known})
    assert results[old]["outcome"] == "in_doubt" and "send it again" in results[old]["reason"]
    assert results[known]["outcome"] == "accepted" and results[known]["wamid"] == w_known
    row = await env.state(old)
    assert row is not None and row["state"] == "unresolved"
    async with env.api() as api:
        r = await api.get(f"/v1/messages/{old}", headers={"Authorization": f"Bearer {env.keys['faults']}"})
    assert r.status_code == 200
    body = r.json()
    assert (body["state"], body["send_state"], body["may_resend"]) == ("in_doubt", "unresolved", True)
    assert body["biz_opaque_callback_data"] == "tenant-ref-9"
    # A status that names it later still counts: Meta did accept it after all.
    async with Producer(env.kafka) as p:
        await p.send(STATUSES.name, status(f"wamid.{old}", old, "delivered"), PN)
    for _ in range(100):
        row = await env.state(old)
        if row is not None and row["state"] == "accepted":
            break
        await asyncio.sleep(0.1)
    assert row is not None and row["state"] == "accepted" and row["wamid"] == f"wamid.{old}"


async def test_a_status_postgresql_cannot_store_is_dead_lettered_and_later_statuses_flow(env: Env) -> None:
    bad, good = f"wamid.{new_id('nulst')}", f"wamid.{new_id('after')}"
    raw = orjson.dumps(status(bad + "NUL-HERE", "x")).replace(b"NUL-HERE", b"\\u0000")
    async with Producer(env.kafka) as p:
        await p.send(STATUSES.name, raw, PN)
        await p.send(STATUSES.name, status(good, "y"), PN)
    for _ in range(150):
        if await env.sql("SELECT 1 FROM sender.deliveries WHERE wamid = $1", good):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the statuses consumer is stuck")
    letters = [le for le in await read_dead_letters(env.kafka) if bad in le.payload]
    assert letters and "contains NUL (U+0000)" in letters[0].reason
