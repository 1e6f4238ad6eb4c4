"""`make run` sells tickets: in-chat commerce through the whole pipeline (issue 11, ADR 0110-0112).

Each customer writes that they want a ticket (in their language), gets a product list, sends a
cart and receives the seat-selection Flow (an interactive ``flow`` message). The Cloud API
simulator's customer opens it and plays it against ingest's Flows endpoint as WhatsApp does
(every request encrypted and signed as Meta documents; customers race for the same seats) and
sends the ``nfm_reply`` when it closes (ADR 0124). The shop sees the seat its customer holds
(``GET /v1/flows/seats/holds/{flow_token}``), sends an ``order_details`` request, and the customer
pays (the simulator captures most payments and fails some). Paid orders sell their held seat
and get an ``order_status`` (the ticket); failed ones release it. Some customers then ask for a
refund: billing records it and tells them with ``order_status``, and the gateway's refund comes
back from Meta as a payment update.

This module plays the business's own systems (the ticket shop behind the router's ``buy_ticket``
route, ADR 0110); Parley holds no catalogue and sells nothing by itself.

``sell_tickets`` drives it and ``commerce_summary`` prints orders by state, seats sold, revenue
and refunds; the end-to-end test (tests/commerce/test_commerce_e2e.py) runs the same functions.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

WANT_TICKET = {
    "bn": "আমি একটা বাসের টিকিট কিনতে চাই",
    "bn-latn": "ami ekta bus ticket kinte chai",
    "en": "I want to buy a bus ticket",
    "tr": "Otobüs bileti almak istiyorum",
    "id": "Saya mau beli tiket bus",
}
REFUND_SHARE = 0.25
SEATS = [f"{row}{col}" for row in range(1, 6) for col in "ABCD"]
SEAT_FLOW_ID = "seat-picker"  # the seat Flow as Meta (the simulator) knows it: deploy/demo/simulator.yaml
SEAT_FLOW_SECONDS = 40.0  # how long the shop waits for its customer to pick a seat


@dataclass(frozen=True)
class Shop:
    tenant_id: str
    phone_number_id: str
    api_key: str
    access_token: str  # the Graph API token of the shop's WABA (uploads the Flows public key)
    currency: str
    languages: tuple[str, ...]
    trips: tuple[tuple[str, str, int], ...]  # (trip_id, title, price in 1/100)


def flows_private_key_pem(state_dir: Path) -> str:
    """The demo numbers' Flows private key, generated once into .parley/ (git-ignored)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = state_dir / "flows-demo-key.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        state_dir.mkdir(exist_ok=True)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    return path.read_text()


async def add_trips(database_url: str, shops: list[Shop], run: str) -> None:
    """Trips of this run and their seat maps (the reference backend has no trip API: the operator
    loads them)."""
    from parley_common.db import create_pool
    from parley_ingest.seats import SeatStore, Trip

    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        store = SeatStore(pool)
        departs = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        for shop in shops:
            for trip_id, title, price in shop.trips:
                await store.add_trip(shop.tenant_id, Trip(f"{trip_id}-{run}", title, departs, shop.currency, price),
                                     SEATS)
    finally:
        await pool.close()


async def upload_flows_public_key(client: httpx.AsyncClient, sim_url: str, shop: Shop, private_pem: str) -> None:
    """The shop registers its number's Flows public key with Meta, as Meta's docs ask."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem.encode(), None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    r = await client.post(f"{sim_url}/v24.0/{shop.phone_number_id}/whatsapp_business_encryption",
                          data={"business_public_key": public},
                          headers={"Authorization": f"Bearer {shop.access_token}"})
    r.raise_for_status()


async def sell_tickets(*, client: httpx.AsyncClient, shops: list[Shop], customers: dict[str, list[str]],
                       ingest_url: str, billing_url: str, sim_url: str, run: str,
                       rng: random.Random, stop: asyncio.Event | None = None) -> dict[str, Any]:
    """The whole story for every customer; returns what happened (counts and order references)."""
    stats: Counter[str] = Counter()
    orders: list[dict[str, Any]] = []
    sem = asyncio.Semaphore(8)

    async def send(shop: Shop, body: dict[str, Any], key: str) -> None:
        r = await client.post(f"{ingest_url}/v1/messages", json={"from": shop.phone_number_id, **body},
                              headers={"Authorization": f"Bearer {shop.api_key}", "Idempotency-Key": key})
        stats["sends_accepted" if r.status_code == 202 else f"sends_refused_{r.status_code}"] += 1

    async def inbound(shop: Shop, spec: dict[str, Any]) -> str:
        r = await client.post(f"{sim_url}/_sim/inbound",
                              json={"phone_number_id": shop.phone_number_id, "messages": [spec]})
        r.raise_for_status()
        return str(r.json()["messages"][0]["wamid"])

    async def picked_seat(shop: Shop, token: str) -> dict[str, Any] | None:
        """The seat the customer's Flow holds for ``token`` (the reference seat backend's state)."""
        deadline = asyncio.get_running_loop().time() + SEAT_FLOW_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            r = await client.get(f"{ingest_url}/v1/flows/seats/holds/{token}",
                                 headers={"Authorization": f"Bearer {shop.api_key}"})
            if r.status_code == 200 and r.json()["seats"]:
                return dict(r.json()["seats"][0])
            await asyncio.sleep(0.5)
        return None

    # 1. everyone asks for a ticket (some came from a click-to-WhatsApp ad)
    for shop in shops:
        for n, customer in enumerate(customers[shop.tenant_id]):
            lang = shop.languages[n % len(shop.languages)]
            await inbound(shop, {"from": customer, "text": WANT_TICKET[lang], "language": lang,
                                 "intent": "buy_ticket", "referral": n % 3 == 0})
            stats["asked"] += 1
    await asyncio.sleep(5)  # the sender learns the customer service windows from wa.messages.in

    async def one(shop: Shop, n: int, customer: str) -> None:
        async with sem:
            if stop is not None and stop.is_set():
                return
            tag = f"{run}-{shop.tenant_id}-{n}"
            trips = [(f"{t}-{run}", title, price) for t, title, price in shop.trips]
            await send(shop, {"to": customer, "type": "interactive", "interactive": {
                "type": "product_list", "header": {"type": "text", "text": "Tickets"},
                "body": {"text": "Pick a trip"}, "action": {"catalog_id": f"cat-{shop.tenant_id}", "sections": [
                    {"title": "Tomorrow", "product_items": [{"product_retailer_id": t[0]} for t in trips]}]}}},
                f"pl-{tag}")
            trip_id, title, price = rng.choice(trips)
            cart = await inbound(shop, {"from": customer, "order": {
                "catalog_id": f"cat-{shop.tenant_id}", "text": "one seat please",
                "product_items": [{"product_retailer_id": trip_id, "quantity": 1,
                                   "item_price": price / 100, "currency": shop.currency}]}})
            # the seat Flow: the customer plays it with Meta (the simulator); the shop waits for the hold
            token = f"ft-{tag}"
            await send(shop, {"to": customer, "type": "interactive", "reply_to": cart, "interactive": {
                "type": "flow", "body": {"text": "Choose your seat"}, "action": {"name": "flow", "parameters": {
                    "flow_message_version": "3", "flow_token": token, "flow_id": SEAT_FLOW_ID,
                    "flow_cta": "Choose a seat", "flow_action": "data_exchange"}}}}, f"fl-{tag}")
            held = await picked_seat(shop, token)
            if held is None:
                stats["no_seat_picked"] += 1
                return
            trip_id, seat, title = held["trip_id"], held["seat_id"], held["title"]
            amount = {"value": int(held["price"]["value"]), "offset": int(held["price"]["offset"])}
            price = amount["value"]
            # the payment request
            ref = f"t{hashlib.sha256(tag.encode()).hexdigest()[:20]}"
            await send(shop, {"to": customer, "type": "interactive", "reply_to": cart, "interactive": {
                "type": "order_details", "body": {"text": f"{title}, seat {seat}"},
                "action": {"name": "review_and_pay", "parameters": {
                    "reference_id": ref, "type": "digital-goods", "currency": shop.currency,
                    "total_amount": amount,
                    "payment_settings": [{"type": "payment_gateway", "payment_gateway": {
                        "type": "razorpay", "configuration_name": "demo"}}],
                    "order": {"status": "pending", "items": [{
                        "retailer_id": trip_id, "name": f"{title} seat {seat}", "amount": amount, "quantity": 1}],
                        "subtotal": amount}}}}}, f"od-{tag}")
            orders.append({"shop": shop, "ref": ref, "token": token, "customer": customer, "seat": f"{trip_id}/{seat}",
                           "price": price})

    await asyncio.gather(*(one(shop, n, c) for shop in shops for n, c in enumerate(customers[shop.tenant_id])))

    # 2. payments settle; paid seats are sold and ticketed, failed ones released
    async def settled(o: dict[str, Any]) -> str:
        for _ in range(60):
            r = await client.get(f"{billing_url}/v1/orders/{o['ref']}",
                                 headers={"Authorization": f"Bearer {o['shop'].api_key}"})
            if r.status_code == 200 and r.json()["state"] in ("captured", "payment_failed"):
                return str(r.json()["state"])
            await asyncio.sleep(0.5)
        return "pending"

    sold: list[str] = []
    for o, state in zip(orders, await asyncio.gather(*(settled(o) for o in orders)), strict=True):
        shop, headers = o["shop"], {"Authorization": f"Bearer {o['shop'].api_key}"}
        stats[f"payment_{state}"] += 1
        if state == "captured":
            r = await client.post(f"{ingest_url}/v1/flows/seats/holds/{o['token']}/sell",
                                  json={"reference_id": o["ref"]}, headers=headers)
            if r.status_code == 200:
                sold += r.json()["sold"]
            else:
                stats["hold_gone_before_sale"] += 1
            await send(shop, {"to": o["customer"], "type": "interactive", "interactive": {
                "type": "order_status", "body": {"text": f"Your ticket: seat {o['seat']}"},
                "action": {"name": "review_order", "parameters": {
                    "reference_id": o["ref"], "order": {"status": "completed", "description": "Ticket issued"}}}}},
                f"os-{o['ref']}")
            o["paid"] = True
        else:
            await client.post(f"{ingest_url}/v1/flows/seats/holds/{o['token']}/release", headers=headers)

    # 3. some ask for their money back
    refunded = Decimal(0)
    for o in [o for o in orders if o.get("paid")]:
        if rng.random() >= REFUND_SHARE:
            continue
        shop = o["shop"]
        r = await client.post(f"{billing_url}/v1/orders/{o['ref']}/refunds", json={"reason": "cannot travel"},
                              headers={"Authorization": f"Bearer {shop.api_key}", "Idempotency-Key": f"rf-{o['ref']}"})
        if r.status_code in (200, 201):
            stats["refunds"] += 1
            refunded += Decimal(r.json()["refund"]["value"]) / Decimal(r.json()["refund"]["offset"])
            await client.post(f"{sim_url}/_sim/payments/{shop.phone_number_id}/{o['ref']}/refunds", json={})
        else:
            stats[f"refund_refused_{r.status_code}"] += 1
    return {"stats": dict(stats), "orders": [o["ref"] for o in orders], "seats_sold": sold,
            "refunded": str(refunded)}


async def commerce_summary(client: httpx.AsyncClient, *, shops: list[Shop], ingest_url: str, billing_url: str,
                           result: dict[str, Any], sim_url: str | None = None) -> list[str]:
    """Lines for the demo summary: orders by state, seats sold (none twice), revenue and refunds."""
    lines = ["In-chat commerce (this run):",
             "  " + ", ".join(f"{k}={v}" for k, v in sorted(result["stats"].items()))]
    sold = result["seats_sold"]
    twice = [s for s, c in Counter(sold).items() if c > 1]
    lines.append(f"  seats sold: {len(sold)}; sold twice: {len(twice)}"
                 + (f"  (DOUBLE SALE: {twice})" if twice else ""))
    for shop in shops:
        headers = {"Authorization": f"Bearer {shop.api_key}"}
        r = await client.get(f"{billing_url}/v1/orders", params={"limit": 1000}, headers=headers)
        if r.status_code != 200:
            lines.append(f"  {shop.tenant_id:<18} orders unavailable ({r.status_code})")
            continue
        mine = [o for o in r.json()["orders"] if o["reference_id"] in set(result["orders"])]
        states = Counter(o["state"] for o in mine)
        captured = sum((Decimal(o["captured"]) for o in mine if o["captured"]), Decimal(0))
        refunded = sum((Decimal(o["refunded"]) for o in mine if o["refunded"]), Decimal(0))
        seats = (await client.get(f"{ingest_url}/v1/flows/seats", headers=headers)).json().get("seats", {})
        by_state = ", ".join(f"{k}={v}" for k, v in sorted(states.items()))
        lines.append(f"  {shop.tenant_id:<18} orders={len(mine)} ({by_state})"
                     f" captured={captured} refunded={refunded} revenue={captured - refunded} {shop.currency};"
                     f" seats now {seats}")
        fees: dict[str, Decimal] = {}
        for o in mine:
            one = (await client.get(f"{billing_url}/v1/orders/{o['reference_id']}", headers=headers)).json()
            for currency, amount in one.get("fees", {}).get("amounts", {}).items():
                fees[currency] = fees.get(currency, Decimal(0)) + Decimal(amount)
        per_order = ", ".join(f"{v / max(1, len(mine)):.4f} {k}" for k, v in fees.items()) or "none priced yet"
        lines.append(f"  {'':<18} WhatsApp fees of the orders' conversations: "
                     f"{', '.join(f'{v} {k}' for k, v in fees.items()) or '0'}; per order {per_order}")
    if sim_url is not None:  # click-to-WhatsApp purchases reported to the Conversions API's stand-in
        r = await client.get(f"{sim_url}/_sim/conversions")
        if r.status_code == 200:
            mine = [e for e in r.json().get("events", [])
                    if (e.get("custom_data") or {}).get("order_id") in set(result["orders"])]
            lines.append(f"  conversions (paid orders that began at a click-to-WhatsApp ad): {len(mine)}")
    return lines
