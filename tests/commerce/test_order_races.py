"""A cart and the order that answers it, stored at the same moment by two consumers (the cart comes
on the commerce topic, the business's order_details on wa.messages.out): the order always ends up
with the cart's ad referral, whichever transaction commits first. Real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from parley_billing import order_store
from parley_billing.domain.orders import requested_fact
from parley_billing.store import MIGRATIONS
from parley_common.db import create_pool, migrate

pytestmark = pytest.mark.infra
TENANT, NUMBER, CUSTOMER = "race-shop", "770000000901", "919900000901"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, min_size=4, max_size=24)
    async with p.acquire() as conn:
        await migrate(conn, "billing", MIGRATIONS)
        for table in ("orders", "order_facts", "order_carts", "order_events"):
            await conn.execute(f"DELETE FROM billing.{table} WHERE tenant_id = $1", TENANT)
    yield p
    await p.close()


def _cart(n: int) -> dict[str, Any]:
    return {"kind": "cart", "wamid": f"wamid.race-cart-{n}", "phone_number_id": NUMBER, "customer_wa_id": CUSTOMER,
            "catalog_id": "cat-1", "occurred_at": (T0 - timedelta(minutes=5)).isoformat(),
            "product_items": [{"product_retailer_id": "trip-1", "quantity": 1, "item_price": "450",
                               "currency": "INR"}],
            "referral": {"source_type": "ad", "source_id": "ad-1", "ctwa_clid": f"clid-{n}"}}


def _order_details(n: int) -> dict[str, Any]:
    return {"event_id": f"od-{n}", "message_id": f"od-{n}", "tenant_id": TENANT, "phone_number_id": NUMBER,
            "occurred_at": T0.isoformat(), "to": CUSTOMER, "type": "interactive",
            "reply_to_wamid": f"wamid.race-cart-{n}",
            "content": {"type": "order_details", "body": {"text": "Your tickets"}, "action": {
                "name": "review_and_pay", "parameters": {
                    "reference_id": f"race-{n}", "type": "digital-goods", "currency": "INR",
                    "total_amount": {"value": 45000, "offset": 100},
                    "order": {"status": "pending", "items": [], "subtotal": {"value": 45000, "offset": 100}}}}}}


async def test_an_order_and_its_cart_stored_at_once_always_carry_the_ads_referral(pool: asyncpg.Pool) -> None:
    pairs = 60

    async def store_order(n: int) -> None:
        found = requested_fact(_order_details(n))
        assert found is not None
        await order_store.record_fact(pool, TENANT, found[0], found[1])

    # Each pair starts together; half with the cart first in the gather, half with the order first.
    await asyncio.gather(*(
        coro for n in range(pairs)
        for coro in ((order_store.record_cart(pool, TENANT, _cart(n)), store_order(n)) if n % 2 else
                     (store_order(n), order_store.record_cart(pool, TENANT, _cart(n))))))
    rows = await pool.fetch("SELECT reference_id, ctwa_clid FROM billing.orders WHERE tenant_id = $1", TENANT)
    got = {r["reference_id"]: r["ctwa_clid"] for r in rows}
    assert got == {f"race-{n}": f"clid-{n}" for n in range(pairs)}
