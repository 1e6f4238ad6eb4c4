"""What an attack could have changed, read back from every service, and a barrier that proves the
services have consumed everything posted before it.

``traces`` lists every place a forged id (a wamid, a customer) shows up in the router's, the
sender's and billing's tables and in what the Cloud API simulator was asked to send: an attack
that was kept and reported but never acted on leaves none. ``settle`` posts genuine events on the
victim's own partitions (its number and its WABA) and waits until each consumer group has handled
them: Kafka keeps order per partition, so whatever an attacker posted before has been handled too.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
from support.waiting import eventually

from .conftest import (
    V_DISPLAY,
    V_PN,
    V_WABA,
    VICTIM,
    VICTIM_APP,
    VICTIM_SECRET,
    Parley,
    messages_change,
    text_message,
    webhook,
)

_QUALITY = iter(["GREEN", "YELLOW"] * 1000)


async def traces(parley: Parley, *, wamid: str | None = None, customer: str | None = None) -> dict[str, Any]:
    """Where ``wamid`` or ``customer`` appears in any service's state (empty: nowhere)."""
    found: dict[str, Any] = {}
    conn = await parley.db()
    try:
        queries = {
            "router.routed": ("SELECT wamid FROM router.routed WHERE wamid = $1", wamid),
            "sender.inbound_refs": ("SELECT wamid FROM sender.inbound_refs WHERE wamid = $1 OR customer_id = $2",
                                    wamid, customer),
            "sender.windows": ("SELECT customer_id FROM sender.windows WHERE customer_id = $1", customer),
            "sender.deliveries": ("SELECT wamid FROM sender.deliveries WHERE wamid = $1", wamid),
            "sender.messages": ("SELECT message_id, state FROM sender.messages WHERE recipient = $1", customer),
            "billing.inbound": ("SELECT wamid FROM billing.inbound WHERE wamid = $1 OR customer = $2", wamid, customer),
            "billing.deliveries": ("SELECT wamid FROM billing.deliveries WHERE wamid = $1 OR customer = $2",
                                   wamid, customer),
            "billing.ledger": ("SELECT wamid, amount FROM billing.ledger WHERE wamid = $1", wamid),
        }
        for where, (sql, *args) in queries.items():
            rows = await conn.fetch(sql, *args)
            if rows:
                found[where] = [dict(r) for r in rows]
    finally:
        await conn.close()
    if customer and (sent := parley.sim.find_messages(to=customer)):
        found["cloud_api.sent"] = [(m.phone_number_id, m.type, m.template_name) for m in sent]
    return found


async def consent(parley: Parley, customer: str, tenant: str = VICTIM) -> tuple[bool, Any] | None:
    """(marketing stopped, since when) for the tenant's customer, or None when never set."""
    conn = await parley.db()
    try:
        row = await conn.fetchrow("SELECT marketing_stopped, changed_at FROM sender.consent"
                                  " WHERE tenant_id = $1 AND customer_id = $2", tenant, customer)
    finally:
        await conn.close()
    return (row["marketing_stopped"], row["changed_at"]) if row else None


async def template_status(parley: Parley, name: str, tenant: str = VICTIM) -> str:
    conn = await parley.db()
    try:
        return str(await conn.fetchval("SELECT status FROM sender.templates WHERE tenant_id = $1 AND name = $2",
                                       tenant, name))
    finally:
        await conn.close()


async def ledger(parley: Parley, tenant: str = VICTIM) -> list[tuple[str, Any]]:
    """The tenant's ledger, without the barrier's own rows."""
    conn = await parley.db()
    try:
        rows = await conn.fetch("SELECT wamid, amount FROM billing.ledger WHERE tenant_id = $1"
                                " AND wamid NOT LIKE 'wamid.BARRIER%' ORDER BY wamid", tenant)
    finally:
        await conn.close()
    return [(r["wamid"], r["amount"]) for r in rows]


async def settle(parley: Parley) -> None:
    """Genuine events (signed with the victim's own secret) on the victim's number and WABA, then
    a genuine API send; returns once the router, the sender (windows, statuses, account events,
    sends) and billing have handled all of them, and so everything posted before."""
    run = uuid.uuid4().hex[:12]
    customer = "6289" + str(int(run, 16))[:9]
    w_in, w_status = f"wamid.BARRIER.in.{run}", f"wamid.BARRIER.out.{run}"
    quality = next(_QUALITY)
    now = int(time.time())
    first = webhook(V_WABA, messages_change(
        V_PN, V_DISPLAY, messages=[text_message(customer, "thank you", wamid=w_in)],
        statuses=[{"id": w_status, "status": "delivered", "timestamp": str(now), "recipient_id": customer,
                   "pricing": {"billable": False, "pricing_model": "PMP", "type": "free_customer_service",
                               "category": "service"}}]),
        {"field": "message_template_quality_update", "value": {
            "previous_quality_score": "UNKNOWN", "new_quality_score": quality,
            "message_template_id": 1, "message_template_name": "order_update",
            "message_template_language": "en"}})
    assert (await parley.post_webhook(first, app_id=VICTIM_APP, secret=VICTIM_SECRET)).status_code == 200

    async def first_handled() -> bool:
        conn = await parley.db()
        try:
            return all([
                await conn.fetchval("SELECT 1 FROM router.routed WHERE wamid = $1", w_in),
                await conn.fetchval("SELECT 1 FROM sender.inbound_refs WHERE wamid = $1", w_in),
                await conn.fetchval("SELECT 1 FROM sender.deliveries WHERE wamid = $1", w_status),
                await conn.fetchval("SELECT 1 FROM sender.templates WHERE tenant_id = $1 AND name = 'order_update'"
                                    " AND quality = $2", VICTIM, quality),
                await conn.fetchval("SELECT 1 FROM billing.inbound WHERE wamid = $1", w_in),
                await conn.fetchval("SELECT 1 FROM billing.deliveries WHERE wamid = $1", w_status),
            ])
        finally:
            await conn.close()

    await eventually(first_handled, what="the barrier's messages, statuses and template event")
    # The router has published whatever it made of earlier messages (replies, consent changes):
    # a second barrier on wa.account.events and wa.messages.out now lands after them.
    second = webhook(V_WABA, {"field": "user_preferences", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": V_DISPLAY, "phone_number_id": V_PN},
        "user_preferences": [{"wa_id": customer, "detail": "barrier", "category": "marketing_messages",
                              "value": "stop", "timestamp": now}]}})
    assert (await parley.post_webhook(second, app_id=VICTIM_APP, secret=VICTIM_SECRET)).status_code == 200
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(f"{parley.ingest.url}/v1/messages", headers={
            "Authorization": f"Bearer {parley.keys[VICTIM]}"}, json={
                "from": V_PN, "to": customer, "type": "text", "text": {"body": "barrier"}})
        assert r.status_code == 202, r.text
        message_id = r.json()["id"]

    async def second_handled() -> bool:
        conn = await parley.db()
        try:
            return all([
                await conn.fetchval("SELECT 1 FROM sender.consent WHERE tenant_id = $1 AND customer_id = $2",
                                    VICTIM, customer),
                await conn.fetchval("SELECT 1 FROM sender.messages WHERE message_id = $1"
                                    " AND state NOT IN ('sending', 'retrying')", message_id),
            ])
        finally:
            await conn.close()

    await eventually(second_handled, what="the barrier's consent change and send")


async def unbound_letters(parley: Parley, needle: str) -> list[dict[str, Any]]:
    """Ingest's reports of events that no tenant of the verifying app owns (on wa.deadletter),
    whose payload mentions ``needle``: the forged event, kept with its reason."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from parley_common.topics import DEAD_LETTERS

    consumer = AIOKafkaConsumer(bootstrap_servers=parley.kafka_bootstrap, enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        cluster = await consumer._client.fetch_all_metadata()
        parts = [TopicPartition(DEAD_LETTERS.name, p)
                 for p in sorted(cluster.partitions_for_topic(DEAD_LETTERS.name) or ())]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        remaining = {tp for tp in parts if ends[tp] > 0}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=1000)).items():
                for r in records:
                    letter = json.loads(r.value)
                    if letter.get("error_type") == "UnboundTenant" and needle in letter.get("payload", ""):
                        found.append(letter)
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return found
