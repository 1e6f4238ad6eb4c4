"""Customers known only by their business-scoped user id (BSUID), on real Kafka, PostgreSQL and the
simulator: the sender addresses them with ``recipient`` (Meta refuses a BSUID in ``to``), and an
authentication template that needs a phone number is refused before any call."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from parley_common.topics import MESSAGES_OUT, SENDS

from .harness import Producer, collect, new_id, outbound, sender_settings, simulated_tenant, start_sender

pytestmark = pytest.mark.infra
NUMBER = "8601"
WABA = "waba-bsuid"
BSUID = "GB.13491208655302741918"
PARENT = "GB.ENT.99887766554433221100"
OTP_TEMPLATE = {
    "name": "login_code",
    "language": "en_US",
    "category": "AUTHENTICATION",
    "components": [
        {"type": "BODY", "text": "{{1}} is your verification code."},
        {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code"}]},
    ],
}


async def test_bsuid_customers_are_addressed_with_recipient_and_phone_only_templates_refused_before_sending(
    kafka_bootstrap: str, database_url: str
) -> None:
    run = new_id("bs")
    by_user, by_parent, otp = f"{run}-user", f"{run}-parent", f"{run}-otp"
    async with simulated_tenant(database_url, {NUMBER: 1000}, tenant="bsuid", waba=WABA,
                                extra_templates=[OTP_TEMPLATE]) as simulated:
        sim_url = simulated.url
        requests: list[dict[str, Any]] = [  # after the seeding: ``outbound`` stamps the number's tenant
            outbound(by_user, NUMBER, "", to_user_id=BSUID),
            outbound(by_parent, NUMBER, "", to_user_id=PARENT),
            outbound(otp, NUMBER, "", to_user_id=BSUID, name="login_code", params=("123456",)),
        ]
        for r in requests:
            del r["to"]
        sender = await start_sender(sender_settings(kafka_bootstrap, database_url, sim_url))
        try:
            async with Producer(kafka_bootstrap) as p:
                for r in requests:
                    await p.send(MESSAGES_OUT.name, r, NUMBER)
            ids = {by_user, by_parent, otp}
            found = await collect(kafka_bootstrap, SENDS.name, lambda rs: ids <= {r["message_id"] for r in rs})
        finally:
            await sender.shutdown()
        async with httpx.AsyncClient(base_url=sim_url) as sim:
            sent = {
                m["biz_opaque_callback_data"]: m
                for m in (await sim.get("/_sim/messages", params={"phone_number_id": NUMBER})).json()["data"]
            }
    got = {r["message_id"]: r for r in found if r["message_id"] in ids}
    assert got[by_user]["outcome"] == got[by_parent]["outcome"] == "accepted"
    assert sent[by_user]["to"] == BSUID and sent[by_parent]["to"] == PARENT
    assert got[otp]["outcome"] == "refused" and got[otp]["reason"].startswith("phone_number_required")
    assert otp not in sent  # refused before any call
