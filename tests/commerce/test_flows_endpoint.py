"""The Flows data endpoint in ingest on real PostgreSQL (and ingest's Kafka), seat selection end to
end: signature, decryption (two keys), ping, INIT, data_exchange, BACK, holds, Meta's error codes."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from parley_ingest.domain.flows import decrypt_response, encrypt_request
from parley_ingest.seats import SeatStore, Trip

from .conftest import (
    APP_SECRET,
    FLOW_KEY,
    FLOW_OLD_KEY,
    OTHER,
    OTHER_NUMBER,
    SHOP,
    SHOP_NUMBER,
    STRANGER_KEY,
    bearer,
)

pytestmark = pytest.mark.infra
TRIP = Trip("BLR-MYS-0900", "Bengaluru → Mysuru 09:00", datetime(2026, 12, 24, 3, 30, tzinfo=UTC), "INR", 45000)


@pytest.fixture(scope="module")
async def ingest(kafka_bootstrap: str, database_url: str, commerce_keys: dict[str, str]
                 ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    app = create_app(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url))
    async with app.router.lifespan_context(app):
        await SeatStore(app.state.runtime.require_pool()).add_trip(SHOP, TRIP, ["1A", "1B", "2A", "2B"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as c:
            yield app, c


class Meta:
    """Meta's side of one Flow request: encrypts as Meta does, signs with the app secret."""

    def __init__(self, client: httpx.AsyncClient, key: Any = FLOW_KEY) -> None:
        self.client, self.key = client, key

    async def call(self, payload: dict[str, Any], *, number: str = SHOP_NUMBER, secret: str = APP_SECRET
                   ) -> tuple[int, dict[str, Any] | bytes]:
        aes_key, iv = os.urandom(16), os.urandom(16)
        raw = orjson.dumps(encrypt_request(payload, self.key.public_key(), aes_key, iv))
        sig = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        r = await self.client.post(f"/flows/{number}", content=raw,
                                   headers={"x-hub-signature-256": sig, "content-type": "application/json"})
        if r.status_code != 200:
            return r.status_code, r.content
        assert r.headers["content-type"].startswith("text/plain")
        return 200, decrypt_response(r.content, aes_key, iv)


def exchange(token: str, screen: str, **data: Any) -> dict[str, Any]:
    return {"version": "3.0", "action": "data_exchange", "flow_token": token, "screen": screen, "data": data}


async def test_ping_with_either_key_of_a_rotation(ingest: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = ingest
    for key in (FLOW_KEY, FLOW_OLD_KEY):
        status, body = await Meta(client, key).call({"version": "3.0", "action": "ping"})
        assert (status, body) == (200, {"data": {"status": "active"}})


async def test_metas_error_codes(ingest: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = ingest
    ping = {"version": "3.0", "action": "ping"}
    assert (await Meta(client).call(ping, secret="not-the-secret"))[0] == 432
    assert (await Meta(client, STRANGER_KEY).call(ping))[0] == 421
    assert (await Meta(client).call(ping, number="999999"))[0] == 404
    # the other tenant has no Flows key configured: nothing can be decrypted for it
    assert (await Meta(client).call(ping, number=OTHER_NUMBER))[0] == 421
    assert (await Meta(client).call({"version": "3.0", "action": "INIT", "flow_token": ""}))[0] == 427
    raw = b'{"encrypted_aes_key": "x"}'
    sig = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    r = await client.post(f"/flows/{SHOP_NUMBER}", content=raw, headers={"x-hub-signature-256": sig})
    assert r.status_code == 421


async def test_a_customer_picks_a_trip_and_a_seat_and_a_second_customer_cannot_take_it(
        ingest: tuple[FastAPI, httpx.AsyncClient], commerce_keys: dict[str, str]) -> None:
    app, client = ingest
    meta = Meta(client)
    status, init = await meta.call({"version": "3.0", "action": "INIT", "flow_token": "tok-asha"})
    assert status == 200 and init["screen"] == "TRIPS"
    assert [t["id"] for t in init["data"]["trips"]] == [TRIP.trip_id]
    _, seats = await meta.call(exchange("tok-asha", "TRIPS", trip_id=TRIP.trip_id))
    assert seats["screen"] == "SEATS" and [s["id"] for s in seats["data"]["seats"]] == ["1A", "1B", "2A", "2B"]
    _, confirm = await meta.call(exchange("tok-asha", "SEATS", trip_id=TRIP.trip_id, seat_id="1A"))
    assert confirm["screen"] == "CONFIRM" and confirm["data"]["seat_id"] == "1A"
    assert confirm["data"]["price"] == "450 INR"

    _, taken = await meta.call(exchange("tok-ravi", "SEATS", trip_id=TRIP.trip_id, seat_id="1A"))
    assert taken["screen"] == "SEATS" and "1A" in taken["data"]["error_message"]
    assert "1A" not in [s["id"] for s in taken["data"]["seats"]]

    _, back = await meta.call({"version": "3.0", "action": "BACK", "flow_token": "tok-ravi", "screen": "SEATS"})
    assert back["screen"] == "TRIPS"
    _, done = await meta.call(exchange("tok-asha", "CONFIRM", trip_id=TRIP.trip_id, seat_id="1A"))
    assert done["screen"] == "SUCCESS"
    assert done["data"]["extension_message_response"]["params"]["seat_id"] == "1A"

    # the hold runs out: the seat is free again and a late confirmation is sent back to the seats
    pool = app.state.runtime.require_pool()
    await pool.execute("UPDATE ingest.flow_seats SET held_until = now() - interval '1 second'"
                       " WHERE tenant_id = $1 AND seat_id = '1A'", SHOP)
    _, late = await meta.call(exchange("tok-asha", "CONFIRM", trip_id=TRIP.trip_id, seat_id="1A"))
    assert late["screen"] == "SEATS" and "expired" in late["data"]["error_message"]
    _, ravi = await meta.call(exchange("tok-ravi", "SEATS", trip_id=TRIP.trip_id, seat_id="1A"))
    assert ravi["screen"] == "CONFIRM"
    sell = "/v1/flows/seats/holds/tok-ravi/sell"
    other = await client.post(sell, json={"reference_id": "bus-0042"}, headers=bearer(commerce_keys[OTHER]))
    assert other.status_code == 409, "another tenant's key cannot sell this tenant's seat"
    sold = await client.post(sell, json={"reference_id": "bus-0042"}, headers=bearer(commerce_keys[SHOP]))
    assert sold.status_code == 200 and sold.json()["sold"] == [f"{TRIP.trip_id}/1A"]
    assert (await client.post(sell, json={"reference_id": "bus-0042"},
                              headers=bearer(commerce_keys[SHOP]))).status_code == 409
    counts = (await client.get("/v1/flows/seats", headers=bearer(commerce_keys[SHOP]))).json()["seats"]
    assert counts["sold"] == 1
    _, after = await meta.call(exchange("tok-new", "TRIPS", trip_id=TRIP.trip_id))
    assert "1A" not in [s["id"] for s in after["data"]["seats"]]


async def test_an_error_notification_is_acknowledged(ingest: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = ingest
    status, body = await Meta(client).call(exchange("tok-x", "SEATS", error="invalid-screen",
                                                    error_message="unknown component"))
    assert (status, body) == (200, {"data": {"acknowledged": True}})


