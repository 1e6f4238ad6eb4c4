"""Inbound traffic: realistic, deterministic, in Meta's webhook structure (Meta's webhooks reference)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections import Counter
from typing import Any

from parley_simulator.traffic import INTENTS, LANGUAGES, BusinessNumber, TrafficGenerator

from .conftest import APP_ID, CUSTOMER, PN, PN2, TOKEN, WABA, WABA2, Receiver, SimFactory, text

NUMBERS = [BusinessNumber(PN, WABA, "15550001111", APP_ID), BusinessNumber(PN2, WABA2, "15550002222", APP_ID)]
BENGALI = re.compile(r"[\u0980-\u09FF]")
ARABIC = re.compile(r"[\u0600-\u06FF]")
MESSAGE_TYPES = {"text", "interactive", "button"}


def fixed_clock() -> float:
    return 1_750_000_000.0


def check_inbound_structure(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Assert the §1 envelope and return every message."""
    assert payload["object"] == "whatsapp_business_account"
    messages = []
    assert payload["entry"]
    for entry in payload["entry"]:
        assert entry["id"] in (WABA, WABA2)
        for change in entry["changes"]:
            assert change["field"] == "messages"
            value = change["value"]
            assert value["messaging_product"] == "whatsapp"
            assert set(value["metadata"]) == {"display_phone_number", "phone_number_id"}
            assert len(value["contacts"]) == len(value["messages"])
            for contact, msg in zip(value["contacts"], value["messages"], strict=True):
                assert msg["id"].startswith("wamid.")
                assert msg["timestamp"].isdigit()
                assert msg["type"] in MESSAGE_TYPES and msg["type"] in msg
                assert ("from" in msg) != ("from_user_id" in msg)
                assert re.fullmatch(r"[A-Z]{2}\.\d+", contact["user_id"])
                assert contact["profile"]["name"]
                if "from" in msg:
                    assert msg["from"] == contact["wa_id"] and msg["from"].isdigit()
                else:
                    assert "wa_id" not in contact and msg["from_user_id"] == contact["user_id"]
                if msg["type"] == "text":
                    assert msg["text"]["body"].strip()
                if msg["type"] == "interactive":
                    assert msg["interactive"]["type"] == "button_reply"
                    assert set(msg["interactive"]["button_reply"]) == {"id", "title"}
                    assert msg["context"]["id"].startswith("wamid.")
                if "referral" in msg:
                    ref = msg["referral"]
                    assert ref["source_type"] == "ad" and ref["source_id"] and ref["headline"]
                    assert ref["media_type"] in ("image", "video")
                messages.append(msg | {"_phone_number_id": value["metadata"]["phone_number_id"]})
    return messages


def test_generated_traffic_has_metas_structure_and_the_promised_variety() -> None:
    gen = TrafficGenerator(NUMBERS, seed=3, clock=fixed_clock)
    hooks = list(gen.webhooks(600))
    assert sum(len(h.records) for h in hooks) == 600
    messages = [m for h in hooks for m in check_inbound_structure(h.payload)]
    assert len(messages) == 600
    records = [r for h in hooks for r in h.records]
    assert Counter(r.language for r in records).keys() == set(LANGUAGES)
    assert Counter(r.intent for r in records).keys() == set(INTENTS)
    assert any(BENGALI.search(m.get("text", {}).get("body", "")) for m in messages), "Bangla script"
    assert any(ARABIC.search(m.get("text", {}).get("body", "")) for m in messages), "Arabic script"
    romanised_bn = [r for r in records if r.language == "bn-Latn" and r.type == "text"]
    assert romanised_bn
    referrals = [m for m in messages if "referral" in m]
    assert referrals and any("ctwa_clid" in m["referral"] for m in referrals)
    assert any("from_user_id" in m for m in messages), "username-only (BSUID) customers"
    assert any(m["type"] == "interactive" for m in messages)
    assert any(m["type"] == "button" for m in messages)
    assert any(len(h.records) > 1 for h in hooks), "several messages per webhook"
    assert any(len(h.payload["entry"]) > 1 for h in hooks), "several entries per webhook"
    assert {m["_phone_number_id"] for m in messages} == {PN, PN2}


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        return [h.payload for h in TrafficGenerator(NUMBERS, seed=seed, clock=fixed_clock).webhooks(50)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_ground_truth_matches_the_payload() -> None:
    gen = TrafficGenerator(NUMBERS, seed=5, clock=fixed_clock)
    for hook in gen.webhooks(100):
        wamids = [
            m["id"] for e in hook.payload["entry"] for c in e["changes"] for m in c["value"]["messages"]
        ]
        assert sorted(wamids) == sorted(r.wamid for r in hook.records)


async def test_sim_inbound_posts_signed_webhooks_and_opens_windows(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim(sync_error_codes=[131047])
    r = await h.http.post(
        f"{h.url}/_sim/inbound", json={"count": 30, "seed": 9, "phone_number_ids": [PN, PN2]}
    )
    assert r.status_code == 200
    generated = r.json()["messages"]
    assert len(generated) == 30
    await h.drain()
    inbound = [
        p
        for p in receiver.posts
        if any("messages" in c["value"] for e in p.json["entry"] for c in e["changes"])
    ]
    assert len(inbound) == r.json()["webhooks"]
    assert receiver.verified() == receiver.posts
    assert sum(len(check_inbound_structure(p.json)) for p in inbound) == 30
    # every customer who wrote can now get a free-form reply; others still cannot
    writer = next(m for m in generated if m["phone_number_id"] == PN)
    reply = await h.send(text(to=writer["customer_id"], context={"message_id": writer["wamid"]}))
    assert reply.status_code == 200
    assert (await h.send(text(to="15550009999"))).status_code == 400
    stats = (await h.http.get(f"{h.url}/_sim/stats")).json()
    assert stats["inbound"]["messages"] == 30


async def test_sim_inbound_accepts_explicit_messages(make_sim: SimFactory, receiver: Receiver) -> None:
    h = await make_sim(sync_error_codes=[131047])
    r = await h.http.post(
        f"{h.url}/_sim/inbound",
        json={
            "phone_number_id": PN,
            "messages": [
                {"from": CUSTOMER, "text": "I want 2 tickets", "referral": True},
                {"from_user_id": "US.13491208655302741918", "text": "hello"},
            ],
        },
    )
    assert r.status_code == 200
    await h.drain()
    [post] = receiver.posts
    msgs = post.json["entry"][0]["changes"][0]["value"]["messages"]
    assert msgs[0]["from"] == CUSTOMER and msgs[0]["referral"]["source_type"] == "ad"
    assert msgs[1]["from_user_id"] == "US.13491208655302741918" and "from" not in msgs[1]
    assert (await h.send(text())).status_code == 200
    by_user_id = text()
    del by_user_id["to"]
    assert (await h.send(by_user_id | {"recipient": "US.13491208655302741918"})).status_code == 200


async def test_drive_cli_posts_signed_traffic_and_records_windows_at_the_simulator(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim(sync_error_codes=[131047])
    env = {**os.environ, "SIM_DRIVE_SECRET": "test-app-secret-ü"}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley_simulator.cli",
        "drive",
        "--webhook-url",
        receiver.url,
        "--app-id",
        APP_ID,
        "--app-secret-env",
        "SIM_DRIVE_SECRET",
        "--count",
        "40",
        "--rate",
        "200",
        "--seed",
        "4",
        "--phone-number",
        f"{PN}:{WABA}:15550001111",
        "--simulator-url",
        h.url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "posted 40 messages" in out.decode()
    assert time.monotonic() - started >= 0.15, "40 messages at 200/s take at least 0.2 s"
    messages = [m for p in receiver.posts for m in check_inbound_structure(p.json)]
    assert len(messages) == 40
    assert receiver.verified() == receiver.posts
    writer = next(m for m in messages if "from" in m)
    assert (await h.send(text(to=writer["from"]), token=TOKEN)).status_code == 200
