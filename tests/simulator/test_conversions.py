"""The simulator's stand-in for Meta's Conversions API (business messaging, click-to-WhatsApp ads):
what it takes, what it refuses, signatures, duplicates by event id."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from parley_common.outbound import SIGNATURE_HEADER, sign
from parley_simulator.conversions import ConversionsReceiver, conversions_router

from .conftest import SimFactory

SECRET = "capi-sim-secret-0123456789"


def purchase(event_id: str = "conversion:1", **changes: Any) -> dict[str, Any]:
    event = {"event_name": "Purchase", "event_id": event_id, "event_time": 1796000000,
             "action_source": "business_messaging", "messaging_channel": "whatsapp",
             "user_data": {"ctwa_clid": "ARAkLkA8rmlFeiCktEJQ"},
             "custom_data": {"currency": "INR", "value": 450.0, "order_id": "bus-1"}}
    return {**event, **changes}


def client(receiver: ConversionsReceiver) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(conversions_router(receiver))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


async def test_a_signed_purchase_from_an_ad_is_received_once() -> None:
    receiver = ConversionsReceiver(secret=SECRET)
    async with client(receiver) as c:
        body = orjson.dumps({"data": [purchase()]})
        headers = {SIGNATURE_HEADER: sign(body, SECRET, int(time.time())), "content-type": "application/json"}
        assert (await c.post("/_sim/conversions", content=body, headers=headers)).json() == {"events_received": 1}
        again = await c.post("/_sim/conversions", content=body, headers=headers)
        assert again.json() == {"events_received": 0}, "Meta deduplicates by event_id"
        listed = (await c.get("/_sim/conversions")).json()
        assert [e["user_data"]["ctwa_clid"] for e in listed["events"]] == ["ARAkLkA8rmlFeiCktEJQ"]
        assert listed["duplicates"] == 1


async def test_unsigned_or_wrongly_signed_conversions_are_refused() -> None:
    async with client(ConversionsReceiver(secret=SECRET)) as c:
        body = orjson.dumps({"data": [purchase()]})
        assert (await c.post("/_sim/conversions", content=body)).status_code == 401
        forged = {SIGNATURE_HEADER: sign(body, "another-secret", int(time.time()))}
        assert (await c.post("/_sim/conversions", content=body, headers=forged)).status_code == 401


async def test_an_event_missing_what_meta_requires_is_a_400_naming_the_field() -> None:
    async with client(ConversionsReceiver()) as c:
        cases = [
            (purchase(user_data={}), "data[0].user_data.ctwa_clid"),
            (purchase(messaging_channel="messenger"), "data[0].messaging_channel"),
            (purchase(custom_data={"currency": "INR"}), "data[0].custom_data.value"),
            (purchase(event_name=""), "data[0].event_name"),
        ]
        for event, field in cases:
            r = await c.post("/_sim/conversions", json={"data": [event]})
            assert r.status_code == 400 and field in r.json()["detail"], (field, r.text)
        assert (await c.post("/_sim/conversions", json={"data": []})).status_code == 400
        assert (await c.get("/_sim/conversions")).json()["events"] == []


async def test_the_simulator_app_serves_the_conversions_receiver(make_sim: SimFactory) -> None:
    h = await make_sim(webhooks=False)
    r = await h.http.post(f"{h.url}/_sim/conversions", json={"data": [purchase("conversion:sim")]})
    assert r.status_code == 200 and r.json() == {"events_received": 1}
    assert [e["event_id"] for e in (await h.http.get(f"{h.url}/_sim/conversions")).json()["events"]] == [
        "conversion:sim"]
