"""Attacks on Parley's outbound calls to tenant endpoints, on the real broker and database.

Each test names the attack and checks what happened afterwards: which endpoint was called, with
what signature, what reached ``wa.messages.routed`` and ``wa.deadletter``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from parley_common.topics import DEAD_LETTERS, MESSAGES_IN, MESSAGES_ROUTED
from support.tenancy import import_tenants
from support.waiting import eventually

from .endpoint_harness import TenantEndpoint, signature_parts

pytestmark = pytest.mark.infra

APP_ID = "app-sec-outbound"
# The endpoints of these tests listen on loopback over plain HTTP, which a tenant may only call
# when its settings say so (an operator's decision, in the tenant registry).
LOOPBACK_ALLOWED = {"endpoint_policy": {"allow_http": True, "allow_private_addresses": True}}
TENANTS = {  # tenant -> (phone number id, endpoint behaviour)
    "sec-slow": "108000000000001",
    "sec-fast": "108000000000002",
    "sec-flaky": "108000000000003",
    "sec-empty-secret": "108000000000004",
    "sec-loopback-name": "108000000000005",
    "sec-rejects": "108000000000006",
}


def _secret_env(tenant: str) -> str:
    return "SEC_OUT_" + tenant.upper().replace("-", "_")


@dataclass
class Harness:
    app: FastAPI
    endpoints: dict[str, TenantEndpoint]
    producer: AIOKafkaProducer
    bootstrap: str

    async def send_inbound(self, tenant: str, text: str = "is this offer still on?") -> str:
        number = TENANTS[tenant]
        wamid = f"wamid.sec.{tenant}.{uuid.uuid4().hex[:10]}"
        record = {"event_id": wamid, "wamid": wamid, "phone_number_id": number, "tenant_id": tenant,
                  "occurred_at": datetime.now(UTC).isoformat(), "customer_wa_id": "6281299990000",
                  "type": "text", "text": text}
        await self.producer.send_and_wait(MESSAGES_IN.name, orjson.dumps(record), key=number.encode())
        return wamid


async def _register(database_url: str, ports: dict[str, int]) -> None:
    for tenant in TENANTS:
        os.environ[_secret_env(tenant)] = f"whsec-{tenant}-0123456789abcdef"
    os.environ[_secret_env("sec-empty-secret")] = ""
    os.environ["SEC_OUT_APP_SECRET"] = "app-secret-outbound"

    def router_settings(tenant: str) -> dict[str, Any]:
        host = "localhost" if tenant == "sec-loopback-name" else "127.0.0.1"
        policy = ({"endpoint_policy": {"allow_http": True}} if tenant == "sec-loopback-name"
                  else LOOPBACK_ALLOWED)
        return {"router": {
            **policy,
            "endpoints": {"crm": {"url": f"http://{host}:{ports[tenant]}/hook",
                                  "secret_ref": f"env:{_secret_env(tenant)}"}},
            "rules": [{"name": "everything-to-crm", "then": {"webhook": "crm"}}]}}

    await import_tenants(database_url, {
        "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:SEC_OUT_APP_SECRET"]}],
        "tenants": [{
            "tenant_id": tenant, "name": tenant, "app_id": APP_ID, "business_country": "ID",
            "time_zone": "Asia/Jakarta", "wabas": [f"waba-{tenant}"],
            "phone_numbers": [{"phone_number_id": number, "display_phone_number": "62812" + number[-6:],
                               "waba_id": f"waba-{tenant}"}],
            "settings": router_settings(tenant),
        } for tenant, number in TENANTS.items()],
    })


@pytest.fixture(scope="module")
async def harness(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Harness]:
    endpoints = {tenant: TenantEndpoint() for tenant in TENANTS}
    endpoints["sec-slow"].hold = True
    endpoints["sec-flaky"].statuses = [503, 503]
    endpoints["sec-rejects"].statuses = [400, 400, 400, 400]
    ports = {tenant: await e.start() for tenant, e in endpoints.items()}
    await _register(database_url, ports)

    from parley_router.app import create_app
    from parley_router.settings import RouterSettings

    # A long per-call timeout: the slow endpoint hangs for as long as the test wants it to.
    app = create_app(RouterSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                    batch_timeout_ms=20, webhook_timeout_s=60.0, webhook_attempts=3,
                                    webhook_backoff_s=0.1))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with app.router.lifespan_context(app):
            yield Harness(app, endpoints, producer, kafka_bootstrap)
    finally:
        await producer.stop()
        for e in endpoints.values():
            await e.stop()


async def _records(bootstrap: str, topic: str, predicate: Any, timeout_s: float) -> list[dict[str, Any]]:
    """Records of ``topic`` (from the start) for which ``predicate`` holds, once at least one did."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"sec-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    found: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while loop.time() < deadline and not found:
            for recs in (await consumer.getmany(timeout_ms=300)).values():
                for r in recs:
                    value = orjson.loads(r.value)
                    if predicate(value):
                        found.append(value)
    finally:
        await consumer.stop()
    return found


def _payload_wamid(letter: dict[str, Any]) -> str | None:
    try:
        payload = orjson.loads(letter["payload"])
    except orjson.JSONDecodeError:
        return None
    return payload.get("wamid") if isinstance(payload, dict) else None


async def test_a_slow_endpoint_delays_only_its_own_tenant(harness: Harness) -> None:
    slow, fast = harness.endpoints["sec-slow"], harness.endpoints["sec-fast"]
    await harness.send_inbound("sec-slow")
    await eventually(lambda: slow.arrived.is_set(), what="the slow tenant's endpoint called", timeout_s=30)
    # The slow endpoint now holds its request open. Another tenant's message arrives after it.
    wamid = await harness.send_inbound("sec-fast")
    await eventually(lambda: any(orjson.loads(r.body)["wamid"] == wamid for r in fast.received), timeout_s=20,
                     what="the other tenant's endpoint called while one tenant's endpoint hangs")
    routed = await _records(harness.bootstrap, MESSAGES_ROUTED.name, lambda v: v.get("wamid") == wamid, 20)
    assert routed and routed[0]["tenant_id"] == "sec-fast"
    assert slow.answered == 0, "the slow endpoint was expected to still hold its request"
    slow.release.set()


async def test_signature_carries_a_timestamp_and_signs_it_with_the_body(harness: Harness) -> None:
    fast = harness.endpoints["sec-fast"]
    wamid = await harness.send_inbound("sec-fast")
    await eventually(lambda: any(orjson.loads(r.body)["wamid"] == wamid for r in fast.received), timeout_s=30,
                     what="the message at the tenant's endpoint")
    [received] = [r for r in fast.received if orjson.loads(r.body)["wamid"] == wamid]
    parts = dict(signature_parts(received.headers["x-parley-signature"]))
    assert set(parts) >= {"t", "v1"}, received.headers["x-parley-signature"]
    t = int(parts["t"])
    assert abs(t - time.time()) < 300
    secret = os.environ[_secret_env("sec-fast")].encode()
    assert parts["v1"] == hmac.new(secret, f"{t}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert received.headers["x-parley-event-id"]


async def test_an_endpoint_failing_with_503_is_retried_until_it_accepts(harness: Harness) -> None:
    flaky = harness.endpoints["sec-flaky"]
    wamid = await harness.send_inbound("sec-flaky")
    await eventually(lambda: flaky.answered >= 3, what=lambda: f"3 answers from the flaky endpoint ({flaky.answered})",
                     timeout_s=30)
    bodies = [orjson.loads(r.body)["wamid"] for r in flaky.received]
    assert bodies == [wamid, wamid, wamid]  # two 503s, then accepted: delivered, not lost
    # The same event id on every attempt, so the tenant can drop repeats.
    assert len({r.headers["x-parley-event-id"] for r in flaky.received}) == 1


async def test_an_empty_secret_is_never_used_to_sign(harness: Harness) -> None:
    endpoint = harness.endpoints["sec-empty-secret"]
    wamid = await harness.send_inbound("sec-empty-secret")
    letters = await _records(harness.bootstrap, DEAD_LETTERS.name, lambda v: _payload_wamid(v) == wamid, 30)
    assert letters, "a delivery with an empty secret was expected on the dead-letter topic"
    assert "secret" in letters[0]["reason"] and "empty" in letters[0]["reason"]
    assert endpoint.received == []


async def test_a_host_name_that_resolves_to_loopback_is_never_called(harness: Harness) -> None:
    """``http://localhost…`` passed a string-prefix check; what counts is the address it resolves to."""
    endpoint = harness.endpoints["sec-loopback-name"]
    wamid = await harness.send_inbound("sec-loopback-name")
    letters = await _records(harness.bootstrap, DEAD_LETTERS.name, lambda v: _payload_wamid(v) == wamid, 30)
    assert letters, "a delivery to a loopback address was expected on the dead-letter topic"
    assert "loopback" in letters[0]["reason"]
    assert endpoint.received == []


async def test_an_endpoint_refusing_with_400_is_dead_lettered_after_one_try(harness: Harness) -> None:
    endpoint = harness.endpoints["sec-rejects"]
    wamid = await harness.send_inbound("sec-rejects")
    letters = await _records(harness.bootstrap, DEAD_LETTERS.name, lambda v: _payload_wamid(v) == wamid, 30)
    assert letters and "400" in letters[0]["reason"]
    assert [orjson.loads(r.body)["wamid"] for r in endpoint.received] == [wamid]
