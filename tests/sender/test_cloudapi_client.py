"""The hot-path Cloud API client over real HTTP (a tiny in-test server with Meta's shapes): what was
sent, what was not, and what is in doubt."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from parley_sender.cloudapi import CloudApiClient


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, object]]]]:
    seen: list[dict[str, object]] = []

    async def messages(req: web.Request) -> web.Response:
        body = orjson.loads(await req.read())
        seen.append({"auth": req.headers.get("Authorization"), "number": req.match_info["n"], **body})
        if body.get("to") == "slow":
            await asyncio.sleep(5)
        if body.get("to") == "drop" and req.transport is not None:
            req.transport.close()  # received, then the connection goes away before any answer
            await asyncio.sleep(1)
        if body.get("to") == "bad":
            return web.json_response(
                {"error": {"message": "(#131026) Message undeliverable", "type": "OAuthException", "code": 131026,
                           "error_data": {"details": "undeliverable"}, "fbtrace_id": "Ftr"}},
                status=400,
            )
        return web.json_response(
            {"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
             "messages": [{"id": f"wamid.{body['to']}", "message_status": "accepted"}]}
        )

    app = web.Application()
    app.router.add_post("/{v}/{n}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_accepted_and_meta_error_answers(server: tuple[str, list[dict[str, object]]]) -> None:
    base, seen = server
    client = CloudApiClient(base_override=base, version_override="v24.0")
    try:
        ok = await client.send_message(None, "1001", {"messaging_product": "whatsapp", "to": "447700900001"})
        bad = await client.send_message(None, "1001", {"messaging_product": "whatsapp", "to": "bad"})
    finally:
        await client.aclose()
    assert ok.accepted and ok.wamid == "wamid.447700900001" and ok.message_status == "accepted"
    assert not bad.accepted and not bad.in_doubt
    assert (bad.http_status, bad.error_code, bad.error_details, bad.fbtrace_id) == (400, 131026, "undeliverable", "Ftr")
    assert [s["number"] for s in seen] == ["1001", "1001"]


async def test_no_answer_in_time_is_in_doubt(server: tuple[str, list[dict[str, object]]]) -> None:
    base, seen = server
    client = CloudApiClient(base_override=base, version_override="v24.0", timeout_s=0.3, connect_timeout_s=0.3)
    try:
        resp = await client.send_message(None, "1001", {"messaging_product": "whatsapp", "to": "slow"})
    finally:
        await client.aclose()
    assert resp.in_doubt and not resp.accepted
    assert len(seen) == 1  # it did reach the server: never to be re-sent blindly
    # pyreqwest raises ConnectTimeoutError for this read timeout: the record says what happened.
    assert resp.error_message is not None
    assert resp.error_message.startswith("no answer in time after the request was sent")


async def test_connection_dropped_after_the_request_went_out_is_in_doubt(
    server: tuple[str, list[dict[str, object]]],
) -> None:
    base, seen = server
    client = CloudApiClient(base_override=base, version_override="v24.0")
    try:
        resp = await client.send_message(None, "1001", {"messaging_product": "whatsapp", "to": "drop"})
    finally:
        await client.aclose()
    assert resp.in_doubt and not resp.accepted
    assert len(seen) == 1


async def test_nothing_listening_is_not_sent_and_not_in_doubt() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = CloudApiClient(base_override=f"http://127.0.0.1:{port}", version_override="v24.0")
    try:
        resp = await client.send_message(None, "1001", {"messaging_product": "whatsapp", "to": "x"})
    finally:
        await client.aclose()
    assert not resp.accepted and not resp.in_doubt and resp.error_message
    assert resp.error_message.startswith("could not connect")
