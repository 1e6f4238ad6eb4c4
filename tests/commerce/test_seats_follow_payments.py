"""Seats follow payments on real PostgreSQL (and Kafka): a paid order's held seats are sold, a
failed or canceled order's holds are released; customers racing for the same seats end with
exactly one buyer per seat under any interleaving of holds, attachments and payment outcomes,
and after a restart (ADR 0112, 0113)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from parley_common.contracts import OrderEvent
from parley_common.db import create_pool, migrate
from parley_common.topics import ORDERS
from parley_ingest.app import MIGRATIONS
from parley_ingest.domain.seat_orders import seat_action
from parley_ingest.seats import SeatStore, Trip
from support.waiting import eventually

from .conftest import SHOP, SHOP_NUMBER, bearer, produce

TENANT = "seat-orders-tenant"
AT = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)  # the order events' time
SEATS = ["1A", "1B", "1C", "2A"]


@pytest.mark.parametrize(("state", "payment", "action"), [
    ("requested", None, None),
    ("payment_pending", "pending", None),
    ("captured", "captured", "sell"),
    ("shipped", "captured", "sell"),
    ("completed", "captured", "sell"),
    ("refunded_partly", "captured", "sell"),
    ("payment_failed", "failed", "release"),
    ("canceled", None, "release"),
    ("canceled", "captured", "release"),
    ("refunded_fully", "captured", "release"),
    ("shipped", None, None),  # shipped without a capture Parley saw: the seats wait
])
def test_what_an_order_event_does_to_its_seats(state: str, payment: str | None, action: str | None) -> None:
    assert seat_action({"state": state, "payment_status": payment}) == action


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, min_size=2, max_size=24)
    async with p.acquire() as conn:
        await migrate(conn, "ingest", MIGRATIONS)
        await conn.execute("DELETE FROM ingest.flow_trips WHERE tenant_id = $1", TENANT)
        await conn.execute("DELETE FROM ingest.seat_orders WHERE tenant_id = $1", TENANT)
    yield p
    await p.close()


async def _trip(store: SeatStore, trip_id: str) -> None:
    await store.add_trip(TENANT, Trip(trip_id, trip_id, datetime(2026, 12, 24, tzinfo=UTC), "INR", 10000), SEATS)


async def _seats(pool: asyncpg.Pool, trip_id: str) -> dict[str, tuple[str, str | None, str | None]]:
    rows = await pool.fetch(
        "SELECT seat_id, CASE WHEN state = 'held' AND held_until < now() THEN 'free' ELSE state END AS s,"
        " holder, sold_ref FROM ingest.flow_seats WHERE tenant_id = $1 AND trip_id = $2", TENANT, trip_id)
    return {r["seat_id"]: (r["s"], r["holder"], r["sold_ref"]) for r in rows}


@pytest.mark.infra
@pytest.mark.parametrize("seed", [11, 12, 13, 14])
async def test_racing_customers_paying_and_failing_in_any_interleaving_one_buyer_per_seat(
        pool: asyncpg.Pool, database_url: str, seed: int) -> None:
    """40 customers race for 4 seats; each winner's order is attached to its hold and its payment
    is captured or fails, the attachment and the outcome racing each other in random order (and
    the outcome delivered twice). Every paid winner owns its seat, every failed one released it,
    and no seat has two buyers; a restarted process (a new pool) sees the same and changes
    nothing by replaying the outcomes."""
    rng = random.Random(seed)
    store = SeatStore(pool)
    trip = f"T-pay-{seed}"
    await _trip(store, trip)
    start = asyncio.Event()
    pays = {f"tok-{n}": rng.random() < 0.6 for n in range(40)}

    async def customer(token: str) -> str | None:
        await start.wait()
        for seat in rng.sample(SEATS, 2):
            if await store.hold(TENANT, trip, seat, token, 300) is not None:
                return seat
            await asyncio.sleep(0)
        return None

    tasks = {t: asyncio.create_task(customer(t)) for t in pays}
    await asyncio.sleep(0)
    start.set()
    won = {t: s for t, s in zip(tasks, await asyncio.gather(*tasks.values()), strict=True) if s is not None}
    assert len(won) == len(set(won.values())) <= len(SEATS), "one holder per seat"

    async def settle(token: str) -> None:
        ref = f"ref-{seed}-{token}"
        steps = [lambda: store.attach_order(TENANT, token, ref),
                 lambda: store.follow_order(TENANT, ref, "sell" if pays[token] else "release", f"ev-{ref}", AT),
                 lambda: store.follow_order(TENANT, ref, "sell" if pays[token] else "release", f"ev-{ref}", AT)]
        rng.shuffle(steps)
        await asyncio.gather(*(step() for step in steps))

    await asyncio.gather(*(settle(t) for t in won))
    seats = await _seats(pool, trip)
    for token, seat in won.items():
        state, holder, sold_ref = seats[seat]
        if pays[token]:
            assert (state, holder, sold_ref) == ("sold", token, f"ref-{seed}-{token}"), (token, seats[seat])
        else:
            assert state == "free" and holder is None, (token, seats[seat])
    sold_refs = [s[2] for s in seats.values() if s[0] == "sold"]
    assert len(sold_refs) == len(set(sold_refs)) == sum(pays[t] for t in won)

    # a restart: another process replays every outcome (at-least-once delivery) and a late
    # customer tries every seat: nothing changes hands twice
    other = await create_pool(database_url, min_size=1, max_size=4)
    try:
        again = SeatStore(other)
        for token in won:
            ref = f"ref-{seed}-{token}"
            assert await again.follow_order(TENANT, ref, "sell" if pays[token] else "release", f"ev-{ref}", AT) == []
        for seat in SEATS:
            got = await again.hold(TENANT, trip, seat, "late", 300)
            assert (got is not None) == (seats[seat][0] == "free"), seat
        after = await _seats(other, trip)
        assert [s for s in after.values() if s[0] == "sold"] == [s for s in seats.values() if s[0] == "sold"]
    finally:
        await other.close()


@pytest.mark.infra
async def test_a_hold_that_ran_out_is_sold_to_its_payer_unless_someone_else_took_the_seat(pool: asyncpg.Pool) -> None:
    store = SeatStore(pool)
    await _trip(store, "T-late")
    assert await store.hold(TENANT, "T-late", "1A", "slow-payer", 300) is not None
    assert await store.hold(TENANT, "T-late", "1B", "lost-payer", 300) is not None
    assert (await store.attach_order(TENANT, "slow-payer", "ref-slow")).attached == ["T-late/1A"]
    assert (await store.attach_order(TENANT, "lost-payer", "ref-lost")).attached == ["T-late/1B"]
    await pool.execute("UPDATE ingest.flow_seats SET held_until = now() - interval '1 second'"
                       " WHERE tenant_id = $1 AND trip_id = 'T-late'", TENANT)
    # 1B was free again and another customer held it; 1A nobody touched
    assert await store.hold(TENANT, "T-late", "1B", "quick", 300) is not None
    assert await store.follow_order(TENANT, "ref-slow", "sell", "ev-slow", AT) == ["T-late/1A"]
    assert await store.follow_order(TENANT, "ref-lost", "sell", "ev-lost", AT) == [], "not another customer's hold"
    seats = await _seats(pool, "T-late")
    assert seats["1A"] == ("sold", "slow-payer", "ref-slow")
    assert seats["1B"][:2] == ("held", "quick")


@pytest.mark.infra
async def test_an_order_settled_before_its_hold_was_attached_applies_at_attachment(pool: asyncpg.Pool) -> None:
    store = SeatStore(pool)
    await _trip(store, "T-early")
    assert await store.follow_order(TENANT, "ref-early-paid", "sell", "ev-1", AT) == []
    assert await store.follow_order(TENANT, "ref-early-failed", "release", "ev-2", AT) == []
    assert await store.hold(TENANT, "T-early", "1A", "tok-paid", 300) is not None
    assert await store.hold(TENANT, "T-early", "1B", "tok-failed", 300) is not None
    paid = await store.attach_order(TENANT, "tok-paid", "ref-early-paid")
    failed = await store.attach_order(TENANT, "tok-failed", "ref-early-failed")
    assert (paid.applied, paid.seats) == ("sell", ["T-early/1A"])
    assert (failed.applied, failed.seats) == ("release", ["T-early/1B"])
    # a flow token equal to the order's reference id needs no attachment
    assert await store.hold(TENANT, "T-early", "2A", "ref-by-token", 300) is not None
    assert await store.follow_order(TENANT, "ref-by-token", "sell", "ev-3", AT) == ["T-early/2A"]


@pytest.mark.infra
async def test_an_older_order_event_delivered_late_changes_nothing(pool: asyncpg.Pool) -> None:
    """Events of one order may reach ingest out of order (two billing replicas relaying a
    backlog): the newer decision stands, also for holds attached later."""
    store = SeatStore(pool)
    await _trip(store, "T-order")
    assert await store.hold(TENANT, "T-order", "1A", "tok-late", 300) is not None
    await store.attach_order(TENANT, "tok-late", "ref-late")
    assert await store.follow_order(TENANT, "ref-late", "sell", "ev-captured", AT) == ["T-order/1A"]
    older = AT - timedelta(minutes=1)
    assert await store.follow_order(TENANT, "ref-late", "release", "ev-pending-failed", older) == []
    # a second seat for the same order, attached afterwards, follows the newer decision (sold)
    assert await store.hold(TENANT, "T-order", "1B", "tok-late-2", 300) is not None
    second = await store.attach_order(TENANT, "tok-late-2", "ref-late")
    assert (second.applied, second.seats) == ("sell", ["T-order/1B"])


# --- through Kafka: ingest consumes billing's order events -----------------------------------


@pytest.fixture(scope="module")
async def ingest(kafka_bootstrap: str, database_url: str, commerce_keys: dict[str, str]
                 ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    app = create_app(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url))
    async with app.router.lifespan_context(app):
        await SeatStore(app.state.runtime.require_pool()).add_trip(
            SHOP, Trip("FOLLOW-1", "Follow", datetime(2026, 12, 24, tzinfo=UTC), "INR", 45000), ["5A", "5B"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as c:
            yield app, c


def order_event(ref: str, state: str, payment: str | None) -> tuple[str, bytes]:
    now = datetime.now(UTC)
    event = OrderEvent(event_id=f"order:{ref}:{state}", tenant_id=SHOP, phone_number_id=SHOP_NUMBER,
                       occurred_at=now, type=f"order.{state}", reference_id=ref, state=state,
                       payment_status=payment)
    return SHOP_NUMBER, event.model_dump_json().encode()


@pytest.mark.infra
async def test_order_events_on_kafka_sell_and_release_the_attached_holds(
        ingest: tuple[FastAPI, httpx.AsyncClient], kafka_bootstrap: str, commerce_keys: dict[str, str]) -> None:
    app, client = ingest
    store = SeatStore(app.state.runtime.require_pool())
    key = commerce_keys[SHOP]
    assert await store.hold(SHOP, "FOLLOW-1", "5A", "ft-paid", 300) is not None
    assert await store.hold(SHOP, "FOLLOW-1", "5B", "ft-failed", 300) is not None
    for token, ref in (("ft-paid", "ord-paid-1"), ("ft-failed", "ord-failed-1")):
        r = await client.post(f"/v1/flows/seats/holds/{token}/order", json={"reference_id": ref}, headers=bearer(key))
        assert r.status_code == 200 and r.json()["applied"] is None, r.text
    r = await client.post("/v1/flows/seats/holds/ft-never/order", json={"reference_id": "x"}, headers=bearer(key))
    assert r.status_code == 409

    await produce(kafka_bootstrap, ORDERS.name, [order_event("ord-paid-1", "requested", None),
                                                 order_event("ord-paid-1", "captured", "captured"),
                                                 order_event("ord-failed-1", "payment_failed", "failed")])

    async def settled() -> list[tuple[str, str, str | None]] | None:
        rows = await store.pool.fetch("SELECT seat_id, state, sold_ref FROM ingest.flow_seats"
                                      " WHERE tenant_id = $1 AND trip_id = 'FOLLOW-1' ORDER BY seat_id", SHOP)
        found = [(r["seat_id"], r["state"], r["sold_ref"]) for r in rows]
        return found if found == [("5A", "sold", "ord-paid-1"), ("5B", "free", None)] else None

    await eventually(settled, what="the paid hold sold and the failed one released", timeout_s=60)
    counts = (await client.get("/v1/flows/seats", headers=bearer(key))).json()["seats"]
    assert counts.get("sold", 0) >= 1, counts


@pytest.mark.infra
async def test_attachments_and_payment_outcomes_racing_on_many_orders_never_leave_a_paid_hold_unsold(
        pool: asyncpg.Pool) -> None:
    """The attachment and the order's outcome arrive at the same moment for 240 orders at once
    (the window the order's advisory lock closes: an outcome committed between the attachment's
    write and its read of the outcome would otherwise be seen by neither)."""
    store = SeatStore(pool)
    seats = [f"S{n:03d}" for n in range(240)]
    await store.add_trip(TENANT, Trip("T-wide", "T-wide", datetime(2026, 12, 24, tzinfo=UTC), "INR", 10000), seats)
    for n, seat in enumerate(seats):
        assert await store.hold(TENANT, "T-wide", seat, f"wide-{n}", 300) is not None
    start = asyncio.Event()

    async def both(n: int) -> None:
        await start.wait()
        await asyncio.gather(store.attach_order(TENANT, f"wide-{n}", f"ref-wide-{n}"),
                             store.follow_order(TENANT, f"ref-wide-{n}", "sell", f"ev-wide-{n}", AT))

    tasks = [asyncio.create_task(both(n)) for n in range(len(seats))]
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*tasks)
    states = Counter(s[0] for s in (await _seats(pool, "T-wide")).values())
    assert states == {"sold": len(seats)}, states


@pytest.mark.infra
@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/flows/seats/holds/ft-nul/order", {"reference_id": "ord\x00x"}, "reference_id"),
    ("/v1/flows/seats/holds/ft-nul/sell", {"reference_id": "ord\ud800x"}, "reference_id"),
    ("/v1/flows/seats/holds/ft%00nul/order", {"reference_id": "ord-ok"}, "flow_token"),
    ("/v1/flows/seats/holds/ft%00nul/release", None, "flow_token"),
])
async def test_a_value_postgresql_cannot_store_is_a_422_naming_the_field(
        ingest: tuple[FastAPI, httpx.AsyncClient], commerce_keys: dict[str, str],
        path: str, body: dict[str, str] | None, field: str) -> None:
    """NUL and lone surrogates never reach the seat tables (the fuzzer found a 500 here)."""
    _, client = ingest
    headers = {**bearer(commerce_keys[SHOP]), "content-type": "application/json"}
    content = None if body is None else json.dumps(body).encode()
    r = await client.post(path, content=content, headers=headers)
    assert r.status_code == 422, r.text
    assert field in r.text and "\x00" not in r.text
