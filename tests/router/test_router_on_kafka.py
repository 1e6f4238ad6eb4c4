"""End to end on the real broker and database: inbound in six languages → expected destinations."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from parley_common.outbound import verify
from parley_common.topics import (
    ACCOUNT_EVENTS,
    AGENT_QUEUE,
    DEAD_LETTERS,
    MESSAGES_IN,
    MESSAGES_OUT,
    MESSAGES_ROUTED,
)
from support.tenancy import import_tenants

pytestmark = pytest.mark.infra

NUMBER = "109000000000001"
SECRET = "endpoint-secret-for-tests"
CUSTOMER = "8801799999999"


class EndpointRecorder:
    """A real HTTP endpoint on loopback that records signed POSTs."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((headers, body))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


def inbound(wamid: str, text: str | None, **kw: Any) -> dict[str, Any]:
    return {"event_id": wamid, "wamid": wamid, "phone_number_id": NUMBER, "tenant_id": "router-e2e",
            "occurred_at": datetime.now(UTC).isoformat(), "customer_wa_id": "8801799999999",
            "type": "text", "text": text, **kw}


async def _collect(bootstrap: str, topics: list[str], wanted: set[str],
                   wait_s: float) -> dict[str, list[dict[str, Any]]]:
    """Records about ``wanted`` wamids (or the test customer) on ``topics``; returns once every
    wamid was routed and two more seconds passed (so duplicates would show), or after ``wait_s``."""
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"router-test-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    found: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
    loop = asyncio.get_running_loop()
    deadline, settle_until = loop.time() + wait_s, None
    try:
        while loop.time() < deadline and (settle_until is None or loop.time() < settle_until):
            for tp, recs in (await consumer.getmany(timeout_ms=500)).items():
                for r in recs:
                    value = orjson.loads(r.value)
                    if tp.topic == DEAD_LETTERS.name:  # kept whole; the test picks its own
                        try:  # other tests of the session dead-letter non-JSON records too
                            original = orjson.loads(value["payload"])
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(original, dict):
                            found[tp.topic].append({**value, "wamid": original.get("wamid")})
                        continue
                    marker = value.get("wamid") or value.get("reply_to_wamid") or value.get("customer_id")
                    if marker in wanted or marker == CUSTOMER:
                        found[tp.topic].append({**value, "_key": r.key, "_headers": dict(r.headers)})
            if settle_until is None and wanted <= {v.get("wamid") for v in found[topics[0]]}:
                settle_until = loop.time() + 2.0
    finally:
        await consumer.stop()
    return found


async def test_six_languages_are_routed_to_the_expected_destinations(kafka_bootstrap: str,
                                                                     database_url: str) -> None:
    endpoint = EndpointRecorder()
    port = await endpoint.start()
    os.environ["ROUTER_E2E_ENDPOINT_SECRET"] = SECRET
    await import_tenants(database_url, {
        "apps": [{"app_id": "app-router-e2e", "app_secret_refs": ["env:ROUTER_E2E_ENDPOINT_SECRET"]}],
        "tenants": [{
            "tenant_id": "router-e2e", "name": "Router E2E", "app_id": "app-router-e2e",
            "business_country": "BD", "time_zone": "Asia/Dhaka", "wabas": ["waba-router-e2e"],
            "phone_numbers": [{"phone_number_id": NUMBER, "display_phone_number": "8801700000009",
                               "waba_id": "waba-router-e2e"}],
            "settings": {"router": {
                "auto_reply": True,
                # the test's endpoint listens on loopback over http: an operator's exception
                "endpoint_policy": {"allow_http": True, "allow_private_addresses": True},
                "endpoints": {"crm": {"url": f"http://127.0.0.1:{port}/hook",
                                      "secret_ref": "env:ROUTER_E2E_ENDPOINT_SECRET"}},
                "rules": [{"name": "ad-leads", "when": {"referral": ["ad-777"]},
                           "then": {"webhook": "crm"}}],
            }},
        }],
    })

    from parley_router.app import create_app
    from parley_router.settings import RouterSettings

    run = uuid.uuid4().hex[:8]
    cases: dict[str, tuple[dict[str, Any], str | None, str, str]] = {
        f"wamid.{run}.en": (inbound(f"wamid.{run}.en", "hi, can I book two tickets for friday?"),
                            "buy_ticket", "auto_reply", "en"),
        f"wamid.{run}.es": (inbound(f"wamid.{run}.es", "quiero hablar con una persona"),
                            "human_agent", "agent_queue", "es"),
        f"wamid.{run}.id": (inbound(f"wamid.{run}.id", "pesanan saya belum sampai, dimana ya"),
                            "order_status", "auto_reply", "id"),
        f"wamid.{run}.tr": (inbound(f"wamid.{run}.tr", "DUR"), "opt_out", "consent", "tr"),
        f"wamid.{run}.ar": (inbound(f"wamid.{run}.ar", "الخدمة سيئة جدا والسائق كان وقح"),
                            "complaint", "agent_queue", "ar"),
        f"wamid.{run}.bn": (inbound(f"wamid.{run}.bn", "আমার টিকিটের টাকা ফেরত চাই"),
                            "refund", "auto_reply", "bn"),
        f"wamid.{run}.bnl": (inbound(f"wamid.{run}.bnl", "Stop promotions", type="button",
                                     button_payload="Stop promotions"), "opt_out", "consent", "en"),
        f"wamid.{run}.ad": (inbound(f"wamid.{run}.ad", "is this offer still on?",
                                    referral={"source_id": "ad-777", "source_type": "ad"}),
                            None, "tenant_webhook", "en"),
    }
    app = create_app(RouterSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                    batch_timeout_ms=50))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with app.router.lifespan_context(app):
            for rec, *_rest in cases.values():
                await producer.send_and_wait(MESSAGES_IN.name, orjson.dumps(rec), key=NUMBER.encode())
            # A record that is not an InboundMessage goes to the dead letters, alone.
            await producer.send_and_wait(MESSAGES_IN.name, orjson.dumps({"wamid": f"wamid.{run}.bad"}),
                                         key=NUMBER.encode())
            # Meta re-sends the English message: it must route once.
            dup = cases[f"wamid.{run}.en"][0]
            await producer.send_and_wait(MESSAGES_IN.name, orjson.dumps(dup), key=NUMBER.encode())
            topics = [MESSAGES_ROUTED.name, MESSAGES_OUT.name, AGENT_QUEUE.name, ACCOUNT_EVENTS.name,
                      DEAD_LETTERS.name]
            found = await _collect(kafka_bootstrap, topics, set(cases), wait_s=60)
            for _ in range(200):  # the endpoint is called off the consume path, soon after routing
                if endpoint.requests:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            # A second redelivery after the first was routed is skipped by the durable dedupe.
            await producer.send_and_wait(MESSAGES_IN.name, orjson.dumps(dup), key=NUMBER.encode())
            await asyncio.sleep(3)
            found_after = await _collect(kafka_bootstrap, [MESSAGES_ROUTED.name], {f"wamid.{run}.en"},
                                         wait_s=8)
    finally:
        await producer.stop()
        if endpoint.server:
            endpoint.server.close()

    routed = {r["wamid"]: r for r in found[MESSAGES_ROUTED.name]}
    assert set(routed) == set(cases)
    for wamid, (_rec, intent, kind, lang) in cases.items():
        r = routed[wamid]
        assert r["destination"]["kind"] == kind, (wamid, r)
        if intent:
            assert r["intent"] == intent, (wamid, r)
        assert r["language"] == lang, (wamid, r)
        assert r["_key"] == NUMBER.encode() and r["tenant_id"] == "router-e2e"

    # Duplicates of an inbound route once.
    assert len([r for r in found[MESSAGES_ROUTED.name] if r["wamid"] == f"wamid.{run}.en"]) == 1
    assert len([r for r in found_after[MESSAGES_ROUTED.name] if r["wamid"] == f"wamid.{run}.en"]) == 1

    replies = {o["reply_to_wamid"]: o for o in found[MESSAGES_OUT.name]}
    assert replies[f"wamid.{run}.bn"]["content"]["body"].startswith("দুঃখিত")
    en_reply = replies[f"wamid.{run}.en"]
    assert en_reply["origin"] == "router" and en_reply["priority"] == "reply"
    assert f"wamid.{run}.tr" in replies  # the opt-out confirmation, in Turkish
    assert "tanıtım" in replies[f"wamid.{run}.tr"]["content"]["body"]

    consents = [c for c in found[ACCOUNT_EVENTS.name] if c.get("kind") == "consent"]
    assert {c["source"] for c in consents} >= {"router_keyword", "quick_reply"}
    assert all(c["action"] == "stop" and c["customer_id"] == "8801799999999" for c in consents)

    tasks = {t["wamid"]: t for t in found[AGENT_QUEUE.name]}
    assert tasks[f"wamid.{run}.ar"]["skill"] == "support" and tasks[f"wamid.{run}.ar"]["language"] == "ar"
    assert tasks[f"wamid.{run}.es"]["_headers"]["x-parley-language"] == b"es"

    [letter] = [d for d in found[DEAD_LETTERS.name] if d["wamid"] == f"wamid.{run}.bad"]
    assert letter["service"] == "router" and letter["error_type"] == "ValidationError"

    [(headers, body)] = endpoint.requests
    assert verify(headers["x-parley-signature"], body, [SECRET], now=int(time.time()))
    assert orjson.loads(body)["wamid"] == f"wamid.{run}.ad"
