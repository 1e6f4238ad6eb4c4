"""Meta's quality, template and coexistence reports act on sending, through Kafka, PostgreSQL and
the simulator (docs/adr/0121-quality-acts-on-sending.md).

- A template Meta FLAGGED stays sendable (it was once stored as unsendable); a PAUSED one is
  refused before any call with 132015's reason, and goes again when Meta approves it again.
- A number Meta FLAGGED refuses marketing templates (``number_quality_low``, a result on
  wa.sends: nothing is lost) while utility templates go on; after UNFLAGGED marketing goes again.
- A number shared with the WhatsApp Business app (a coexistence webhook from Meta, or the
  tenant's setting) is governed at 20 messages per second.
- This tenant chose the Marketing Messages API: its marketing templates go to
  ``/marketing_messages`` (after the same checks), its utility templates to ``/messages``.

Every wait is for the accounts consumer's commit past the event (its effects are durable then).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_OUT, SENDS

from .harness import (
    Producer,
    RunningSender,
    collect,
    consumed,
    new_id,
    outbound,
    sender_settings,
    simulated_tenant,
    start_sender,
)

pytestmark = pytest.mark.infra
TENANT = "quality-shop"
WABA = "waba-q1"
FLAGGED_NUMBER, SHARED_NUMBER, NAMED_SHARED, PLAIN = "8721", "8722", "8723", "8724"
NUMBERS = {FLAGGED_NUMBER: 80, SHARED_NUMBER: 1000, NAMED_SHARED: 80, PLAIN: 80}


@pytest.fixture(scope="module")
async def quality(kafka_bootstrap: str, database_url: str) -> AsyncIterator[tuple[str, RunningSender]]:
    async with simulated_tenant(
        database_url, NUMBERS, tenant=TENANT, other_tenant="quality-other", waba=WABA,
        settings={"sender": {"coexistence_numbers": [NAMED_SHARED], "marketing_messages_api": True}},
    ) as sim:
        sender = await start_sender(sender_settings(kafka_bootstrap, database_url, sim.url))
        try:
            yield sim.url, sender
        finally:
            await sender.shutdown()


async def account_event(kafka: str, number: str, kind: str, value: dict[str, Any]) -> None:
    """Publishes a bound account event about ``number`` and waits until the sender acted on it."""
    event = {"event_id": new_id("acct"), "tenant_id": TENANT, "phone_number_id": number, "waba_id": WABA,
             "occurred_at": datetime.now(UTC).isoformat(), "kind": kind, "value": value}
    async with Producer(kafka) as p:
        partition, offset = await p.send(ACCOUNT_EVENTS.name, event, number)
    await consumed(kafka, "parley-sender-accounts", ACCOUNT_EVENTS.name, partition, offset)


async def send(kafka: str, number: str, template: str, params: tuple[str, ...]) -> dict[str, Any]:
    """One template request; its result from wa.sends."""
    mid = new_id("q")
    customer = f"44770{abs(hash(mid)) % 10**7:07d}"
    async with Producer(kafka) as p:
        await p.send(MESSAGES_OUT.name, outbound(mid, number, customer, name=template, params=params), number)
    found = await collect(kafka, SENDS.name, lambda rs: any(r["message_id"] == mid for r in rs), 180)
    return next(r for r in found if r["message_id"] == mid)


async def promo(kafka: str, number: str) -> dict[str, Any]:
    return await send(kafka, number, "promo", ("Ann",))


async def utility(kafka: str, number: str) -> dict[str, Any]:
    return await send(kafka, number, "order_update", ("Ann", "A-1"))


async def received(sim_url: str, message_id: str) -> list[dict[str, Any]]:
    """What the simulator (Meta's side) accepted for this request."""
    async with httpx.AsyncClient(base_url=sim_url) as sim:
        r = await sim.get("/_sim/messages", params={"biz_opaque_callback_data": message_id})
    return list(r.json()["data"])


async def reached_simulator(sim_url: str, message_id: str) -> int:
    return len(await received(sim_url, message_id))


def template_status(event: str) -> dict[str, Any]:
    return {"event": event, "message_template_name": "promo", "message_template_language": "en_US",
            "reason": "NONE"}


async def test_a_flagged_template_still_sends_and_a_paused_one_is_refused_until_approved_again(
    kafka_bootstrap: str, quality: tuple[str, RunningSender]
) -> None:
    sim_url, _ = quality
    await account_event(kafka_bootstrap, PLAIN, "message_template_status_update", template_status("FLAGGED"))
    flagged = await promo(kafka_bootstrap, PLAIN)
    assert flagged["outcome"] == "accepted", flagged.get("reason")

    await account_event(kafka_bootstrap, PLAIN, "message_template_status_update", template_status("PAUSED"))
    paused = await promo(kafka_bootstrap, PLAIN)
    assert paused["outcome"] == "refused"
    assert "template_paused" in paused["reason"]
    assert await reached_simulator(sim_url, paused["message_id"]) == 0  # refused before any call

    await account_event(kafka_bootstrap, PLAIN, "message_template_status_update", template_status("APPROVED"))
    assert (await promo(kafka_bootstrap, PLAIN))["outcome"] == "accepted"


async def test_a_flagged_number_refuses_marketing_until_meta_unflags_it(
    kafka_bootstrap: str, quality: tuple[str, RunningSender]
) -> None:
    sim_url, running = quality
    await account_event(kafka_bootstrap, FLAGGED_NUMBER, "phone_number_quality_update",
                        {"event": "FLAGGED", "display_phone_number": f"1555{FLAGGED_NUMBER}"})
    held = await promo(kafka_bootstrap, FLAGGED_NUMBER)
    assert held["outcome"] == "refused"
    assert "number_quality_low" in held["reason"] and "FLAGGED" in held["reason"]
    assert await reached_simulator(sim_url, held["message_id"]) == 0
    assert (await utility(kafka_bootstrap, FLAGGED_NUMBER))["outcome"] == "accepted"  # only marketing is held
    assert (await promo(kafka_bootstrap, PLAIN))["outcome"] == "accepted"  # only that number

    # another replica learns it from the table on its next periodic read
    sender = running.app.state.sender
    sender.standings = {}
    await sender.reload_throughput(force=True)
    assert sender.standings[FLAGGED_NUMBER].holds_marketing

    await account_event(kafka_bootstrap, FLAGGED_NUMBER, "phone_number_quality_update", {"event": "UNFLAGGED"})
    assert (await promo(kafka_bootstrap, FLAGGED_NUMBER))["outcome"] == "accepted"


async def test_numbers_shared_with_the_business_app_are_governed_at_20_mps(
    kafka_bootstrap: str, quality: tuple[str, RunningSender]
) -> None:
    _, running = quality
    sender = running.app.state.sender
    await sender.reload_throughput(force=True)
    assert sender.pacer(NAMED_SHARED).limit.limit == 20  # the tenant's setting names it
    assert sender.pacer(SHARED_NUMBER).limit.limit == 1000  # the registry's value, until Meta says otherwise
    await account_event(kafka_bootstrap, SHARED_NUMBER, "smb_message_echoes",
                        {"from": f"1555{SHARED_NUMBER}", "to": "447700900123", "id": "wamid.echo", "type": "text"})
    assert sender.pacer(SHARED_NUMBER).limit.limit == 20
    assert sender.pacer(PLAIN).limit.limit == 80
    # an upgrade event does not lift a shared number past 20
    await account_event(kafka_bootstrap, SHARED_NUMBER, "phone_number_quality_update", {"event": "THROUGHPUT_UPGRADE"})
    assert sender.pacer(SHARED_NUMBER).limit.limit == 20
    assert (await utility(kafka_bootstrap, SHARED_NUMBER))["outcome"] == "accepted"


async def test_marketing_templates_go_through_the_marketing_messages_api_when_the_tenant_chose_it(
    kafka_bootstrap: str, quality: tuple[str, RunningSender]
) -> None:
    sim_url, _ = quality
    marketing = await promo(kafka_bootstrap, PLAIN)
    assert marketing["outcome"] == "accepted", marketing.get("reason")
    assert [m["api"] for m in await received(sim_url, marketing["message_id"])] == ["marketing_messages"]
    service = await utility(kafka_bootstrap, PLAIN)
    assert [m["api"] for m in await received(sim_url, service["message_id"])] == ["messages"]
