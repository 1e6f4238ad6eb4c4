"""End to end, on real Kafka and PostgreSQL: a signed Meta webhook batch through all four services."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from parley_billing.domain.rules import rules_at
from parley_common.topics import MESSAGES_IN, MESSAGES_OUT, MESSAGES_ROUTED, SENDS, STATUSES
from parley_simulator import sign
from support.waiting import eventually

from .conftest import NUMBERS, PN1, PN2, SECRET, WABAS, Pipeline

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

RUN = str(int(time.time() * 1000))
CUSTOMERS = ["14155550101", "14155550102", "14155550103"]


def wamid(n: int) -> str:
    return f"wamid.E2E{RUN}{n:03d}"


def message(n: int, customer: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"from": customer, "id": wamid(n), "timestamp": str(int(time.time())), **body, **extra}


def change(number: str, messages: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> dict[str, Any]:
    display, _ = NUMBERS[number]
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": display, "phone_number_id": number}}
    if messages:
        value["contacts"] = [{"profile": {"name": "Customer"}, "wa_id": m["from"]} for m in messages]
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    return {"field": "messages", "value": value}


def batch() -> dict[str, Any]:
    """Two entries (two WABAs), five messages in three languages with an ad referral, three statuses."""
    now = str(int(time.time()))
    entry1 = change(PN1, [
        message(1, CUSTOMERS[0], {"type": "text", "text": {"body": "Hi, I want to buy two tickets for Saturday"}}),
        message(2, CUSTOMERS[1], {"type": "text", "text": {"body": "¿Dónde está mi pedido? Quiero saber el estado"}},
                referral={"source_url": "https://fb.me/x", "source_id": "120226305854810726", "source_type": "ad",
                          "headline": "Chat with us", "ctwa_clid": "ctwa-e2e-1"}),
        message(3, CUSTOMERS[2], {"type": "text", "text": {"body": "Saya mau refund, uang saya belum kembali"}}),
    ], [
        {"id": f"wamid.E2EOLD{RUN}1", "status": "sent", "timestamp": now, "recipient_id": CUSTOMERS[0],
         "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"}},
        {"id": f"wamid.E2EOLD{RUN}2", "status": "failed", "timestamp": now, "recipient_id": CUSTOMERS[1],
         "errors": [{"code": 131049, "title": "This message was not delivered to maintain healthy ecosystem"}]},
    ])
    entry2 = change(PN2, [
        message(4, CUSTOMERS[0], {"type": "text", "text": {"body": "hello, I need to talk to a human agent please"}}),
        message(5, CUSTOMERS[1], {"type": "text", "text": {"body": "I want to choose a window seat for my flight"}}),
    ], [
        {"id": f"wamid.E2EOLD{RUN}3", "status": "read", "timestamp": now, "recipient_id": CUSTOMERS[2]},
    ])
    return {"object": "whatsapp_business_account",
            "entry": [{"id": WABAS[0], "changes": [entry1]}, {"id": WABAS[1], "changes": [entry2]}]}


async def post_signed(client: httpx.AsyncClient, url: str, doc: dict[str, Any], secret: str = SECRET) -> httpx.Response:
    body = json.dumps(doc).encode()
    return await client.post(url, content=body, headers={"Content-Type": "application/json",
                                                         "X-Hub-Signature-256": sign(body, secret)})


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """Every record of a (session-namespaced) topic so far."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=300)
            if not got and out:
                break
            for records in got.values():
                out.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


async def ledger(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT wamid, category, type, billable, amount, delivered_at FROM billing.ledger"
                                " ORDER BY wamid")
    finally:
        await conn.close()


async def test_signed_batch_flows_through_all_four_services_exactly_once(pipeline: Pipeline) -> None:
    doc = batch()
    mine = {wamid(n) for n in range(1, 6)}
    async with httpx.AsyncClient(timeout=30) as client:
        r = await post_signed(client, pipeline.webhook_url, doc)
        assert r.status_code == 200, r.text

        # The business also sends two templates through the API: utility and marketing.
        templates = [
            {"from": PN1, "to": CUSTOMERS[0], "type": "template", "biz_opaque_callback_data": f"e2e-{RUN}-u",
             "template": {"name": "order_update", "language": {"code": "en"}, "components": [
                 {"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "A1"}]}]}},
            {"from": PN2, "to": "447911123456", "type": "template", "biz_opaque_callback_data": f"e2e-{RUN}-m",
             "template": {"name": "weekend_offer", "language": {"code": "en"}, "components": [
                 {"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}]}},
        ]
        r = await client.post(f"{pipeline.ingest.url}/v1/messages/batch", json={"messages": templates},
                              headers={"Authorization": f"Bearer {pipeline.api_key}"})
        assert r.status_code == 202, r.text
        template_ids = set(r.json()["ids"])

    # Every message is routed.
    async def all_routed() -> list[dict[str, Any]] | None:
        routed = [m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_ROUTED.name) if m["wamid"] in mine]
        return routed if {m["wamid"] for m in routed} == mine else None

    routed = await eventually(all_routed, what="every inbound message routed")
    assert len(routed) == 5
    assert all(m["intent"] and 0.0 <= m["confidence"] <= 1.0 for m in routed)

    # Every auto-reply the router asked for reaches the simulator (the Cloud API) and is accepted.
    async def replies_sent() -> tuple[set[str], list[dict[str, Any]]] | None:
        out = [m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_OUT.name)
               if m.get("reply_to_wamid") in mine and m.get("origin") == "router"]
        sends = {s["message_id"]: s for s in await read_topic(pipeline.kafka_bootstrap, SENDS.name)}
        if not out or any(o["message_id"] not in sends for o in out):
            return None
        return {o["message_id"] for o in out}, [sends[o["message_id"]] for o in out]

    _, reply_results = await eventually(replies_sent, what="auto-replies sent")
    assert all(s["outcome"] == "accepted" and s["wamid"] for s in reply_results), reply_results
    sim_wamids = {m.wamid for m in pipeline.sim.messages.values()} if isinstance(pipeline.sim.messages, dict) \
        else {m.wamid for m in pipeline.sim.messages}
    assert {s["wamid"] for s in reply_results} <= sim_wamids

    # Templates are accepted; the simulator's status webhooks come back through ingest.
    async def templates_delivered() -> list[dict[str, Any]] | None:
        sends = [s for s in await read_topic(pipeline.kafka_bootstrap, SENDS.name) if s["message_id"] in template_ids]
        if len(sends) < 2:
            return None
        wamids = {s["wamid"] for s in sends if s["outcome"] == "accepted"}
        statuses = [s for s in await read_topic(pipeline.kafka_bootstrap, STATUSES.name) if s["wamid"] in wamids]
        delivered = {s["wamid"] for s in statuses if s["status"] in ("delivered", "read")}
        return sends if delivered == wamids and wamids else None

    template_sends = await eventually(templates_delivered, what="template statuses back through ingest")
    delivered_templates = {s["wamid"] for s in template_sends}

    # Billing: exactly one ledger row per delivered template; free-form replies are service messages,
    # charged by the rules in force when they were delivered (from 2026-10-01); undelivered statuses
    # are not billed.
    async def ledger_settled() -> list[asyncpg.Record] | None:
        rows = await ledger(pipeline.database_url)
        return rows if {r["wamid"] for r in rows} >= delivered_templates else None

    rows = await eventually(ledger_settled, what="ledger rows for delivered templates")
    billed = {r["wamid"]: r for r in rows}
    assert set(billed) & delivered_templates == delivered_templates
    for w in {s["wamid"] for s in reply_results if s.get("wamid")} & set(billed):
        charged = rules_at(billed[w]["delivered_at"]).service_charged
        assert billed[w]["category"] == "service" and billed[w]["billable"] is charged
        assert (billed[w]["amount"] is None or billed[w]["amount"] > 0) if charged else not billed[w]["amount"]
    # a status that was only sent, or failed, is never metered; a read one Parley never sent and Meta
    # did not price is taken for a free-form (service) message, priced by the rules of its delivery
    assert f"wamid.E2EOLD{RUN}1" not in billed and f"wamid.E2EOLD{RUN}2" not in billed
    unknown = billed.get(f"wamid.E2EOLD{RUN}3")
    assert unknown is None or (unknown["category"] == "service"
                               and unknown["billable"] is rules_at(unknown["delivered_at"]).service_charged)
    by_category = {billed[w]["category"] for w in delivered_templates}
    assert by_category == {"utility", "marketing"}
    marketing = next(billed[w] for w in delivered_templates if billed[w]["category"] == "marketing")
    assert marketing["billable"] and marketing["amount"] > 0

    # Posting the same webhook again changes nothing downstream.
    snapshot = await ledger(pipeline.database_url)
    routed_before = len([m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_ROUTED.name)
                         if m["wamid"] in mine])
    outs_before = len(await read_topic(pipeline.kafka_bootstrap, MESSAGES_OUT.name))
    sim_before = len(pipeline.sim.messages)
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await post_signed(client, pipeline.webhook_url, doc)).status_code == 200
    inbound = [m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_IN.name) if m["wamid"] in mine]
    assert len(inbound) == 10 and len({m["event_id"] for m in inbound}) == 5  # same deterministic ids
    await asyncio.sleep(8)
    assert len([m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_ROUTED.name)
                if m["wamid"] in mine]) == routed_before
    assert len(await read_topic(pipeline.kafka_bootstrap, MESSAGES_OUT.name)) == outs_before
    assert len(pipeline.sim.messages) == sim_before
    assert await ledger(pipeline.database_url) == snapshot


async def test_wrong_signature_is_401_and_nothing_reaches_kafka(pipeline: Pipeline) -> None:
    doc = batch()
    doc["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = f"wamid.E2EFORGED{RUN}"
    async with httpx.AsyncClient(timeout=30) as client:
        r = await post_signed(client, pipeline.webhook_url, doc, secret="not-the-app-secret")
        assert r.status_code == 401
        r2 = await client.post(pipeline.webhook_url, content=b'{"object": ', headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sign(b'{"object": ', SECRET)})
        assert r2.status_code == 400
    await asyncio.sleep(1)
    assert not [m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_IN.name)
                if m["wamid"] == f"wamid.E2EFORGED{RUN}"]


async def test_one_inbound_message_is_one_trace_across_ingest_router_and_sender(pipeline: Pipeline) -> None:
    pipeline.exporter.clear()
    w = f"wamid.E2ETRACE{RUN}"
    doc = {"object": "whatsapp_business_account", "entry": [{"id": WABAS[0], "changes": [change(PN1, [{
        "from": CUSTOMERS[2], "id": w, "timestamp": str(int(time.time())), "type": "text",
        "text": {"body": "Hello! I would like to buy a ticket to the concert"}}], [])]}]}
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await post_signed(client, pipeline.webhook_url, doc)).status_code == 200

    async def traced() -> list[Any] | None:
        spans = pipeline.exporter.get_finished_spans()
        for root in (s for s in spans if s.name == "webhook receive"):
            same = [s for s in spans if s.context.trace_id == root.context.trace_id]
            if {"route", "cloudapi send"} <= {s.name for s in same}:
                return same
        return None

    same = await eventually(traced, timeout_s=60, what="one trace across ingest, router and sender")
    by_id = {s.context.span_id: s for s in same}
    send = next(s for s in same if s.name == "cloudapi send")
    chain = []
    span: Any = send
    while span is not None:  # walk up from the Cloud API call to the webhook POST
        chain.append(span.name)
        span = by_id.get(span.parent.span_id) if span.parent else None
    assert chain[0] == "cloudapi send" and chain[-1] == "webhook receive"  # sender ... ingest
    assert "route" in chain  # the router's decision sits between them
    assert send.attributes["parley.outcome"] == "accepted"
    # no phone number or message text in any span attribute
    for span in same:
        for value in (span.attributes or {}).values():
            assert CUSTOMERS[2] not in str(value) and "concert" not in str(value)


async def test_customer_opt_out_in_spanish_stops_marketing_but_not_utility(pipeline: Pipeline) -> None:
    from parley_common.topics import ACCOUNT_EVENTS

    customer = "447911123457"
    w = f"wamid.E2ESTOP{RUN}"
    doc = {"object": "whatsapp_business_account", "entry": [{"id": WABAS[0], "changes": [change(PN1, [{
        "from": customer, "id": w, "timestamp": str(int(time.time())), "type": "text",
        "text": {"body": "BAJA"}}], [])]}]}
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await post_signed(client, pipeline.webhook_url, doc)).status_code == 200

        async def consent_published() -> bool:
            events = await read_topic(pipeline.kafka_bootstrap, ACCOUNT_EVENTS.name)
            return any(e.get("kind") == "consent" and e.get("customer_id") == customer and e.get("action") == "stop"
                       for e in events)

        await eventually(consent_published, what="the router's consent event")
        await asyncio.sleep(2)  # the sender consumes account events in its own group

        def template(name: str, params: list[str]) -> dict[str, Any]:
            return {"from": PN1, "to": customer, "type": "template", "template": {
                "name": name, "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}]}}

        r = await client.post(f"{pipeline.ingest.url}/v1/messages/batch", headers={
            "Authorization": f"Bearer {pipeline.api_key}"}, json={"messages": [
                template("weekend_offer", ["Ana"]), template("order_update", ["Ana", "B7"])]})
        assert r.status_code == 202, r.text
        marketing_id, utility_id = r.json()["ids"]

    async def results() -> dict[str, dict[str, Any]] | None:
        sends = {s["message_id"]: s for s in await read_topic(pipeline.kafka_bootstrap, SENDS.name)
                 if s["message_id"] in (marketing_id, utility_id)}
        return sends if len(sends) == 2 else None

    sends = await eventually(results, what="send results for both templates")
    assert sends[marketing_id]["outcome"] == "refused"
    assert "opted_out" in (sends[marketing_id]["reason"] or "")
    assert sends[utility_id]["outcome"] == "accepted"
    sent_to_customer = pipeline.sim.find_messages(to=customer)
    assert [m.template_name for m in sent_to_customer if m.type == "template"] == ["order_update"]


async def test_a_number_meta_flags_refuses_marketing_until_meta_unflags_it(pipeline: Pipeline) -> None:
    """The simulator (Meta) posts phone_number_quality_update FLAGGED for a number to ingest; the
    sender refuses marketing from it with the reason, keeps sending utility, and sends marketing
    again once Meta posts UNFLAGGED (docs/adr/0121-quality-acts-on-sending.md)."""
    sender = pipeline.sender.server.config.app.state.sender
    customer = "447911123458"

    def template(name: str, params: list[str]) -> dict[str, Any]:
        return {"from": PN2, "to": customer, "type": "template", "template": {
            "name": name, "language": {"code": "en"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}]}}

    async def send(*messages: dict[str, Any]) -> dict[str, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.post(f"{pipeline.ingest.url}/v1/messages/batch", headers={
                "Authorization": f"Bearer {pipeline.api_key}"}, json={"messages": list(messages)})
        assert r.status_code == 202, r.text
        ids = r.json()["ids"]

        async def results() -> dict[str, dict[str, Any]] | None:
            sends = {s["message_id"]: s for s in await read_topic(pipeline.kafka_bootstrap, SENDS.name)
                     if s["message_id"] in ids}
            return sends if len(sends) == len(ids) else None

        found = await eventually(results, what="send results")
        return {mid: found[mid] for mid in ids}

    async def standing(held: bool) -> bool:
        st = sender.standings.get(PN2)
        return st is not None and st.holds_marketing is held

    pipeline.sim.reports.report_number_event(PN2, "FLAGGED")
    await eventually(lambda: standing(True), what="the sender learning that Meta flagged the number")
    sent = await send(template("weekend_offer", ["Ana"]), template("order_update", ["Ana", "B8"]))
    marketing, utility = sent.values()
    assert marketing["outcome"] == "refused" and "number_quality_low" in (marketing["reason"] or "")
    assert utility["outcome"] == "accepted"

    pipeline.sim.reports.report_number_event(PN2, "UNFLAGGED")
    await eventually(lambda: standing(False), what="the sender learning that Meta unflagged the number")
    (again,) = (await send(template("weekend_offer", ["Ana"]))).values()
    assert again["outcome"] == "accepted", again.get("reason")
