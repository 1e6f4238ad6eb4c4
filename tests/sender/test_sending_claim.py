"""The 'sending' write is a claim on the request's Cloud API call (docs/adr/0030): of two
processes that both decided to send one request (a paused replica that lost its partitions and
the replica that took them over), only the one whose claim won calls; the other makes no call and
applies no effect. Real PostgreSQL; the Cloud API is a fake that counts the calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
from parley_common.contracts import OutboundMessage
from parley_common.db import create_pool, migrate
from parley_common.tenancy.directory import TenantDirectory
from parley_common.tenancy.models import Tenant
from parley_sender.cloudapi import SendResponse
from parley_sender.delivery import Metrics, Sender
from parley_sender.domain.outcomes import MessageState
from parley_sender.domain.policy import SendPlan
from parley_sender.store import MIGRATIONS, SenderStore
from prometheus_client import CollectorRegistry

from .harness import new_id, outbound, sender_settings

pytestmark = pytest.mark.infra

PN = "15550009001"
TENANT = Tenant("t-claim", "Claim", "app-claim", "US", "UTC", None)
PLAN = SendPlan(
    body={"messaging_product": "whatsapp", "type": "text"},
    is_template=False,
    category="service",
    free_window="customer_service",
)


class CountingCloudApi:
    """Counts the calls per request; each call takes a moment, so rivals overlap."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def send_message(
        self, app: Any, phone_number_id: str, body: dict[str, Any], *, endpoint: str = "messages"
    ) -> SendResponse:
        mid = body["biz_opaque_callback_data"]
        self.calls[mid] = self.calls.get(mid, 0) + 1
        await asyncio.sleep(0.05)
        return SendResponse(wamid=f"wamid.{mid}.{self.calls[mid]}", message_status="accepted", http_status=200)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url)
    async with pool.acquire() as conn:
        await migrate(conn, "sender", MIGRATIONS)
    yield pool
    await pool.close()


def replica(pool: asyncpg.Pool, api: CountingCloudApi, database_url: str) -> Sender:
    """One sender process (its own journal and claims; no Kafka: ``_send_one`` is driven directly)."""
    return Sender(
        settings=sender_settings("unused:9092", database_url, "http://unused"),
        store=SenderStore(pool),
        client=cast(Any, api),
        tenants=TenantDirectory,
        metrics=Metrics.create(CollectorRegistry()),
        effects=cast(Any, None),
    )


def request(mid: str) -> OutboundMessage:
    return OutboundMessage.model_validate(outbound(mid, PN, "15550001234", kind="text", tenant_id=TENANT.tenant_id))


async def settle(sender: Sender, m: OutboundMessage) -> Any:
    outcome = await sender._send_one(m, PLAN, TENANT, None, None)
    await sender._outcomes_written([outcome])
    return outcome


async def test_two_replicas_racing_for_one_request_make_one_call(pool: asyncpg.Pool, database_url: str) -> None:
    api = CountingCloudApi()
    a, b = replica(pool, api, database_url), replica(pool, api, database_url)
    mids = [new_id("race") for _ in range(5)]
    outcomes = await asyncio.gather(*(settle(s, request(mid)) for mid in mids for s in (a, b)))
    assert api.calls == dict.fromkeys(mids, 1)
    rows = {
        r["message_id"]: r
        for r in await pool.fetch(
            "SELECT message_id, state, wamid FROM sender.messages WHERE message_id = ANY($1)", mids
        )
    }
    for mid in mids:
        assert (rows[mid]["state"], rows[mid]["wamid"]) == ("accepted", f"wamid.{mid}.1")
        published = [o for o in outcomes if o.row.message_id == mid and o.publish_result]
        assert len(published) == 1 and published[0].row.state == "accepted"


async def test_a_resumed_replica_does_not_send_what_the_other_one_sent(pool: asyncpg.Pool, database_url: str) -> None:
    api = CountingCloudApi()
    paused, taker = replica(pool, api, database_url), replica(pool, api, database_url)
    mid = new_id("paused")
    sent = await settle(taker, request(mid))  # took the partition over and sent it
    assert sent.row.state == "accepted"
    late = await settle(paused, request(mid))  # resumes with the send it had decided on
    assert api.calls == {mid: 1}
    assert not late.publish_result and late.retry is None and late.dead_letter_reason is None
    assert await pool.fetchval("SELECT state FROM sender.messages WHERE message_id = $1", mid) == "accepted"


async def test_a_request_another_process_is_sending_or_holds_in_doubt_is_not_called(
    pool: asyncpg.Pool, database_url: str
) -> None:
    api = CountingCloudApi()
    sender = replica(pool, api, database_url)
    store = SenderStore(pool)
    for held in ("sending", "in_doubt"):
        mid = new_id(held)
        row = sender.outcomes.row(request(mid), PLAN, TENANT.tenant_id, MessageState(held))
        assert await store.record_outcomes([row], claim="another-process") == set()
        outcome = await settle(sender, request(mid))
        assert not outcome.publish_result
        assert await pool.fetchval("SELECT state FROM sender.messages WHERE message_id = $1", mid) == held
    assert api.calls == {}
