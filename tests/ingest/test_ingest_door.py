"""What ingest refuses at the door, and that refusing it changes nothing for anyone else.

Issue 12: a value no consumer can store (NUL, a lone surrogate) is refused with the field named.
Issue 13: a request too large for one Kafka record is a 413 for that request alone; before, a
5 MB send request (or a 3 MB signed webhook that is not Meta's shape) tripped the process-wide
breaker and every other tenant's webhooks got 503 while Kafka was healthy.
"""

from __future__ import annotations

import uuid

import orjson
import pytest
from parley_common.broker import MAX_RECORD_BYTES
from parley_common.contracts import DeadLetter
from parley_common.meta.signature import sign
from parley_common.topics import DEAD_LETTERS, MESSAGES_IN
from support.kafka import read_topic

from .conftest import IngestEnv
from .ingest_support import APP1_SECRET, APP2_SECRET, APP_1, APP_2

pytestmark = pytest.mark.infra

ACME_NUMBER, INITECH_NUMBER = "880000000001", "880000000004"


def _auth(env: IngestEnv, tenant: str = "ingest-acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {env.keys[tenant]}"}


def _text(body: str, **extra: object) -> dict:
    return {"from": ACME_NUMBER, "to": "+16505551234", "type": "text", "text": {"body": body}, **extra}


def _contacts(size: int) -> dict:
    """A contacts message: free-form, so the API's 8 MiB body limit is its only bound."""
    cards = [{"name": {"formatted_name": f"Card {i}"}, "org": {"company": "z" * (size // 50)}}
             for i in range(50)]
    return {"from": ACME_NUMBER, "to": "+16505551234", "type": "contacts", "contacts": cards}


def _letters(records: list) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(r.value) for r in records]


def _inbound(number: str, wamid: str, body: str = "hello") -> bytes:
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "880000000103", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100004", "phone_number_id": number},
            "contacts": [{"profile": {"name": "Ivy"}, "wa_id": "447700900999"}],
            "messages": [{"from": "447700900999", "id": wamid, "timestamp": "1762000000", "type": "text",
                          "text": {"body": body}}]}}]}]})


async def _webhook(env: IngestEnv, body: bytes, *, app: str = APP_2, secret: bytes = APP2_SECRET) -> int:
    r = await env.client.post(f"/webhooks/meta/{app}", content=body,
                              headers={"X-Hub-Signature-256": sign(body, secret),
                                       "content-type": "application/json"})
    return r.status_code


async def _others_get_200(env: IngestEnv, marker: str, n: int = 20) -> list[int]:
    """Another tenant (Initech, another Meta app) posts ``n`` webhooks right away."""
    return [await _webhook(env, _inbound(INITECH_NUMBER, f"wamid.{marker}.OTHER{i}")) for i in range(n)]


async def test_a_5_mb_send_request_is_413_for_that_tenant_and_others_are_unaffected(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    big = _contacts(5 * 1024 * 1024)
    r = await ingest.client.post("/v1/messages", json=big, headers=_auth(ingest))
    assert r.status_code == 413, r.text
    assert "the message" in r.json()["detail"] and str(MAX_RECORD_BYTES) in r.json()["detail"]
    assert await _others_get_200(ingest, marker) == [200] * 20
    batch = {"messages": [_text("small"), big]}
    r = await ingest.client.post("/v1/messages/batch", json=batch, headers=_auth(ingest))
    assert r.status_code == 413 and r.json()["detail"].startswith("messages.1 ")
    assert await _others_get_200(ingest, marker + "b") == [200] * 20
    # the tenant itself goes on sending
    r = await ingest.client.post("/v1/messages", json=_text("after"), headers=_auth(ingest))
    assert r.status_code == 202


async def test_a_3_mb_signed_webhook_of_no_meta_shape_is_archived_and_changes_nothing_else(
    ingest: IngestEnv,
) -> None:
    marker = uuid.uuid4().hex[:8]
    body = orjson.dumps({"not": "meta", "marker": marker, "filler": ['"quoted"' * 10] * 30_000})
    assert 2_500_000 < len(body) <= 3 * 1024 * 1024
    assert await _webhook(ingest, body, app=APP_1, secret=APP1_SECRET) == 200
    assert await _others_get_200(ingest, marker) == [200] * 20
    dead = await read_topic(ingest.kafka_bootstrap, DEAD_LETTERS.name)
    letters = _letters([r for r in dead if b"not copied" in r.value and marker.encode() not in r.value])
    assert any("raw archive" in d.reason and d.payload == "" for d in letters)


async def test_a_huge_text_in_a_signed_webhook_is_dead_lettered_not_an_outage(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    wamid = f"wamid.{marker}.HUGE"
    body = _inbound(INITECH_NUMBER, wamid, "y" * (2_900_000))  # as text and as payload: > 4 MiB
    assert await _webhook(ingest, body) == 200
    assert await _others_get_200(ingest, marker) == [200] * 20
    assert not [r for r in await read_topic(ingest.kafka_bootstrap, MESSAGES_IN.name) if wamid.encode() in r.value]
    dead = await read_topic(ingest.kafka_bootstrap, DEAD_LETTERS.name)
    letters = _letters([r for r in dead if b"-byte Kafka record" in r.value and wamid.encode() in r.value])
    assert len(letters) == 1 and "limit is" in letters[0].reason  # the letter names the message


async def test_nul_and_lone_surrogates_in_a_send_request_are_422_naming_the_field(ingest: IngestEnv) -> None:
    r = await ingest.client.post("/v1/messages", json=_text("a\x00b"), headers=_auth(ingest))
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "text.body",
                                   "reason": "contains NUL (U+0000), which PostgreSQL cannot store"}]
    raw = (b'{"from": "880000000001", "to": "+16505551234", "type": "text", "text": {"body": "ok"},'
           b' "biz_opaque_callback_data": "x\\ud800y"}')
    headers = {**_auth(ingest), "content-type": "application/json"}
    r = await ingest.client.post("/v1/messages", content=raw, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "biz_opaque_callback_data"
    batch = {"messages": [_text("fine"), _text("fine", biz_opaque_callback_data="nul\x00here")]}
    r = await ingest.client.post("/v1/messages/batch", json=batch, headers=_auth(ingest))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "messages.1.biz_opaque_callback_data"


async def test_a_signed_webhook_with_nul_in_a_message_id_is_refused_alone(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    doc = orjson.loads(_inbound(INITECH_NUMBER, f"wamid.{marker}.\x00POISON"))
    good = dict(doc["entry"][0]["changes"][0]["value"]["messages"][0], id=f"wamid.{marker}.GOOD")
    doc["entry"][0]["changes"][0]["value"]["messages"].append(good)
    assert await _webhook(ingest, orjson.dumps(doc)) == 200
    published = [r for r in await read_topic(ingest.kafka_bootstrap, MESSAGES_IN.name) if marker.encode() in r.value]
    assert [orjson.loads(r.value)["wamid"] for r in published] == [f"wamid.{marker}.GOOD"]
    dead = await read_topic(ingest.kafka_bootstrap, DEAD_LETTERS.name)
    letters = _letters([r for r in dead if marker.encode() in r.value])
    assert [d.reason for d in letters] == [
        "entry[0].changes[0].value.messages[0].id: contains NUL (U+0000), which PostgreSQL cannot store"]


async def test_request_bodies_in_flight_are_bounded_in_bytes_and_given_back(
    kafka_bootstrap: str, database_url: str, ingest_registry: dict[str, str]
) -> None:
    """Memory under any traffic: over ``max_inflight_body_bytes`` of bodies held at once, a request
    is a 503 with Retry-After (Meta and clients retry), and every byte is given back after."""
    import asyncio

    import httpx
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    mb = 1024 * 1024
    app = create_app(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                    api_rate_limit="1000/second", max_inflight_body_bytes=4 * mb))
    svc = app.state.ingest
    slow = b'{"object": "not-meta", "pad": "' + b"p" * (3 * mb - 1000) + b'"}'
    other = b'{"object": "not-meta", "pad": "' + b"q" * (2 * mb) + b'"}'
    gate = asyncio.Event()

    async def slow_body():  # the first 3 MB arrive, the rest waits
        yield slow[:-10]
        await gate.wait()
        yield slow[-10:]

    def headers(body: bytes) -> dict[str, str]:
        return {"X-Hub-Signature-256": sign(body, APP1_SECRET), "content-type": "application/json"}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=60) as client:
            first = asyncio.create_task(client.post(f"/webhooks/meta/{APP_1}", content=slow_body(),
                                                    headers=headers(slow)))
            for _ in range(200):
                if svc.bodies.held >= len(slow) - 10:
                    break
                await asyncio.sleep(0.01)
            assert svc.bodies.held == len(slow) - 10
            busy = await client.post(f"/webhooks/meta/{APP_1}", content=other, headers=headers(other))
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            api = await client.post("/v1/messages", content=other, headers={
                "Authorization": f"Bearer {ingest_registry['ingest-acme']}", "content-type": "application/json"})
            assert api.status_code == 503
            gate.set()
            assert (await first).status_code == 200
            assert svc.bodies.held == 0
            again = await client.post(f"/webhooks/meta/{APP_1}", content=other, headers=headers(other))
            assert again.status_code == 200 and svc.bodies.held == 0
