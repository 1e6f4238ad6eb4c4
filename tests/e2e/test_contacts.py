"""End to end, on real Kafka and PostgreSQL: one customer, whatever Meta calls them (ADR 0117).

A username-only customer (no phone number in any webhook: ``user_id`` and ``username`` only) writes
in Bengali, gets the auto-reply through ``recipient``, opts out in Bengali, and a later marketing
template to them is refused. The same customer then writes with their phone number: ingest finds
the same contact, so a marketing template to the phone number is refused too, and a reply naming
no one goes to the phone number. After a ``user_id_update`` their new BSUID is the same contact.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from parley_common.topics import MESSAGES_IN, MESSAGES_OUT, SENDS
from support.waiting import eventually

from .conftest import NUMBERS, PN1, WABAS, Pipeline
from .test_pipeline import post_signed, read_topic

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

RUN = str(int(time.time() * 1000))
BSUID = f"BD.7{RUN}"  # a Bangladeshi customer's business-scoped user id
NEW_BSUID = f"BD.8{RUN}"  # after a user_id_update
USERNAME = "@rahim.buys"
PHONE = "8801712345678"  # shared later


def inbound(n: int, body: str, *, phone: str | None = None, user_id: str = BSUID) -> dict[str, Any]:
    display, _ = NUMBERS[PN1]
    msg: dict[str, Any] = {"id": f"wamid.CONTACT{RUN}{n}", "timestamp": str(int(time.time())), "type": "text",
                           "text": {"body": body}}
    contact: dict[str, Any] = {"profile": {"name": "Rahim", "username": USERNAME}, "user_id": user_id}
    if phone:
        msg["from"] = contact["wa_id"] = phone
    else:
        msg["from_user_id"] = user_id
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": display, "phone_number_id": PN1},
             "contacts": [contact], "messages": [msg]}
    return {"object": "whatsapp_business_account",
            "entry": [{"id": WABAS[0], "changes": [{"field": "messages", "value": value}]}]}


def marketing(**to: str) -> dict[str, Any]:
    return {"from": PN1, "type": "template", **to,
            "template": {"name": "weekend_offer", "language": {"code": "en"},
                         "components": [{"type": "body", "parameters": [{"type": "text", "text": "Rahim"}]}]}}


async def result_of(pipeline: Pipeline, message_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        return next((s for s in await read_topic(pipeline.kafka_bootstrap, SENDS.name)
                     if s["message_id"] == message_id), None)

    result: dict[str, Any] = await eventually(found, what=f"the outcome of {message_id}")
    return result


def sent_request(pipeline: Pipeline, wamid: str) -> dict[str, Any]:
    """The body the Cloud API simulator received for the message it answered with ``wamid``."""
    request: dict[str, Any] = pipeline.sim.messages[wamid].request
    return request


async def test_a_username_only_customer_is_one_contact_before_and_after_sharing_their_number(
    pipeline: Pipeline,
) -> None:
    auth = {"Authorization": f"Bearer {pipeline.api_key}"}
    first, stop, later = (f"wamid.CONTACT{RUN}{n}" for n in (1, 2, 3))
    async with httpx.AsyncClient(timeout=30) as client:
        # 1. A username-only customer writes in Bengali ("where is my order?").
        r = await post_signed(client, pipeline.webhook_url, inbound(1, "আমার অর্ডার কোথায়? অর্ডারের অবস্থা জানতে চাই"))
        assert r.status_code == 200, r.text

        async def stamped(wamid: str) -> dict[str, Any] | None:
            return next((m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_IN.name)
                         if m["wamid"] == wamid), None)

        written = await eventually(lambda: stamped(first), what="the inbound message on wa.messages.in")
        assert written["customer_wa_id"] is None and written["contact_id"] == BSUID

        # 2. The router's auto-reply goes out through `recipient` (no phone number is known).
        async def reply_sent() -> dict[str, Any] | None:
            out = [m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_OUT.name)
                   if m.get("reply_to_wamid") == first and m.get("origin") == "router"]
            sends = {s["message_id"]: s for s in await read_topic(pipeline.kafka_bootstrap, SENDS.name)}
            return sends.get(out[0]["message_id"]) if out else None

        reply = await eventually(reply_sent, what="the auto-reply's outcome")
        assert reply["outcome"] == "accepted", reply
        sent = sent_request(pipeline, reply["wamid"])
        assert sent.get("recipient") == BSUID and "to" not in sent

        # 3. They opt out in Bengali ("stop messages"); a later marketing template to them is refused.
        r = await post_signed(client, pipeline.webhook_url, inbound(2, "মেসেজ বন্ধ করুন"))
        assert r.status_code == 200, r.text

        async def stop_applied() -> bool:
            out = [m for m in await read_topic(pipeline.kafka_bootstrap, MESSAGES_OUT.name)
                   if m.get("reply_to_wamid") == stop]
            sends = {s["message_id"] for s in await read_topic(pipeline.kafka_bootstrap, SENDS.name)}
            return bool(out) and all(o["message_id"] in sends for o in out)

        await eventually(stop_applied, what="the opt-out handled")
        r = await client.post(f"{pipeline.ingest.url}/v1/messages", json=marketing(to_user_id=BSUID), headers=auth)
        assert r.status_code == 202, r.text
        refused = await result_of(pipeline, r.json()["id"])
        assert refused["outcome"] == "refused" and refused["reason"].startswith("marketing_opted_out"), refused

        # 4. The same customer writes with their phone number: the same contact.
        r = await post_signed(client, pipeline.webhook_url, inbound(3, "ধন্যবাদ", phone=PHONE))
        assert r.status_code == 200, r.text
        written = await eventually(lambda: stamped(later), what="the message with the phone number")
        assert written["customer_wa_id"] == PHONE and written["contact_id"] == BSUID

        # ... so marketing to the phone number is refused by the opt-out given under the username,
        r = await client.post(f"{pipeline.ingest.url}/v1/messages", json=marketing(to=PHONE), headers=auth)
        assert r.status_code == 202, r.text
        refused = await result_of(pipeline, r.json()["id"])
        assert refused["outcome"] == "refused" and refused["reason"].startswith("marketing_opted_out"), refused

        # ... and a reply naming no one goes to the person who wrote, now by phone number.
        r = await client.post(f"{pipeline.ingest.url}/v1/messages", headers=auth, json={
            "from": PN1, "type": "text", "text": {"body": "আপনার অর্ডার আজ পাঠানো হবে"}, "reply_to": later})
        assert r.status_code == 202, r.text
        answer = await result_of(pipeline, r.json()["id"])
        assert answer["outcome"] == "accepted", answer
        assert sent_request(pipeline, answer["wamid"]).get("to") == PHONE

        # 5. Their BSUID changes (user_id_update): a message under the new id is still the same contact.
        display, _ = NUMBERS[PN1]
        update = {"object": "whatsapp_business_account", "entry": [{"id": WABAS[0], "changes": [{
            "field": "user_id_update", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": display, "phone_number_id": PN1},
                "user_id_update": [{"user_id": {"previous": BSUID, "current": NEW_BSUID}, "wa_id": PHONE,
                                    "timestamp": str(int(time.time()))}]}}]}]}
        r = await post_signed(client, pipeline.webhook_url, update)
        assert r.status_code == 200, r.text
        r = await post_signed(client, pipeline.webhook_url, inbound(4, "নতুন আইডি", user_id=NEW_BSUID))
        assert r.status_code == 200, r.text
        written = await eventually(lambda: stamped(f"wamid.CONTACT{RUN}4"), what="a message under the new BSUID")
        assert written["customer_user_id"] == NEW_BSUID and written["contact_id"] == BSUID

        # A reply to a message this tenant never received names the field.
        r = await client.post(f"{pipeline.ingest.url}/v1/messages", headers=auth, json={
            "from": PN1, "type": "text", "text": {"body": "hi"}, "reply_to": "wamid.NEVER-RECEIVED"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reply_to", r.text
        # A malformed BSUID names its field too.
        r = await client.post(f"{pipeline.ingest.url}/v1/messages", headers=auth,
                              json=marketing(to_user_id="not-a-bsuid"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "to_user_id", r.text
