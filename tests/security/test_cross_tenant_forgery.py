"""Attacks by a business that holds only its own Meta app's secret (and its own API key), aimed at
another business on the same Parley. Each test makes the attack the way an attacker would, over
HTTP against the running services, then checks the victim's state in the router, the sender and
billing, and what the Cloud API was asked to send.

The rule under test (docs/adr/0100-tenant-binding.md): the tenant of an event is decided once,
by what was verified (the app whose secret matched), and travels with the event; an event for a
number the verifying app does not own is kept and reported, never acted on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from parley_simulator import sign
from support.waiting import eventually

from .conftest import (
    ATTACKER,
    ATTACKER_APP,
    ATTACKER_SECRET,
    V_DISPLAY,
    V_PN,
    V_WABA,
    VICTIM_APP,
    VICTIM_SECRET,
    Parley,
    messages_change,
    text_message,
    webhook,
)
from .victim import consent, ledger, settle, template_status, traces, unbound_letters

pytestmark = [pytest.mark.infra, pytest.mark.e2e]

YEAR_2100 = 4102444800


def customer() -> str:
    return "6281" + str(uuid.uuid4().int)[:9]


async def genuine(parley: Parley, doc: dict) -> None:
    assert (await parley.post_webhook(doc, app_id=VICTIM_APP, secret=VICTIM_SECRET)).status_code == 200


async def forged(parley: Parley, doc: dict, *, endpoint_app: str | None = ATTACKER_APP) -> None:
    """Signed with the attacker's own app secret, posted to the attacker's own webhook endpoint
    (or to the any-app endpoint): ingest verifies it, so it answers 200 and keeps it."""
    url = parley.webhook_url(endpoint_app) if endpoint_app else f"{parley.ingest.url}/webhooks/meta"
    body = json.dumps(doc).encode()
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(url, content=body, headers={"Content-Type": "application/json",
                                                          "X-Hub-Signature-256": sign(body, ATTACKER_SECRET)})
    assert r.status_code == 200, r.text


async def test_another_apps_secret_on_the_victims_endpoint_is_401(parley: Parley) -> None:
    doc = webhook(V_WABA, messages_change(V_PN, V_DISPLAY, messages=[text_message(customer(), "START")]))
    r = await parley.post_webhook(doc, app_id=VICTIM_APP, secret=ATTACKER_SECRET)
    assert r.status_code == 401


@pytest.mark.parametrize("endpoint_app", [ATTACKER_APP, None], ids=["attackers-endpoint", "any-app-endpoint"])
async def test_forged_start_does_not_opt_a_stopped_customer_back_in(parley: Parley, endpoint_app: str | None) -> None:
    c = customer()
    await genuine(parley, webhook(V_WABA, messages_change(V_PN, V_DISPLAY, messages=[text_message(c, "STOP")])))
    stopped = await eventually(lambda: consent(parley, c), what="the customer's own STOP")
    assert stopped[0] is True

    w = f"wamid.FORGED.start.{uuid.uuid4().hex}"
    await asyncio.sleep(1.1)  # a later second than the STOP: on timestamps alone, START would win
    await forged(parley, webhook(V_WABA, messages_change(V_PN, V_DISPLAY, messages=[
        text_message(c, "START", wamid=w)])), endpoint_app=endpoint_app)
    await settle(parley)

    assert await consent(parley, c) == stopped  # still stopped, same moment, same source
    assert await traces(parley, wamid=w) == {}  # not routed, no window, not metered
    (letter,) = await unbound_letters(parley, w)  # kept and reported, with the reason
    assert letter["headers"]["x-parley-app-id"] == ATTACKER_APP


async def test_forged_template_status_does_not_disable_the_victims_template(parley: Parley) -> None:
    assert await template_status(parley, "seasonal_offer") == "APPROVED"
    marker = uuid.uuid4().hex
    await forged(parley, webhook(V_WABA, {"field": "message_template_status_update", "value": {
        "event": "DISABLED", "message_template_id": 1, "message_template_name": "seasonal_offer",
        "message_template_language": "en", "reason": marker}}))
    await settle(parley)

    assert await template_status(parley, "seasonal_offer") == "APPROVED"
    assert await template_status(parley, "seasonal_offer", tenant=ATTACKER) == "APPROVED"
    (letter,) = await unbound_letters(parley, marker)
    assert letter["key"] == V_WABA


async def test_forged_delivered_status_adds_nothing_to_the_victims_ledger(parley: Parley) -> None:
    before = await ledger(parley)
    w, c = f"wamid.FORGED.status.{uuid.uuid4().hex}", customer()
    await forged(parley, webhook(V_WABA, messages_change(V_PN, V_DISPLAY, statuses=[{
        "id": w, "status": "delivered", "timestamp": str(int(time.time())), "recipient_id": c,
        "pricing": {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "marketing"}}])))
    await settle(parley)

    assert await ledger(parley) == before
    assert await traces(parley, wamid=w, customer=c) == {}
    assert len(await unbound_letters(parley, w)) == 1


async def test_forged_customer_message_makes_parley_send_nothing_from_the_victims_number(parley: Parley) -> None:
    # The same words, genuinely from one of the victim's customers, are answered from its number
    # with its access token: that is what the forgery would get Parley to do.
    control, target = customer(), customer()
    words = "Hi, I want to buy two tickets for Saturday"
    await genuine(parley, webhook(V_WABA, messages_change(V_PN, V_DISPLAY, messages=[text_message(control, words)])))
    answered = await eventually(lambda: _sent_to(parley, control), what="the auto-reply to a genuine message")
    assert {m.phone_number_id for m in answered} == {V_PN}

    w = f"wamid.FORGED.in.{uuid.uuid4().hex}"
    await forged(parley, webhook(V_WABA, messages_change(V_PN, V_DISPLAY, messages=[
        text_message(target, words, wamid=w)])))
    await settle(parley)

    assert await traces(parley, wamid=w, customer=target) == {}  # nothing routed, queued, sent or billed
    assert len(await unbound_letters(parley, w)) == 1


async def _sent_to(parley: Parley, c: str) -> list:
    return parley.sim.find_messages(to=c)


async def test_forged_stop_dated_2100_changes_nothing(parley: Parley) -> None:
    c = customer()
    w = f"wamid.FORGED.stop.{uuid.uuid4().hex}"
    await forged(parley, webhook(V_WABA, messages_change(V_PN, V_DISPLAY, messages=[
        text_message(c, "STOP", at=YEAR_2100, wamid=w)])))
    await settle(parley)

    assert await consent(parley, c) is None
    assert await traces(parley, wamid=w, customer=c) == {}
    assert len(await unbound_letters(parley, w)) == 1


async def test_stop_dated_2100_never_outlives_the_customers_later_start(parley: Parley) -> None:
    """Even signed with the victim's own secret (a replayed or clock-broken webhook), a timestamp
    in the future counts as of its receipt, so the customer's own later START wins."""
    c = customer()
    await genuine(parley, webhook(V_WABA, messages_change(V_PN, V_DISPLAY, messages=[
        text_message(c, "STOP", at=YEAR_2100)])))
    stopped, since = await eventually(lambda: consent(parley, c), what="the STOP dated 2100")
    assert stopped is True and since.timestamp() <= time.time()

    await asyncio.sleep(1.1)  # the START's own (whole-second) timestamp is after the STOP's receipt
    await genuine(parley, webhook(V_WABA, messages_change(V_PN, V_DISPLAY, messages=[text_message(c, "START")])))

    async def resumed() -> bool:
        state = await consent(parley, c)
        return state is not None and state[0] is False

    await eventually(resumed, what="the customer's own START")


async def test_forged_user_preferences_stop_dated_2100_changes_nothing(parley: Parley) -> None:
    c = customer()
    await forged(parley, webhook(V_WABA, {"field": "user_preferences", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": V_DISPLAY, "phone_number_id": V_PN},
        "user_preferences": [{"wa_id": c, "detail": "forged", "category": "marketing_messages", "value": "stop",
                              "timestamp": YEAR_2100}]}}))
    await settle(parley)
    assert await consent(parley, c) is None
    assert len(await unbound_letters(parley, c)) == 1


async def test_send_request_for_another_tenants_number_is_403(parley: Parley) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(f"{parley.ingest.url}/v1/messages", headers={
            "Authorization": f"Bearer {parley.keys[ATTACKER]}"}, json={
                "from": V_PN, "to": customer(), "type": "text", "text": {"body": "from your number"}})
    assert r.status_code == 403


async def test_sender_never_uses_a_tenants_token_for_a_number_it_does_not_own(parley: Parley) -> None:
    """A request that reached wa.messages.out bound to the attacker but naming the victim's number
    (a producer's bug, or a forged record): refused and reported, nothing sent with either token."""
    from aiokafka import AIOKafkaProducer
    from parley_common.contracts import OutboundMessage
    from parley_common.topics import MESSAGES_OUT

    c, mid = customer(), f"sec-{uuid.uuid4().hex[:16]}"
    request = OutboundMessage(event_id=mid, message_id=mid, tenant_id=ATTACKER, phone_number_id=V_PN,
                              occurred_at=datetime.now(UTC), to=c, type="template",  # type: ignore[arg-type]
                              template={"name": "order_update", "language": "en", "components": [  # type: ignore[arg-type]
                                  {"type": "body", "parameters": [{"type": "text", "text": "Ana"},
                                                                  {"type": "text", "text": "A1"}]}]},
                              priority="utility")
    producer = AIOKafkaProducer(bootstrap_servers=parley.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(MESSAGES_OUT.name, request.model_dump_json().encode(), key=V_PN.encode())
    finally:
        await producer.stop()
    await settle(parley)

    conn = await parley.db()
    try:
        row = await conn.fetchrow("SELECT state, reason FROM sender.messages WHERE message_id = $1", mid)
    finally:
        await conn.close()
    assert row is not None and row["state"] == "refused" and row["reason"].startswith("not_tenants_number")
    assert parley.sim.find_messages(to=c) == []
