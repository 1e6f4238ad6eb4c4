"""Status webhooks: signed over the exact bytes, batched like Meta, retried with backoff."""

from __future__ import annotations

import hashlib
import hmac

from parley_simulator.webhooks import PendingStatus, sign, status_payload

from .conftest import (
    APP_ID,
    APP_SECRET,
    CUSTOMER,
    PN,
    PN2,
    PN_OTHER,
    TOKEN,
    TOKEN2,
    TOKEN_OTHER,
    WABA,
    WABA2,
    WABA_OTHER_APP,
    Receiver,
    SimFactory,
    template,
    text,
)


async def test_statuses_are_signed_with_hmac_sha256_of_the_raw_body(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim(read_ratio=1.0)
    await h.open_window()
    await h.send(text(body="Hola, ¿qué tal? 👋", biz_opaque_callback_data="order-8812"))
    await h.drain()
    assert receiver.posts
    assert receiver.verified() == receiver.posts
    for p in receiver.posts:
        assert p.path == f"/webhooks/meta/{APP_ID}"
        assert p.body.isascii(), "Meta sends escaped unicode; the signature covers those bytes"
        expected = hmac.new(APP_SECRET.encode(), p.body, hashlib.sha256).hexdigest()
        assert p.headers["x-hub-signature-256"] == f"sha256={expected}"
        assert p.headers["content-type"] == "application/json"


async def test_status_webhooks_carry_metas_envelope_metadata_and_callback_data(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim(read_ratio=1.0)
    await h.open_window()
    wamid = (await h.send(text(biz_opaque_callback_data="order-8812"))).json()["messages"][0]["id"]
    await h.drain()
    payload = receiver.posts[0].json
    assert payload["object"] == "whatsapp_business_account"
    entry = payload["entry"][0]
    assert entry["id"] == WABA
    change = entry["changes"][0]
    assert change["field"] == "messages"
    assert change["value"]["messaging_product"] == "whatsapp"
    assert change["value"]["metadata"] == {"display_phone_number": "15550001111", "phone_number_id": PN}
    statuses = [s for s in receiver.statuses() if s["id"] == wamid]
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    for s in statuses:
        assert s["recipient_id"] == CUSTOMER
        assert s["biz_opaque_callback_data"] == "order-8812"
        assert s["timestamp"].isdigit()


async def test_read_can_come_without_delivered(make_sim: SimFactory, receiver: Receiver) -> None:
    h = await make_sim(read_ratio=1.0, skip_delivered_ratio=1.0)
    await h.open_window()
    await h.send(template("ticket_confirmation", ["A", "B"]))
    await h.drain()
    statuses = receiver.statuses()
    assert [s["status"] for s in statuses] == ["sent", "read"]
    assert "pricing" in statuses[0] and "pricing" in statuses[1]


async def test_undelivered_messages_stop_at_sent(make_sim: SimFactory, receiver: Receiver) -> None:
    h = await make_sim(delivered_ratio=0.0)
    await h.send(template("ticket_confirmation", ["A", "B"]))
    await h.drain()
    assert [s["status"] for s in receiver.statuses()] == ["sent"]


async def test_several_statuses_are_batched_into_one_post(make_sim: SimFactory, receiver: Receiver) -> None:
    h = await make_sim(webhook_batch_window_ms=50, sent_delay_ms=30)
    for i in range(8):
        await h.send(template("ticket_confirmation", ["A", "B"], to=f"4477009002{i:02d}"))
    await h.drain()
    sizes = [
        len(c["value"]["statuses"]) for p in receiver.posts for e in p.json["entry"] for c in e["changes"]
    ]
    assert sum(sizes) == 16  # 8 sent + 8 delivered
    assert max(sizes) > 1


async def test_batches_span_several_numbers_and_entries(make_sim: SimFactory, receiver: Receiver) -> None:
    h = await make_sim(webhook_batch_window_ms=50, sent_delay_ms=30, delivered_ratio=0.0)
    await h.open_window(pn=PN)
    await h.open_window(pn=PN2)
    await h.open_window(pn=PN_OTHER)
    await h.send(text(), token=TOKEN, pn=PN)
    await h.send(text(), token=TOKEN2, pn=PN2)
    await h.send(text(), token=TOKEN_OTHER, pn=PN_OTHER)
    await h.drain()
    same_app = [p for p in receiver.posts if p.path.endswith(APP_ID)]
    assert len(same_app) == 1, "one POST for both WABAs of the same app"
    assert sorted(e["id"] for e in same_app[0].json["entry"]) == [WABA, WABA2]
    other = [p for p in receiver.posts if not p.path.endswith(APP_ID)]
    assert [e["id"] for p in other for e in p.json["entry"]] == [WABA_OTHER_APP]
    assert receiver.verified() == receiver.posts  # each app's own secret


def test_split_entries_repeat_the_waba_id_one_entry_per_number() -> None:
    meta = {"display_phone_number": "1", "phone_number_id": "p1"}
    meta2 = {"display_phone_number": "2", "phone_number_id": "p2"}
    items = [
        PendingStatus("a", "w", meta, {"id": "1"}),
        PendingStatus("a", "w", meta2, {"id": "2"}),
        PendingStatus("a", "w", meta, {"id": "3"}),
    ]
    joined = status_payload(items)
    assert len(joined["entry"]) == 1 and len(joined["entry"][0]["changes"]) == 2
    split = status_payload(items, split_entries=True)
    assert [e["id"] for e in split["entry"]] == ["w", "w"]
    assert [s["id"] for s in split["entry"][0]["changes"][0]["value"]["statuses"]] == ["1", "3"]


def test_sign_matches_the_documented_header_format() -> None:
    assert sign(b"{}", "s") == "sha256=" + hmac.new(b"s", b"{}", hashlib.sha256).hexdigest()


async def test_non_200_answers_are_retried_with_the_same_bytes(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    h = await make_sim(delivered_ratio=0.0)
    await h.send(template("ticket_confirmation", ["A", "B"]))
    await h.drain()
    assert receiver.attempts == 3
    [post] = receiver.posts
    assert post.json["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] == "sent"
    log = (await h.http.get(f"{h.url}/_sim/webhooks")).json()["data"]
    assert [w["http_status"] for w in log] == [500, 500, 200]
    assert len({w["body"] for w in log}) == 1
    stats = (await h.http.get(f"{h.url}/_sim/stats")).json()["webhooks"]
    assert stats["webhooks_retried"] == 2 and stats["webhooks_posted"] == 1


async def test_retries_are_bounded(make_sim: SimFactory, receiver: Receiver) -> None:
    receiver.fail_first = -1
    h = await make_sim(delivered_ratio=0.0, webhook_max_attempts=3)
    await h.send(template("ticket_confirmation", ["A", "B"]))
    await h.drain()
    assert receiver.attempts == 3
    stats = (await h.http.get(f"{h.url}/_sim/stats")).json()["webhooks"]
    assert stats["webhooks_failed"] == 1 and stats.get("webhooks_posted", 0) == 0


async def test_without_a_webhook_url_statuses_are_still_recorded(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim(webhooks=False)
    await h.open_window()
    wamid = (await h.send(text())).json()["messages"][0]["id"]
    await h.drain()
    assert receiver.posts == []
    data = (await h.http.get(f"{h.url}/_sim/messages", params={"wamid": wamid})).json()["data"][0]
    assert [s["status"] for s in data["statuses"]] == ["sent", "delivered"]
