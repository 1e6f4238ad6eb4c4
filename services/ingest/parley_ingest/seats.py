"""The reference flow backend shipped with Parley: choosing a bus or cinema seat in a Flow.

Screens (the business's Flow JSON names them): ``TRIPS`` (pick a trip), ``SEATS`` (pick a free
seat), ``CONFIRM`` (the seat is held for ``hold_seconds``), then ``SUCCESS`` (the flow closes and
WhatsApp sends the ``nfm_reply`` with the trip, seat and hold). A seat is held by one flow token
at a time: holding is one conditional ``UPDATE`` (free, or held by nobody any more, or by this
same token), so of two customers picking the same seat at the same moment exactly one gets it,
whatever the interleaving, and a restart changes nothing (the hold is in PostgreSQL). A hold
that expires makes the seat free again; a hold is sold (``sell``) when the order is paid and
released (``release``) when the payment fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

TRIPS, SEATS, CONFIRM, SUCCESS = "TRIPS", "SEATS", "CONFIRM", "SUCCESS"
FREE = "state = 'free' OR (state = 'held' AND held_until < now())"


class FlowTokenInvalid(ValueError):
    """The flow token is missing or no longer valid (the endpoint answers 427)."""


@dataclass(frozen=True)
class Trip:
    trip_id: str
    title: str
    departs_at: datetime
    currency: str
    price_value: int
    price_offset: int = 100

    def price(self) -> str:
        return f"{Decimal(self.price_value) / Decimal(self.price_offset)} {self.currency}"


@dataclass(frozen=True)
class SeatOrderResult:
    attached: list[str]  # "trip/seat" of the holds now belonging to the order
    applied: str | None  # the order's settled outcome applied at once (sell | release), if any
    seats: list[str]  # the seats it sold or released


async def _lock_order(conn: Any, tenant_id: str, reference_id: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                       f"seat-order\x1f{tenant_id}\x1f{reference_id}")


async def _apply(conn: Any, tenant_id: str, reference_id: str, action: str) -> list[str]:
    """Sell or release the order's holds. A sale ignores the hold's end (the customer paid; the
    seat is theirs unless another customer has held it since, which resets ``order_ref``)."""
    if action == "sell":
        rows = await conn.fetch(
            "UPDATE ingest.flow_seats SET state = 'sold', sold_ref = $2, held_until = NULL"
            " WHERE tenant_id = $1 AND state = 'held' AND (order_ref = $2 OR (order_ref IS NULL AND holder = $2))"
            " RETURNING trip_id || '/' || seat_id AS seat", tenant_id, reference_id)
    else:
        rows = await conn.fetch(
            "UPDATE ingest.flow_seats SET state = 'free', holder = NULL, held_until = NULL, order_ref = NULL"
            " WHERE tenant_id = $1 AND state = 'held' AND (order_ref = $2 OR (order_ref IS NULL AND holder = $2))"
            " RETURNING trip_id || '/' || seat_id AS seat", tenant_id, reference_id)
    return sorted(r["seat"] for r in rows)


class SeatStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def add_trip(self, tenant_id: str, trip: Trip, seats: list[str]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO ingest.flow_trips (tenant_id, trip_id, title, departs_at, currency, price_value,"
                " price_offset) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (tenant_id, trip_id) DO UPDATE SET"
                " title = EXCLUDED.title, departs_at = EXCLUDED.departs_at, currency = EXCLUDED.currency,"
                " price_value = EXCLUDED.price_value, price_offset = EXCLUDED.price_offset",
                tenant_id, trip.trip_id, trip.title, trip.departs_at, trip.currency, trip.price_value,
                trip.price_offset)
            await conn.executemany(
                "INSERT INTO ingest.flow_seats (tenant_id, trip_id, seat_id) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
                [(tenant_id, trip.trip_id, s) for s in seats])

    async def trips(self, tenant_id: str) -> list[Trip]:
        rows = await self.pool.fetch(
            "SELECT trip_id, title, departs_at, currency, price_value, price_offset FROM ingest.flow_trips"
            " WHERE tenant_id = $1 ORDER BY departs_at, trip_id", tenant_id)
        return [Trip(**dict(r)) for r in rows]

    async def trip(self, tenant_id: str, trip_id: str) -> Trip | None:
        r = await self.pool.fetchrow(
            "SELECT trip_id, title, departs_at, currency, price_value, price_offset FROM ingest.flow_trips"
            " WHERE tenant_id = $1 AND trip_id = $2", tenant_id, trip_id)
        return Trip(**dict(r)) if r else None

    async def free_seats(self, tenant_id: str, trip_id: str) -> list[str]:
        rows = await self.pool.fetch(
            f"SELECT seat_id FROM ingest.flow_seats WHERE tenant_id = $1 AND trip_id = $2 AND ({FREE})"
            " ORDER BY seat_id", tenant_id, trip_id)
        return [r["seat_id"] for r in rows]

    async def hold(self, tenant_id: str, trip_id: str, seat_id: str, token: str, seconds: float
                   ) -> datetime | None:
        """Hold the seat for ``token``; the hold's end, or None when someone else has it."""
        return (await self.hold_with_trip(tenant_id, trip_id, seat_id, token, seconds))[0]

    async def hold_with_trip(self, tenant_id: str, trip_id: str, seat_id: str, token: str, seconds: float
                             ) -> tuple[datetime | None, Trip | None]:
        """Hold the seat for ``token`` (one statement, one round trip) and read its trip.

        The token's other hold on this trip (a customer changing their mind) is released by the
        same statement. Both updates see one snapshot; the seat's own ``WHERE`` is re-checked by
        PostgreSQL after a competing hold commits, so only one of them gets the row."""
        row = await self.pool.fetchrow(
            "WITH pick AS ("
            " UPDATE ingest.flow_seats SET state = 'held', holder = $4,"
            " held_until = now() + make_interval(secs => $5),"
            " order_ref = CASE WHEN holder = $4 THEN order_ref END"
            " WHERE tenant_id = $1 AND trip_id = $2 AND seat_id = $3"
            f" AND ({FREE} OR (state = 'held' AND holder = $4)) RETURNING held_until),"
            " dropped AS ("
            " UPDATE ingest.flow_seats SET state = 'free', holder = NULL, held_until = NULL, order_ref = NULL"
            " WHERE tenant_id = $1 AND trip_id = $2 AND holder = $4 AND state = 'held' AND seat_id <> $3"
            " AND EXISTS (SELECT 1 FROM pick) RETURNING 1)"
            " SELECT (SELECT held_until FROM pick) AS held_until, (SELECT count(*) FROM dropped) AS dropped,"
            " t.trip_id, t.title, t.departs_at, t.currency, t.price_value, t.price_offset"
            " FROM (SELECT 1) AS one LEFT JOIN ingest.flow_trips t ON t.tenant_id = $1 AND t.trip_id = $2",
            tenant_id, trip_id, seat_id, token, seconds)
        assert row is not None
        trip = None if row["trip_id"] is None else Trip(
            row["trip_id"], row["title"], row["departs_at"], row["currency"], row["price_value"], row["price_offset"])
        until = row["held_until"]
        return (until if isinstance(until, datetime) else None), trip

    async def still_held(self, tenant_id: str, trip_id: str, seat_id: str, token: str) -> datetime | None:
        until = await self.pool.fetchval(
            "SELECT held_until FROM ingest.flow_seats WHERE tenant_id = $1 AND trip_id = $2 AND seat_id = $3"
            " AND state = 'held' AND holder = $4 AND held_until >= now()", tenant_id, trip_id, seat_id, token)
        return until if isinstance(until, datetime) else None

    async def sell(self, tenant_id: str, token: str, reference_id: str) -> list[str]:
        """The token's held seats become sold (the order is paid); returns them."""
        rows = await self.pool.fetch(
            "UPDATE ingest.flow_seats SET state = 'sold', sold_ref = $3, held_until = NULL"
            " WHERE tenant_id = $1 AND holder = $2 AND state = 'held' AND held_until >= now()"
            " RETURNING trip_id || '/' || seat_id AS seat", tenant_id, token, reference_id)
        return [r["seat"] for r in rows]

    async def release(self, tenant_id: str, token: str) -> int:
        """The token's holds end now (the payment failed)."""
        result = await self.pool.execute(
            "UPDATE ingest.flow_seats SET state = 'free', holder = NULL, held_until = NULL, order_ref = NULL"
            " WHERE tenant_id = $1 AND holder = $2 AND state = 'held'", tenant_id, token)
        return int(result.split()[-1])

    # --- seats follow payments (ADR 0112, 0113) -------------------------------------------
    # Both the attachment of a hold to an order and the order's outcome take the order's advisory
    # lock, so whichever comes second sees the other: no interleaving leaves a paid order's hold
    # unsold or a failed order's hold held.

    async def attach_order(self, tenant_id: str, token: str, reference_id: str) -> SeatOrderResult:
        """The token's holds belong to the order ``reference_id``; if its payment already settled,
        they are sold or released now."""
        async with self.pool.acquire() as conn, conn.transaction():
            await _lock_order(conn, tenant_id, reference_id)
            rows = await conn.fetch(
                "UPDATE ingest.flow_seats SET order_ref = $3 WHERE tenant_id = $1 AND holder = $2 AND state = 'held'"
                " RETURNING trip_id || '/' || seat_id AS seat", tenant_id, token, reference_id)
            attached = sorted(r["seat"] for r in rows)
            action = await conn.fetchval(
                "SELECT action FROM ingest.seat_orders WHERE tenant_id = $1 AND reference_id = $2",
                tenant_id, reference_id)
            if action is None or not attached:
                return SeatOrderResult(attached, None, [])
            return SeatOrderResult(attached, action, await _apply(conn, tenant_id, reference_id, action))

    async def follow_order(self, tenant_id: str, reference_id: str, action: str, event_id: str,
                           event_at: datetime) -> list[str]:
        """The order's outcome (``sell`` | ``release``) from its event: kept as the order's latest
        (by the event's time: an older event delivered late changes nothing), and applied to its
        holds (those attached to it, or held by a flow token equal to its reference id). Returns
        the seats sold or released."""
        async with self.pool.acquire() as conn, conn.transaction():
            await _lock_order(conn, tenant_id, reference_id)
            latest = await conn.fetchval(
                "INSERT INTO ingest.seat_orders (tenant_id, reference_id, action, event_id, event_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, reference_id) DO UPDATE SET"
                " action = EXCLUDED.action, event_id = EXCLUDED.event_id, event_at = EXCLUDED.event_at,"
                " decided_at = now() WHERE ingest.seat_orders.event_at <= EXCLUDED.event_at RETURNING true",
                tenant_id, reference_id, action, event_id, event_at)
            if not latest:
                return []
            return await _apply(conn, tenant_id, reference_id, action)

    async def seat_counts(self, tenant_id: str) -> dict[str, int]:
        rows = await self.pool.fetch(
            "SELECT CASE WHEN state = 'held' AND held_until < now() THEN 'free' ELSE state END AS s, count(*)"
            " FROM ingest.flow_seats WHERE tenant_id = $1 GROUP BY 1", tenant_id)
        return {r["s"]: r["count"] for r in rows}

    async def holds_of(self, tenant_id: str, token: str) -> list[dict[str, Any]]:
        """The token's seats that are held (and not expired) or sold: what the customer picked."""
        rows = await self.pool.fetch(
            "SELECT s.trip_id, s.seat_id, s.state, s.held_until, s.sold_ref, t.currency, t.price_value,"
            " t.price_offset, t.title FROM ingest.flow_seats s JOIN ingest.flow_trips t"
            " ON t.tenant_id = s.tenant_id AND t.trip_id = s.trip_id"
            " WHERE s.tenant_id = $1 AND s.holder = $2 AND (s.state = 'sold' OR (s.state = 'held'"
            " AND s.held_until >= now())) ORDER BY s.trip_id, s.seat_id", tenant_id, token)
        return [{"trip_id": r["trip_id"], "seat_id": r["seat_id"], "state": r["state"], "title": r["title"],
                 "held_until": r["held_until"].isoformat() if r["held_until"] else None,
                 "price": {"value": r["price_value"], "offset": r["price_offset"]}, "currency": r["currency"]}
                for r in rows]


class SeatSelectionBackend:
    """INIT, data_exchange and BACK of the seat-selection Flow, for one tenant at a time."""

    def __init__(self, store: SeatStore, *, hold_seconds: float = 300.0) -> None:
        self.store = store
        self.hold_seconds = hold_seconds

    async def handle(self, tenant_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        token = payload.get("flow_token")
        if not isinstance(token, str) or not token:
            raise FlowTokenInvalid("the request has no flow_token")
        action = payload.get("action")
        screen = payload.get("screen")
        raw = payload.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if action == "INIT" or (action == "BACK" and screen in (SEATS, TRIPS)):
            return await self._trips(tenant_id)
        if action == "BACK" and screen == CONFIRM:
            return await self._seats(tenant_id, str(data.get("trip_id", "")))
        if action != "data_exchange":
            return await self._trips(tenant_id)
        trip_id = str(data.get("trip_id", ""))
        if screen == TRIPS:
            return await self._seats(tenant_id, trip_id)
        if screen == SEATS:
            seat_id = str(data.get("seat_id", ""))
            until, trip = await self.store.hold_with_trip(tenant_id, trip_id, seat_id, token, self.hold_seconds)
            if until is None:
                return await self._seats(tenant_id, trip_id, f"Seat {seat_id} was just taken; pick another.")
            return {"screen": CONFIRM, "data": {"trip_id": trip_id, "seat_id": seat_id,
                                                "trip": trip.title if trip else trip_id,
                                                "price": trip.price() if trip else "",
                                                "held_until": until.isoformat()}}
        if screen == CONFIRM:
            seat_id = str(data.get("seat_id", ""))
            until = await self.store.still_held(tenant_id, trip_id, seat_id, token)
            if until is None:
                return await self._seats(tenant_id, trip_id, "Your hold expired; pick a seat again.")
            return {"screen": SUCCESS, "data": {"extension_message_response": {"params": {
                "flow_token": token, "trip_id": trip_id, "seat_id": seat_id, "held_until": until.isoformat()}}}}
        return await self._trips(tenant_id)

    async def _trips(self, tenant_id: str) -> dict[str, Any]:
        trips = await self.store.trips(tenant_id)
        return {"screen": TRIPS, "data": {"trips": [
            {"id": t.trip_id, "title": t.title, "description": f"{t.departs_at:%Y-%m-%d %H:%M} · {t.price()}"}
            for t in trips]}}

    async def _seats(self, tenant_id: str, trip_id: str, error: str | None = None) -> dict[str, Any]:
        seats = await self.store.free_seats(tenant_id, trip_id)
        data: dict[str, Any] = {"trip_id": trip_id, "seats": [{"id": s, "title": s} for s in seats]}
        if error:
            data["error_message"] = error
        return {"screen": SEATS, "data": data}


