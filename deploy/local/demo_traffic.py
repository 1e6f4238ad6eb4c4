"""Demo traffic for `make run`: customers writing in, and the businesses sending templates.

Inbound: the Cloud API simulator generates signed webhooks (six languages, ad referrals, button
replies, username-only customers) and posts them to ingest, as Meta would. Outbound: each tenant
sends template campaigns through Parley's business API: order updates (utility) to customers who
just wrote (inside the 24-hour window: free), offers (marketing) and login codes
(authentication) to customers in several markets.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import phonenumbers

NUMBERS = {  # tenant -> (phone_number_ids, template languages)
    "dhaka-tickets": (["100000000000001"], ["en", "bn"]),
    "istanbul-events": (["100000000000002", "100000000000003"], ["en", "tr", "ar"]),
    "jakarta-shop": (["100000000000004"], ["en", "id"]),
}
# Customers in several of Meta's pricing markets: valid mobile numbering plans, fictional subscribers.
MARKETS = ["IN", "ID", "TR", "SA", "GB", "BR", "BD", "ES", "US", "NG"]


def valid(digits: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse("+" + digits))
    except phonenumbers.NumberParseException:
        return False


def fictional_number(rng: random.Random) -> str:
    region = rng.choice(MARKETS)
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    while True:
        national = str(example.national_number)
        candidate = national[:-4] + f"{rng.randrange(10**4):04d}"
        number = phonenumbers.parse(f"+{example.country_code}{candidate}")
        if phonenumbers.is_valid_number(number):
            return f"{example.country_code}{candidate}"


def template_message(number_id: str, to: str, language: str, kind: str, rng: random.Random) -> dict[str, Any]:
    if kind == "ticket_confirmation":
        params = [f"TK-{rng.randrange(10**6):06d}", f"2026-12-{rng.randrange(1, 29):02d}"]
    elif kind == "seasonal_offer":
        params = [rng.choice(["Ayesha", "Rahim", "Elif", "Budi", "Sofia", "Omar"])]
    else:
        params = [f"{rng.randrange(10**6):06d}"]
    return {
        "from": number_id, "to": to, "type": "template",
        "template": {"name": kind, "language": {"code": language}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}]},
        "biz_opaque_callback_data": f"demo-{kind}",
    }


async def drive(*, env: dict[str, str], keys: dict[str, str], ingest_url: str, sim_url: str, inbound: int,
                templates: int, rate: float, stop: asyncio.Event) -> dict[str, Any]:
    # A fresh seed per run: the same seed would regenerate the same wamids and idempotency keys,
    # which Parley rightly treats as duplicates of the previous run.
    run_seed = int(time.time())
    rng = random.Random(run_seed)
    customers: dict[str, list[str]] = {n: [] for ids, _ in NUMBERS.values() for n in ids}
    sent_inbound = webhooks = 0
    async with httpx.AsyncClient(timeout=30) as client:
        # Inbound: batches of generated webhooks, paced to `rate` messages per second.
        all_numbers = [n for ids, _ in NUMBERS.values() for n in ids]
        loop = asyncio.get_running_loop()
        started = loop.time()
        seed = run_seed * 1000
        while sent_inbound < inbound and not stop.is_set():
            r = await client.post(f"{sim_url}/_sim/inbound",
                                  json={"count": 10, "seed": seed, "phone_number_ids": all_numbers})
            r.raise_for_status()
            body = r.json()
            seed += 1
            webhooks += body["webhooks"]
            for m in body["messages"]:
                sent_inbound += 1
                if m["customer_id"] and m["customer_id"].isdigit() and valid(m["customer_id"]):
                    customers[m["phone_number_id"]].append(m["customer_id"])
            ahead = sent_inbound / rate - (loop.time() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        # Outbound: template campaigns through the business API, per tenant.
        accepted = rejected = 0
        for tenant, (number_ids, languages) in NUMBERS.items():
            messages = []
            for i in range(templates):
                number = number_ids[i % len(number_ids)]
                kind = rng.choices(["ticket_confirmation", "seasonal_offer", "login_code"], [5, 3, 2])[0]
                known = customers[number]
                # order updates go to customers who just wrote (free inside the window)
                to = rng.choice(known) if kind == "ticket_confirmation" and known else fictional_number(rng)
                messages.append(template_message(number, to, rng.choice(languages), kind, rng))
            for start in range(0, len(messages), 500):
                r = await client.post(f"{ingest_url}/v1/messages/batch", json={"messages": messages[start:start + 500]},
                                      headers={"Authorization": f"Bearer {keys[tenant]}",
                                               "Idempotency-Key": f"demo-{tenant}-{start}-{rng.random()}"})
                if r.status_code == 202:
                    accepted += len(r.json()["ids"])
                else:
                    rejected += len(messages[start:start + 500])
                    print(f"[parley] {tenant}: campaign batch refused: {r.status_code} {r.text[:200]}")
    return {"inbound_messages": sent_inbound, "inbound_webhooks": webhooks,
            "templates_requested": accepted, "templates_refused_by_api": rejected}
