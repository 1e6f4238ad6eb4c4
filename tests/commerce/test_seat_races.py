"""Many customers racing for a few seats on real PostgreSQL: one winner per seat, holds released
when they expire, nothing changed by a restart (a new pool, as a new ingest process would have)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from parley_common.db import create_pool, migrate
from parley_ingest.app import MIGRATIONS
from parley_ingest.seats import SeatStore, Trip

pytestmark = pytest.mark.infra
TENANT = "race-tenant"
SEATS = ["1A", "1B", "1C"]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, min_size=2, max_size=24)
    async with p.acquire() as conn:
        await migrate(conn, "ingest", MIGRATIONS)
        await conn.execute("DELETE FROM ingest.flow_trips WHERE tenant_id = $1", TENANT)
    yield p
    await p.close()


async def _trip(store: SeatStore, trip_id: str) -> None:
    await store.add_trip(TENANT, Trip(trip_id, trip_id, datetime(2026, 12, 24, tzinfo=UTC), "INR", 10000), SEATS)


async def _holders(pool: asyncpg.Pool, trip_id: str) -> dict[str, str | None]:
    rows = await pool.fetch("SELECT seat_id, holder FROM ingest.flow_seats WHERE tenant_id = $1 AND trip_id = $2"
                            " AND (state = 'sold' OR (state = 'held' AND held_until >= now()))", TENANT, trip_id)
    return {r["seat_id"]: r["holder"] for r in rows}


async def test_sixty_customers_racing_for_one_seat_give_exactly_one_winner(pool: asyncpg.Pool) -> None:
    store = SeatStore(pool)
    await _trip(store, "T-one")
    start = asyncio.Event()

    async def customer(n: int) -> bool:
        await start.wait()
        return await store.hold(TENANT, "T-one", "1A", f"tok-{n}", 300) is not None

    tasks = [asyncio.create_task(customer(n)) for n in range(60)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*tasks)
    assert sum(results) == 1
    winner = f"tok-{results.index(True)}"
    assert await _holders(pool, "T-one") == {"1A": winner}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_many_customers_many_seats_no_seat_held_twice_and_expired_holds_are_free_again(
        pool: asyncpg.Pool, database_url: str, seed: int) -> None:
    rng = random.Random(seed)
    store = SeatStore(pool)
    trip = f"T-many-{seed}"
    await _trip(store, trip)
    picks = {f"tok-{n}": [rng.choice(SEATS) for _ in range(3)] for n in range(40)}  # each changes mind twice

    async def customer(token: str) -> list[str]:
        won = []
        for seat in picks[token]:
            if await store.hold(TENANT, trip, seat, token, 300) is not None:
                won.append(seat)
            await asyncio.sleep(0)
        return won

    await asyncio.gather(*(customer(t) for t in picks))
    holders = await _holders(pool, trip)
    assert set(holders) <= set(SEATS)
    held_by = Counter(holders.values())
    assert all(c == 1 for c in held_by.values()), "a customer holds one seat of a trip at most"
    for seat, token in holders.items():  # only a seat the customer picked
        assert token is not None and seat in picks[token]
    assert set(await store.free_seats(TENANT, trip)) == set(SEATS) - set(holders)

    # a restart: another pool (another process) sees the same holds and cannot take them
    other = await create_pool(database_url, min_size=1, max_size=4)
    try:
        again = SeatStore(other)
        for seat in holders:
            assert await again.hold(TENANT, trip, seat, "tok-after-restart", 300) is None
        # the holds run out: the seats are free, and a new race again has one winner per seat
        await other.execute("UPDATE ingest.flow_seats SET held_until = now() - interval '1 second'"
                            " WHERE tenant_id = $1 AND trip_id = $2 AND state = 'held'", TENANT, trip)
        assert set(await again.free_seats(TENANT, trip)) == set(SEATS)
        won = await asyncio.gather(*(again.hold(TENANT, trip, SEATS[n % 3], f"late-{n}", 300) for n in range(30)))
        assert sum(w is not None for w in won) == 3
    finally:
        await other.close()


async def test_a_sold_seat_is_never_held_again_and_a_failed_payment_releases_the_hold(pool: asyncpg.Pool) -> None:
    store = SeatStore(pool)
    await _trip(store, "T-sell")
    assert await store.hold(TENANT, "T-sell", "1A", "paid", 300) is not None
    assert await store.hold(TENANT, "T-sell", "1B", "unpaid", 300) is not None
    assert await store.sell(TENANT, "paid", "bus-1") == ["T-sell/1A"]
    assert await store.release(TENANT, "unpaid") == 1
    assert await store.hold(TENANT, "T-sell", "1A", "someone", 300) is None
    assert await store.hold(TENANT, "T-sell", "1B", "someone", 300) is not None
    assert await store.sell(TENANT, "paid", "bus-1") == [], "selling twice sells nothing more"
