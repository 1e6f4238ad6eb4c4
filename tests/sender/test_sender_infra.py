"""The sender against real Kafka, PostgreSQL and the Cloud API simulator over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_IN, MESSAGES_OUT, SENDS, STATUSES
from parley_sender.cli import read_dead_letters

from .harness import (
    WABA,
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
PN = "9001"
CUSTOMER = "442071234501"


class Env:
    def __init__(
        self, kafka: str, db: str, sim_url: str, keys: dict[str, str], sender: RunningSender
    ) -> None:
        self.kafka, self.db, self.sim_url, self.keys, self.sender = kafka, db, sim_url, keys, sender

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sender.app), base_url="http://sender")

    def auth(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    async def results(self, ids: set[str], timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
        def done(rs: list[dict[str, Any]]) -> bool:
            return ids <= {r["message_id"] for r in rs}

        found = await collect(self.kafka, SENDS.name, done, timeout_s)
        return {r["message_id"]: r for r in found if r["message_id"] in ids}


@pytest.fixture(scope="module")
async def env(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Env]:
    # the catalogue is synced through the sender's own API below, not by the set-up
    async with simulated_tenant(database_url, {PN: 80, "9002": 1000}, tenant="acme", other_tenant="other", waba=WABA,
                                sync_templates=False) as simulated:
        sender = await start_sender(sender_settings(kafka_bootstrap, database_url, simulated.url))
        e = Env(kafka_bootstrap, database_url, simulated.url, simulated.keys, sender)
        async with e.api() as api:
            r = await api.post("/v1/templates/sync", headers=e.auth())
            assert r.status_code == 200, r.text
            assert r.json()["synced"] == 2
        try:
            yield e
        finally:
            await sender.shutdown()


async def test_template_send_is_accepted_and_reported_for_billing(env: Env) -> None:
    mid = new_id()
    async with Producer(env.kafka) as p:
        await p.send(MESSAGES_OUT.name, outbound(mid, PN, CUSTOMER, priority="utility"), PN)
    result = (await env.results({mid}))[mid]
    assert result["outcome"] == "accepted" and result["wamid"].startswith("wamid.")
    assert (result["category"], result["is_template"], result["free_window"]) == ("utility", True, None)
    assert result["event_id"] == f"{mid}:accepted"
    assert await sim_count(env.sim_url, mid) == 1
    async with env.api() as api:
        r = await api.get(f"/v1/messages/{mid}", headers=env.auth())
        assert r.status_code == 200 and r.json()["wamid"] == result["wamid"]
        assert (await api.get(f"/v1/messages/{mid}", headers=env.auth("other"))).status_code == 404
        assert (await api.get(f"/v1/messages/{mid}")).status_code == 401


async def test_redelivered_request_is_sent_once(env: Env) -> None:
    mid = new_id()
    async with Producer(env.kafka) as p:
        for _ in range(3):
            await p.send(MESSAGES_OUT.name, outbound(mid, PN, "442071234502"), PN)
        await env.results({mid})
        await p.send(MESSAGES_OUT.name, outbound(mid, PN, "442071234502"), PN)  # after the outcome too
    await asyncio.sleep(1.0)
    assert await sim_count(env.sim_url, mid) == 1


async def test_free_form_window_rules_against_real_streams(env: Env) -> None:
    closed, tracked, unseen = new_id(), new_id(), new_id()
    customer_b, customer_c = "442071234503", "442071234504"
    now = datetime.now(UTC).isoformat()
    async with httpx.AsyncClient(base_url=env.sim_url) as sim:  # Meta's side knows both customers wrote
        for c in (customer_b, customer_c):
            await sim.post("/_sim/windows", json={"phone_number_id": PN, "customer": c})
    async with Producer(env.kafka) as p:
        await p.send(MESSAGES_OUT.name, outbound(closed, PN, "442071234599", kind="text"), PN)
        await p.send(
            MESSAGES_IN.name,
            {
                "event_id": "wamid.in-b",
                "wamid": "wamid.in-b",
                "phone_number_id": PN,
                "tenant_id": "acme",  # bound by ingest from the verified app
                "occurred_at": now,
                "customer_wa_id": customer_b,
                "type": "text",
            },
            PN,
        )
        await asyncio.sleep(1.5)  # the window tracker consumes the inbound message
        await p.send(MESSAGES_OUT.name, outbound(tracked, PN, customer_b, kind="text"), PN)
        # A reply to an inbound message the tracker has never seen is not refused.
        await p.send(
            MESSAGES_OUT.name,
            outbound(unseen, PN, customer_c, kind="text", reply_to_wamid="wamid.never-seen"),
            PN,
        )
    results = await env.results({closed, tracked, unseen})
    assert results[closed]["outcome"] == "refused"
    assert results[closed]["error_code"] == 131047
    assert results[closed]["reason"].startswith("outside_customer_service_window")
    assert await sim_count(env.sim_url, closed) == 0
    for mid in (tracked, unseen):
        assert results[mid]["outcome"] == "accepted", results[mid]
        assert (results[mid]["category"], results[mid]["free_window"]) == ("service", "customer_service")


async def test_statuses_only_move_forward_and_early_status_is_kept(env: Env) -> None:
    wamid = "wamid.early-" + new_id()
    now = datetime.now(UTC).isoformat()

    def status(s: str) -> dict[str, Any]:
        return {
            "event_id": f"{wamid}:{s}",
            "wamid": wamid,
            "status": s,
            "phone_number_id": PN,
            "tenant_id": "acme",  # bound by ingest from the verified app
            "occurred_at": now,
            "recipient_id": CUSTOMER,
        }

    async with Producer(env.kafka) as p:
        for s in ("read", "delivered", "sent"):
            await p.send(STATUSES.name, status(s), PN)
    await asyncio.sleep(2.0)
    conn = await asyncpg.connect(env.db)
    try:
        row = await conn.fetchrow(
            "SELECT status, sent_at, delivered_at FROM sender.deliveries WHERE wamid=$1", wamid
        )
    finally:
        await conn.close()
    assert row is not None and row["status"] == "read"
    assert row["sent_at"] is not None and row["delivered_at"] is not None


async def test_131050_status_suppresses_marketing_but_not_utility(env: Env) -> None:
    customer = "442071234505"
    now = datetime.now(UTC).isoformat()
    promo, utility = new_id(), new_id()
    async with Producer(env.kafka) as p:
        await p.send(
            STATUSES.name,
            {
                "event_id": "wamid.x:failed",
                "wamid": "wamid.x-" + promo,
                "status": "failed",
                "phone_number_id": PN,
                "tenant_id": "acme",  # bound by ingest from the verified app
                "occurred_at": now,
                "recipient_id": customer,
                "errors": [{"code": 131050, "title": "stopped"}],
            },
            PN,
        )
        await asyncio.sleep(2.0)
        await p.send(
            MESSAGES_OUT.name,
            outbound(promo, PN, customer, name="promo", params=("Ann",), priority="marketing"),
            PN,
        )
        await p.send(MESSAGES_OUT.name, outbound(utility, PN, customer), PN)
    results = await env.results({promo, utility})
    assert results[promo]["outcome"] == "refused" and results[promo]["reason"].startswith(
        "marketing_opted_out"
    )
    assert results[utility]["outcome"] == "accepted"


async def test_paused_template_webhook_refuses_sends(env: Env) -> None:
    mid = new_id()
    async with Producer(env.kafka) as p:
        await p.send(
            ACCOUNT_EVENTS.name,
            {
                "event_id": new_id("acct"),
                "phone_number_id": "waba-s1",
                "tenant_id": "acme",  # bound by ingest from the verified app
                "waba_id": "waba-s1",
                "occurred_at": datetime.now(UTC).isoformat(),
                "kind": "message_template_status_update",
                "value": {
                    "event": "PAUSED",
                    "message_template_name": "promo",
                    "message_template_language": "en_US",
                },
            },
            "waba-s1",
        )
        await asyncio.sleep(2.0)
        await p.send(MESSAGES_OUT.name, outbound(mid, PN, "442071234506", name="promo", params=("Z",)), PN)
    result = (await env.results({mid}))[mid]
    assert result["outcome"] == "refused" and result["error_code"] == 132015


async def test_poison_record_is_dead_lettered_and_does_not_block_the_partition(env: Env) -> None:
    after = new_id()
    async with Producer(env.kafka) as p:
        await p.send(MESSAGES_OUT.name, b"{not json", PN)
        await p.send(MESSAGES_OUT.name, outbound(after, PN, "442071234507"), PN)
    assert (await env.results({after}))[after]["outcome"] == "accepted"
    letters = await read_dead_letters(env.kafka)
    assert any(le.source_topic == MESSAGES_OUT.name and le.payload == "{not json" for le in letters)


async def test_server_errors_are_retried_through_the_retry_topic(env: Env) -> None:
    mid = new_id()
    async with httpx.AsyncClient(base_url=env.sim_url) as sim:
        await sim.patch("/_sim/behaviour", json={"error_5xx_rate": 1.0})
        async with Producer(env.kafka) as p:
            await p.send(MESSAGES_OUT.name, outbound(mid, PN, "442071234508"), PN)
        await asyncio.sleep(1.5)
        await sim.patch("/_sim/behaviour", json={"error_5xx_rate": 0.0})
    result = (await env.results({mid}, timeout_s=30))[mid]
    assert result["outcome"] == "accepted" and result["attempt"] >= 1
    assert await sim_count(env.sim_url, mid) == 1


async def test_template_preview_and_catalogue_are_per_tenant(env: Env) -> None:
    async with env.api() as api:
        r = await api.post(
            "/v1/templates/preview",
            headers=env.auth(),
            json={
                "name": "order_update",
                "language": "en_US",
                "components": [
                    {
                        "type": "body",
                        "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-9"}],
                    }
                ],
            },
        )
        assert r.status_code == 200 and r.json()["text"] == "Hi Ann, order A-9 ships today."
        bad = await api.post(
            "/v1/templates/preview",
            headers=env.auth(),
            json={"name": "order_update", "language": "en_US", "components": []},
        )
        assert bad.status_code == 422 and bad.json()["detail"]["error_code"] == 132000
        other = await api.post(
            "/v1/templates/preview",
            headers=env.auth("other"),
            json={"name": "order_update", "language": "en_US", "components": []},
        )
        assert other.status_code == 404
        listed = await api.get("/v1/templates", headers=env.auth())
        assert {t["name"] for t in listed.json()["data"]} >= {"order_update", "promo"}
        assert (await api.get("/v1/templates", headers=env.auth("other"))).json()["data"] == []
        created = await api.post(
            "/v1/templates",
            headers=env.auth(),
            json={
                "name": "new_one",
                "language": "en_US",
                "category": "UTILITY",
                "components": [{"type": "BODY", "text": "Hello {{1}}", "example": {"body_text": [["Ann"]]}}],
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["status"] in ("PENDING", "APPROVED")
