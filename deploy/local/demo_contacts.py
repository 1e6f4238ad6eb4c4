"""Demo customers known by username (`make run`; ADR 0117): one person, whatever Meta calls them.

Customers of the Dhaka shop write by username only (no phone number in the webhook: `user_id` and
`username`) three days ago, then write again with their phone number two days ago (their window
closed since). The shop then sends each of them a marketing template by their BSUID and a
utility template by their phone number: both are business-initiated, and each person must take
one place in the portfolio's messaging limit, not two, and be billed in their market.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

import asyncpg
import httpx
import phonenumbers
from demo_traffic import template_message

TENANT, NUMBER, LANGUAGE = "dhaka-tickets", "100000000000001", "bn"
DAY = 86400
BSUID = re.compile(r"^[A-Z]{2}\.")


def bd_mobile(rng: random.Random) -> str:
    example = phonenumbers.example_number_for_type("BD", phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None  # phonenumbers has a mobile example for every region it knows
    while True:
        national = str(example.national_number)
        candidate = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{rng.randrange(10**4):04d}")
        if phonenumbers.is_valid_number(candidate):
            return f"{candidate.country_code}{candidate.national_number}"


async def username_customers(*, ingest_url: str, sim_url: str, keys: dict[str, str], count: int) -> dict[str, Any]:
    rng = random.Random(time.time_ns())
    now = int(time.time())
    people = [(f"BD.{rng.randrange(10**18, 10**19)}", bd_mobile(rng), f"@dhaka.fan{i}") for i in range(count)]
    async with httpx.AsyncClient(timeout=30) as client:
        # Three days ago, by username only; two days ago, with their phone number.
        for when, shares in ((now - 3 * DAY, False), (now - 2 * DAY, True)):
            specs = [{"from_user_id": bsuid, "username": name, "name": "Demo", "timestamp": when,
                      "text": "ধন্যবাদ, আমার নম্বর দিলাম" if shares else "আমার টিকিট কোথায়?", "language": LANGUAGE,
                      **({"from": phone} if shares else {})} for bsuid, phone, name in people]
            r = await client.post(f"{sim_url}/_sim/inbound", json={"phone_number_id": NUMBER, "messages": specs})
            r.raise_for_status()
            await asyncio.sleep(2.0)  # ingest has them before the next step
        messages = []
        for bsuid, phone, _ in people:
            offer = template_message(NUMBER, phone, LANGUAGE, "seasonal_offer", rng)
            del offer["to"]
            messages += [offer | {"to_user_id": bsuid, "biz_opaque_callback_data": "demo-username-offer"},
                         template_message(NUMBER, phone, LANGUAGE, "ticket_confirmation", rng)
                         | {"biz_opaque_callback_data": "demo-username-update"}]
        r = await client.post(f"{ingest_url}/v1/messages/batch", json={"messages": messages},
                              headers={"Authorization": f"Bearer {keys[TENANT]}",
                                       "Idempotency-Key": f"demo-usernames-{rng.random()}"})
        ids = r.json().get("ids", []) if r.status_code == 202 else []
    return {"people": [(b, p) for b, p, _ in people], "message_ids": ids, "api_status": r.status_code}


async def contacts_summary(database_url: str, result: dict[str, Any], routed: list[dict[str, Any]],
                           sends: list[dict[str, Any]]) -> list[str]:
    """What the summary says about customers known by username."""
    by_username = {r["customer_id"] for r in routed if BSUID.match(r.get("customer_id") or "")}
    from_them = [r for r in routed if r["customer_id"] in by_username]
    answered = {s["recipient"] for s in sends
                if s["outcome"] == "accepted" and not s.get("is_template") and s.get("recipient") in by_username}
    lines = [f"  generated traffic: {len(from_them)} messages from {len(by_username)} customers whose contact is "
             f"their BSUID (username first); {len(answered)} of them answered in the chat (the others went to "
             "agents or only changed consent)"]
    people = result.get("people", [])
    if not people:
        return lines
    ids = set(result.get("message_ids", []))
    mine = [s for s in sends if s["message_id"] in ids]
    accepted = [s for s in mine if s["outcome"] == "accepted"]
    conn = await asyncpg.connect(database_url)
    try:
        identifiers = [i for person in people for i in person]
        reached = await conn.fetch("SELECT customer_id FROM sender.reached WHERE tenant_id = $1 "
                                   "AND customer_id = ANY($2::text[])", TENANT, identifiers)
        billed = await conn.fetch("SELECT market, market_source FROM billing.ledger WHERE wamid = ANY($1::text[])",
                                  [s["wamid"] for s in accepted if s.get("wamid")])
    finally:
        await conn.close()
    keyed = {r["customer_id"] for r in reached}
    by_bsuid = sum(1 for b, _ in people if b in keyed)
    by_phone = sum(1 for _, p in people if p in keyed)
    markets: dict[str, int] = {}
    for r in billed:  # contact_phone: the market of the number they shared, though addressed by BSUID
        key = f"{r['market']} (from {r['market_source']})"
        markets[key] = markets.get(key, 0) + 1
    lines += [
        f"  {len(people)} customers who wrote by username, then shared their number: {len(mine)} business-initiated "
        f"templates (one by BSUID, one by phone number each), {len(accepted)} accepted",
        f"  portfolio messaging limit ({TENANT}): {len(reached)} places for {len(people)} people "
        f"({by_bsuid} keyed by their contact, {by_phone} by a phone number)"
        + ("" if len(reached) <= len(people) else "  (COUNTED TWICE)"),
        "  their templates billed in: " + (", ".join(f"{m}={n}" for m, n in sorted(markets.items()))
                                           or "nothing delivered yet"),
    ]
    return lines
