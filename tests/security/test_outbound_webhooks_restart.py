"""A tenant endpoint call survives the router stopping in the middle of it: the call waits in
``router.webhook_outbox`` (written with the batch's wamids, before the offsets were committed),
and the next router makes it. At least once, with the same event id."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from parley_common.topics import MESSAGES_IN
from support.tenancy import import_tenants
from support.waiting import eventually

from .endpoint_harness import TenantEndpoint

pytestmark = pytest.mark.infra

TENANT, NUMBER = "sec-restart", "108000000000099"


async def test_a_call_cut_short_by_a_stop_is_made_by_the_next_router(kafka_bootstrap: str,
                                                                    database_url: str) -> None:
    from parley_router.app import create_app
    from parley_router.settings import RouterSettings
    from parley_router.store import RouterStore

    endpoint = TenantEndpoint(hold=True)
    port = await endpoint.start()
    os.environ["SEC_RESTART_SECRET"] = "whsec-restart-0123456789"
    await import_tenants(database_url, {
        "apps": [{"app_id": "app-sec-restart", "app_secret_refs": ["env:SEC_RESTART_SECRET"]}],
        "tenants": [{"tenant_id": TENANT, "name": TENANT, "app_id": "app-sec-restart",
                     "business_country": "ID", "time_zone": "Asia/Jakarta", "wabas": ["waba-sec-restart"],
                     "phone_numbers": [{"phone_number_id": NUMBER, "display_phone_number": "6281200000099",
                                        "waba_id": "waba-sec-restart"}],
                     "settings": {"router": {
                         "endpoint_policy": {"allow_http": True, "allow_private_addresses": True},
                         "endpoints": {"crm": {"url": f"http://127.0.0.1:{port}/hook",
                                               "secret_ref": "env:SEC_RESTART_SECRET"}},
                         "rules": [{"name": "everything-to-crm", "then": {"webhook": "crm"}}]}}}]})

    settings = RouterSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url, webhook_timeout_s=60.0)
    wamid = f"wamid.sec.restart.{uuid.uuid4().hex[:10]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        first = create_app(settings)
        async with first.router.lifespan_context(first):
            await producer.send_and_wait(MESSAGES_IN.name, orjson.dumps({
                "event_id": wamid, "wamid": wamid, "phone_number_id": NUMBER, "tenant_id": TENANT,
                "occurred_at": datetime.now(UTC).isoformat(), "customer_wa_id": "6281299990001",
                "type": "text", "text": "is this offer still on?"}), key=NUMBER.encode())
            await eventually(lambda: endpoint.arrived.is_set(), what="the endpoint called", timeout_s=60)
            store = RouterStore(first.state.runtime.require_pool())
            assert await store.pending_deliveries(TENANT) == 1
        # The first router stopped while the endpoint still held the call: nothing was answered.
        assert endpoint.answered == 0
        endpoint.hold = False
        second = create_app(settings)
        async with second.router.lifespan_context(second):
            await eventually(lambda: endpoint.answered >= 1, what="the next router making the call", timeout_s=60)
            store = RouterStore(second.state.runtime.require_pool())
            for _ in range(100):  # the row goes once the endpoint's 200 was recorded
                if await store.pending_deliveries(TENANT) == 0:
                    break
                await asyncio.sleep(0.1)
            assert await store.pending_deliveries(TENANT) == 0, "the delivered call stayed in the outbox"
    finally:
        await producer.stop()
        await endpoint.stop()

    bodies = [orjson.loads(r.body)["wamid"] for r in endpoint.received]
    assert bodies == [wamid, wamid]  # the cut-short attempt and the one that was answered
    assert len({r.headers["x-parley-event-id"] for r in endpoint.received}) == 1

