"""The simulator plays Meta's side of a whole Flow: a customer who receives an interactive ``flow``
message opens it, every screen goes to the business's endpoint encrypted as Meta documents, and
the ``nfm_reply`` completion arrives as an inbound webhook.

The business endpoint here is the test's own (its own decryption with ``cryptography``), so the
simulator's encryption is checked by something it does not share code with."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from parley_simulator import CloudApiSimulator, SimulatorConfig, create_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.served import Served

from .conftest import APP_SECRET, CUSTOMER, PN, TOKEN, Receiver, SimHandle, make_config

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass
class SeatEndpoint:
    """A business's Flow endpoint: trips, then seats (the first pick is always 'just taken'), then
    a confirmation, then SUCCESS. ``garble`` answers with the request's IV instead of the inverted one."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    signatures_ok: list[bool] = field(default_factory=list)
    garble: bool = False

    def answer(self, req: dict[str, Any]) -> dict[str, Any]:
        data, screen = req.get("data") or {}, req.get("screen")
        if req["action"] == "INIT":
            return {"screen": "TRIPS", "data": {"trips": [{"id": "A", "title": "A"}, {"id": "B", "title": "B"}]}}
        if screen == "TRIPS":
            return {"screen": "SEATS", "data": {"trip_id": data["trip_id"], "seats": [{"id": "1A"}, {"id": "1B"}]}}
        if screen == "SEATS" and sum(r.get("screen") == "SEATS" for r in self.requests) == 1:
            return {"screen": "SEATS", "data": {"trip_id": data["trip_id"], "seats": [{"id": "2C"}],
                                                "error_message": f"Seat {data['seat_id']} was just taken"}}
        if screen == "SEATS":
            return {"screen": "CONFIRM", "data": {"trip_id": data["trip_id"], "seat_id": data["seat_id"]}}
        return {"screen": "SUCCESS", "data": {"extension_message_response": {"params": {
            "flow_token": req["flow_token"], **data}}}}

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        mac = "sha256=" + hmac.new(APP_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        self.signatures_ok.append(hmac.compare_digest(mac, request.headers.get("x-hub-signature-256", "")))
        body = json.loads(raw)
        aes_key = KEY.decrypt(base64.b64decode(body["encrypted_aes_key"]), OAEP)
        iv = base64.b64decode(body["initial_vector"])
        req = json.loads(AESGCM(aes_key).decrypt(iv, base64.b64decode(body["encrypted_flow_data"]), None))
        self.requests.append(req)
        answer_iv = iv if self.garble else bytes(b ^ 0xFF for b in iv)
        sealed = AESGCM(aes_key).encrypt(answer_iv, json.dumps(self.answer(req)).encode(), None)
        return Response(base64.b64encode(sealed), media_type="text/plain")


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[SeatEndpoint, str]]:
    seats = SeatEndpoint()
    async with Served(Starlette(routes=[Route("/flows/{number}", seats.handle, methods=["POST"])])) as served:
        yield seats, served.url + "/flows/{phone_number_id}"


@pytest.fixture
async def flow_sim(receiver: Receiver, endpoint: tuple[SeatEndpoint, str]) -> AsyncIterator[SimHandle]:
    import httpx

    base = make_config(receiver.url, flow_open_delay_ms=0, flow_screen_delay_ms=0)
    config = SimulatorConfig.model_validate({**base.model_dump(), "flows": [{
        "flow_id": "seat-picker", "endpoint_uri": endpoint[1], "screens": {
            "TRIPS": {"choose_from": "trips", "submit_as": "trip_id"},
            "SEATS": {"choose_from": "seats", "submit_as": "seat_id"}}}]})
    sim = CloudApiSimulator(config)
    async with Served(create_app(config, simulator=sim)) as served, httpx.AsyncClient(timeout=10) as http:
        yield SimHandle(served.url, sim, http)


def flow_message(token: str, flow_id: str = "seat-picker", action: str = "data_exchange") -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "interactive", "interactive": {
        "type": "flow", "body": {"text": "Pick your seat"}, "action": {"name": "flow", "parameters": {
            "flow_message_version": "3", "flow_token": token, "flow_id": flow_id, "flow_cta": "Choose a seat",
            "flow_action": action}}}}


def nfm_replies(receiver: Receiver) -> list[dict[str, Any]]:
    return [m for v in receiver.by_field("messages") for m in v.get("messages", [])
            if m.get("interactive", {}).get("type") == "nfm_reply"]


async def upload_key(h: SimHandle) -> None:
    r = await h.http.post(f"{h.url}/v24.0/{PN}/whatsapp_business_encryption",
                          data={"business_public_key": PUBLIC_PEM}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json() == {"success": True}, r.text


async def test_a_customer_opens_a_flow_message_plays_every_screen_and_the_nfm_reply_follows(
        flow_sim: SimHandle, receiver: Receiver, endpoint: tuple[SeatEndpoint, str]) -> None:
    seats, _ = endpoint
    h = flow_sim
    await upload_key(h)
    cart = {"catalog_id": "cat", "product_items": [
        {"product_retailer_id": "B", "quantity": 1, "item_price": 450, "currency": "INR"}]}
    r = await h.http.post(f"{h.url}/_sim/inbound", json={"phone_number_id": PN,
                                                         "messages": [{"from": CUSTOMER, "order": cart}]})
    assert r.status_code == 200, r.text
    sent = await h.send(flow_message("ft-1"))
    assert sent.status_code == 200, sent.text
    flow_wamid = sent.json()["messages"][0]["id"]

    await receiver.wait_for(lambda: len(nfm_replies(receiver)) == 1)
    reply = nfm_replies(receiver)[0]
    assert reply["from"] == CUSTOMER and reply["context"]["id"] == flow_wamid
    params = json.loads(reply["interactive"]["nfm_reply"]["response_json"])
    assert params == {"flow_token": "ft-1", "trip_id": "B", "seat_id": "2C"}

    assert all(seats.signatures_ok)
    steps = [(q["action"], q.get("screen"), q.get("data")) for q in seats.requests]
    assert steps[0] == ("INIT", None, None)
    assert steps[1] == ("data_exchange", "TRIPS", {"trip_id": "B"})  # the trip of the customer's cart
    assert [s[1] for s in steps[2:]] == ["SEATS", "SEATS", "CONFIRM"]  # a taken seat, another, confirm
    assert steps[3][2] == {"trip_id": "B", "seat_id": "2C"}
    sessions = (await h.http.get(f"{h.url}/_sim/flows")).json()["sessions"]
    assert [(s["flow_token"], s["outcome"], s["screens"]) for s in sessions] == [
        ("ft-1", "completed", ["TRIPS", "SEATS", "SEATS", "CONFIRM", "SUCCESS"])]


async def test_an_answer_not_sealed_with_the_inverted_iv_fails_the_flow_and_no_completion_is_sent(
        flow_sim: SimHandle, receiver: Receiver, endpoint: tuple[SeatEndpoint, str]) -> None:
    seats, _ = endpoint
    seats.garble = True
    await upload_key(flow_sim)
    await flow_sim.open_window()
    assert (await flow_sim.send(flow_message("ft-2"))).status_code == 200
    for _ in range(500):
        sessions = (await flow_sim.http.get(f"{flow_sim.url}/_sim/flows")).json()["sessions"]
        if sessions and sessions[0]["outcome"] != "open":
            break
        await asyncio.sleep(0.01)
    assert sessions[0]["outcome"] == "failed" and "inverted IV" in sessions[0]["problem"]
    assert len(seats.requests) == 1 and nfm_replies(receiver) == []


async def test_flows_without_an_endpoint_or_unknown_to_meta_are_not_played(
        flow_sim: SimHandle, endpoint: tuple[SeatEndpoint, str]) -> None:
    await upload_key(flow_sim)
    await flow_sim.open_window()
    assert (await flow_sim.send(flow_message("ft-3", action="navigate"))).status_code == 200
    assert (await flow_sim.send(flow_message("ft-4", flow_id="no-such-flow"))).status_code == 200
    stats = flow_sim.sim.stats
    assert (stats["flow_without_endpoint"], stats["flow_unknown"]) == (1, 1)
    assert endpoint[0].requests == []


async def test_a_bad_public_key_upload_is_refused_by_name(flow_sim: SimHandle) -> None:
    r = await flow_sim.http.post(f"{flow_sim.url}/v24.0/{PN}/whatsapp_business_encryption",
                                 data={"business_public_key": "not a key"},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400 and "business_public_key" in r.json()["error"]["error_data"]["details"]
