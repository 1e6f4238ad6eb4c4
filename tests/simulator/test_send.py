"""POST /{version}/{phone_number_id}/messages answers as Meta's Cloud API does."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import (
    CUSTOMER,
    PN,
    PN2,
    TOKEN,
    TOKEN2,
    Receiver,
    SimFactory,
    error_code,
    template,
    text,
)


async def test_text_inside_window_is_accepted_in_metas_response_shape(make_sim: SimFactory) -> None:
    h = await make_sim()
    await h.open_window()
    r = await h.send(text(to="+44 7700 900123"))
    assert r.status_code == 200
    body = r.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+44 7700 900123", "wa_id": CUSTOMER}]
    [message] = body["messages"]
    assert message["id"].startswith("wamid.") and message["message_status"] == "accepted"


BSUID = "GB.13491208655302741918"
PARENT_BSUID = "GB.ENT.99887766554433221100"


async def test_a_bsuid_is_addressed_with_recipient_and_answered_with_user_id(make_sim: SimFactory) -> None:
    h = await make_sim()
    for user_id in (BSUID, PARENT_BSUID):
        body = template("ticket_confirmation", ["A1", "Friday"])
        del body["to"]
        r = await h.send(body | {"recipient": user_id})
        assert r.status_code == 200, r.text
        assert r.json()["contacts"] == [{"input": user_id, "user_id": user_id}]


async def test_a_bsuid_in_to_is_not_a_phone_number(make_sim: SimFactory) -> None:
    h = await make_sim()
    r = await h.send(template("ticket_confirmation", ["A1", "Friday"], to=BSUID))
    assert r.status_code == 400 and error_code(r) == 100


async def test_a_copy_code_authentication_template_to_a_bsuid_is_131062(make_sim: SimFactory) -> None:
    h = await make_sim()
    body = template("otp_code", ["123456"])
    del body["to"]
    r = await h.send(body | {"recipient": BSUID})
    assert r.status_code == 400 and error_code(r) == 131062
    # The same template to a phone number goes out.
    assert (await h.send(template("otp_code", ["123456"]))).status_code == 200


async def test_every_wamid_is_unique(make_sim: SimFactory) -> None:
    h = await make_sim()
    await h.open_window()
    ids = {(await h.send(text())).json()["messages"][0]["id"] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_missing_or_wrong_token_is_401_with_code_190(make_sim: SimFactory, token: str | None) -> None:
    h = await make_sim()
    r = await h.send(text(), token=token)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == 190 and err["type"] == "OAuthException" and err["fbtrace_id"]


async def test_token_of_another_waba_cannot_send_from_this_number(make_sim: SimFactory) -> None:
    h = await make_sim()
    assert (await h.send(text(), token=TOKEN2, pn=PN)).status_code == 401
    await h.open_window(pn=PN2)
    assert (await h.send(text(), token=TOKEN2, pn=PN2)).status_code == 200


async def test_unknown_phone_number_id_is_code_100(make_sim: SimFactory) -> None:
    h = await make_sim()
    r = await h.send(text(), pn="999")
    assert r.status_code == 400 and error_code(r) == 100
    assert r.json()["error"]["type"] == "GraphMethodException"


INVALID = {
    "no messaging_product": {"to": CUSTOMER, "type": "text", "text": {"body": "x"}},
    "no to": {"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}},
    "type without its object": {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text"},
    "unknown type": {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "hologram", "hologram": {}},
    "empty text": {"messaging_product": "whatsapp", "to": CUSTOMER, "type": "text", "text": {"body": ""}},
    "text over 4096": {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "text",
        "text": {"body": "x" * 4097},
    },
    "four reply buttons": {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Pick"},
            "action": {
                "buttons": [{"type": "reply", "reply": {"id": f"b{i}", "title": f"B{i}"}} for i in range(4)]
            },
        },
    },
    "button title over 20": {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Pick"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "b1", "title": "x" * 21}}]},
        },
    },
    "interactive without body": {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "action": {"buttons": [{"type": "reply", "reply": {"id": "b1", "title": "Yes"}}]},
        },
    },
    "image without id or link": {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "image",
        "image": {},
    },
    "template without language": {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "template",
        "template": {"name": "ticket_confirmation"},
    },
}


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_malformed_bodies_are_400_with_code_100_and_details(make_sim: SimFactory, case: str) -> None:
    h = await make_sim()
    await h.open_window()
    r = await h.send(INVALID[case])
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 100
    assert err["message"] == "(#100) Invalid parameter"
    assert err["error_data"]["messaging_product"] == "whatsapp" and err["error_data"]["details"]


async def test_invalid_json_is_code_100(make_sim: SimFactory) -> None:
    h = await make_sim()
    r = await h.http.post(
        f"{h.url}/v24.0/{PN}/messages", content=b"{not json", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 400 and error_code(r) == 100


async def test_three_reply_buttons_are_fine(make_sim: SimFactory) -> None:
    h = await make_sim()
    await h.open_window()
    body = {
        "messaging_product": "whatsapp",
        "to": CUSTOMER,
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Pick"},
            "action": {
                "buttons": [{"type": "reply", "reply": {"id": f"b{i}", "title": f"B{i}"}} for i in range(3)]
            },
        },
    }
    assert (await h.send(body)).status_code == 200


# --- 24-hour window ------------------------------------------------------------------------


async def test_free_form_outside_window_is_accepted_then_failed_with_131047(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    r = await h.send(text())
    assert r.status_code == 200  # Meta accepts, then reports the failure by webhook
    wamid = r.json()["messages"][0]["id"]
    await h.drain()
    [failed] = [s for s in receiver.statuses() if s["id"] == wamid]
    assert failed["status"] == "failed" and failed["errors"][0]["code"] == 131047
    assert "pricing" not in failed


async def test_free_form_outside_window_is_400_131047_when_configured_synchronous(
    make_sim: SimFactory,
) -> None:
    h = await make_sim(sync_error_codes=[131047])
    r = await h.send(text())
    assert r.status_code == 400 and error_code(r) == 131047
    assert r.json()["error"]["message"] == "(#131047) Re-engagement message"


async def test_window_closes_24_hours_after_the_last_inbound(make_sim: SimFactory) -> None:
    h = await make_sim(sync_error_codes=[131047])
    await h.open_window(at=time.time() - 24 * 3600 + 60)
    assert (await h.send(text())).status_code == 200
    await h.open_window("447700900999", at=time.time() - 24 * 3600 - 60)
    assert error_code(await h.send(text(to="447700900999"))) == 131047


async def test_templates_need_no_window(make_sim: SimFactory) -> None:
    h = await make_sim(sync_error_codes=[131047])
    assert (await h.send(template("ticket_confirmation", ["A1", "Friday"]))).status_code == 200


# --- templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "language"), [("no_such_template", "en"), ("ticket_confirmation", "fr"), ("pending_promo", "en")]
)
async def test_missing_or_unapproved_template_is_132001(
    make_sim: SimFactory, name: str, language: str
) -> None:
    h = await make_sim()
    r = await h.send(template(name, [], language=language))
    assert r.status_code == 400 and error_code(r) == 132001


@pytest.mark.parametrize("params", [["only-one"], ["a", "b", "c"], []])
async def test_parameter_count_mismatch_is_132000(make_sim: SimFactory, params: list[str]) -> None:
    h = await make_sim()
    r = await h.send(template("ticket_confirmation", params))
    assert r.status_code == 400 and error_code(r) == 132000
    assert "body" in r.json()["error"]["error_data"]["details"]


async def test_header_media_and_url_button_parameters_are_checked(make_sim: SimFactory) -> None:
    h = await make_sim()
    ok = [
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x.example/a.png"}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "Ann"}]},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "sale"}]},
    ]
    assert (await h.send(template("seasonal_offer", components=ok))).status_code == 200
    no_button = ok[:2]
    r = await h.send(template("seasonal_offer", components=no_button))
    assert error_code(r) == 132000
    wrong_media = [
        {"type": "header", "parameters": [{"type": "video", "video": {"link": "https://x/v.mp4"}}]},
        *ok[1:],
    ]
    assert error_code(await h.send(template("seasonal_offer", components=wrong_media))) == 132012


async def test_named_parameters_must_match_the_templates_names(make_sim: SimFactory) -> None:
    h = await make_sim()
    good = [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "parameter_name": "first_name", "text": "Ann"},
                {"type": "text", "parameter_name": "order_id", "text": "A-1"},
            ],
        }
    ]
    assert (await h.send(template("order_update", components=good))).status_code == 200
    positional = [
        {"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "A-1"}]}
    ]
    assert error_code(await h.send(template("order_update", components=positional))) == 132012


async def test_paused_template_is_accepted_then_failed_with_132015(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    r = await h.send(template("paused_promo", []))
    assert r.status_code == 200
    await h.drain()
    [s] = receiver.statuses()
    assert s["status"] == "failed" and s["errors"][0]["code"] == 132015


async def test_disabled_template_is_400_132016(make_sim: SimFactory) -> None:
    h = await make_sim()
    r = await h.send(template("disabled_promo", []))
    assert r.status_code == 400 and error_code(r) == 132016


# --- limits --------------------------------------------------------------------------------


async def test_throughput_above_the_numbers_limit_is_429_130429(make_sim: SimFactory) -> None:
    h = await make_sim()
    h.sim.numbers[PN].throughput = 5
    started = time.monotonic()
    codes = [
        (await h.send(template("ticket_confirmation", ["A", "B"], to=f"4477009000{i:02d}"))).status_code
        for i in range(6)
    ]
    assert time.monotonic() - started < 1.0, "the burst must fit in one second for this test"
    assert codes[:5] == [200] * 5
    assert codes[5] == 429
    r = await h.send(template("ticket_confirmation", ["A", "B"], to="447700900077"))
    assert error_code(r) == 130429 and r.json()["error"]["message"] == "(#130429) Rate limit hit"
    await _sleep(1.05)
    assert (await h.send(template("ticket_confirmation", ["A", "B"], to="447700900078"))).status_code == 200
    assert h.sim.stats_snapshot()["errors_by_code"]["130429"] == 2


async def test_throughput_can_be_changed_through_the_control_api(make_sim: SimFactory) -> None:
    h = await make_sim()
    r = await h.http.patch(f"{h.url}/_sim/numbers/{PN}", json={"throughput": 2})
    assert r.json()["throughput"] == 2
    codes = [
        (await h.send(template("ticket_confirmation", ["A", "B"], to=f"4477009001{i:02d}"))).status_code
        for i in range(3)
    ]
    assert codes == [200, 200, 429]


async def test_pair_rate_above_the_burst_is_131056_and_other_recipients_are_unaffected(
    make_sim: SimFactory,
) -> None:
    h = await make_sim(pair_burst=3, pair_interval_s=6)
    codes = [(await h.send(template("ticket_confirmation", ["A", "B"]))).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = await h.send(template("ticket_confirmation", ["A", "B"]))
    assert error_code(r) == 131056
    assert (await h.send(template("ticket_confirmation", ["A", "B"], to="447700900555"))).status_code == 200


async def test_pair_rate_refills_one_message_per_interval(make_sim: SimFactory) -> None:
    h = await make_sim(pair_burst=1, pair_interval_s=0.2)
    assert (await h.send(template("ticket_confirmation", ["A", "B"]))).status_code == 200
    assert error_code(await h.send(template("ticket_confirmation", ["A", "B"]))) == 131056
    await _sleep(0.25)
    assert (await h.send(template("ticket_confirmation", ["A", "B"]))).status_code == 200


# --- recipients and consent ----------------------------------------------------------------


@pytest.mark.parametrize("to", ["447700900404", "15550100000"])  # configured set, default pattern
async def test_unknown_recipient_fails_with_131026(make_sim: SimFactory, receiver: Receiver, to: str) -> None:
    h = await make_sim(unknown_recipients=["+44 7700 900404"])
    r = await h.send(template("ticket_confirmation", ["A", "B"], to=to))
    assert r.status_code == 200
    await h.drain()
    [s] = receiver.statuses()
    assert s["status"] == "failed" and s["errors"][0]["code"] == 131026 and s["recipient_id"] == to


async def test_unknown_recipient_is_400_131026_when_synchronous(make_sim: SimFactory) -> None:
    h = await make_sim(sync_error_codes=[131026], unknown_recipients=["447700900404"])
    assert error_code(await h.send(template("ticket_confirmation", ["A", "B"], to="447700900404"))) == 131026


async def test_marketing_to_a_customer_who_stopped_it_fails_with_131050(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    r = await h.http.post(
        f"{h.url}/_sim/preferences", json={"phone_number_id": PN, "customer": CUSTOMER, "value": "stop"}
    )
    assert r.status_code == 200
    marketing = (await h.send(template("plain_offer", ["Ann"]))).json()["messages"][0]["id"]
    utility = (await h.send(template("ticket_confirmation", ["A", "B"]))).json()["messages"][0]["id"]
    await h.drain()
    by_id = {s["id"]: s for s in receiver.statuses() if s["status"] in ("failed", "sent")}
    assert by_id[marketing]["status"] == "failed" and by_id[marketing]["errors"][0]["code"] == 131050
    assert by_id[utility]["status"] == "sent"
    [prefs] = receiver.by_field("user_preferences")
    assert prefs["user_preferences"][0] | {"timestamp": "_"} == {
        "wa_id": CUSTOMER,
        "category": "marketing_messages",
        "value": "stop",
        "timestamp": "_",
        "detail": "User requested to stop marketing messages",
    }
    await h.http.post(
        f"{h.url}/_sim/preferences",
        json={"phone_number_id": PN, "customer": CUSTOMER, "value": "resume", "notify": False},
    )
    again = (await h.send(template("plain_offer", ["Ann"]))).json()["messages"][0]["id"]
    await h.drain()
    assert [s["status"] for s in receiver.statuses() if s["id"] == again] == ["sent", "delivered"]


async def test_131049_fails_marketing_by_webhook_at_the_configured_rate(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim(failure_131049_rate=1.0)
    marketing = (await h.send(template("plain_offer", ["Ann"]))).json()["messages"][0]["id"]
    utility = (await h.send(template("ticket_confirmation", ["A", "B"]))).json()["messages"][0]["id"]
    await h.drain()
    statuses = receiver.statuses()
    [failed] = [s for s in statuses if s["id"] == marketing]
    assert failed["status"] == "failed"
    assert failed["errors"][0]["code"] == 131049
    assert failed["errors"][0]["title"].startswith("This message was not delivered to maintain healthy")
    assert {s["status"] for s in statuses if s["id"] == utility} == {"sent", "delivered"}


# --- failures of Meta's own ----------------------------------------------------------------


async def test_5xx_rate_answers_server_errors_and_accepts_nothing(make_sim: SimFactory) -> None:
    h = await make_sim(error_5xx_rate=1.0)
    await h.open_window()
    responses = [await h.send(text()) for _ in range(6)]
    assert {r.status_code for r in responses} <= {500, 503}
    assert {error_code(r) for r in responses} <= {1, 2}
    assert h.sim.messages == {}


async def test_timeouts_hang_without_accepting(make_sim: SimFactory) -> None:
    h = await make_sim(timeout_rate=1.0, hang_seconds=1.0)
    await h.open_window()
    with pytest.raises(httpx.ReadTimeout):
        await h.http.post(
            f"{h.url}/v24.0/{PN}/messages",
            json=text(biz_opaque_callback_data="req-1"),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=0.2,
        )
    assert h.sim.find_messages(biz_opaque_callback_data="req-1") == []


async def test_timeouts_after_accept_leave_an_accepted_message_behind(make_sim: SimFactory) -> None:
    h = await make_sim(timeout_accepted_rate=1.0, hang_seconds=1.0)
    await h.open_window()
    with pytest.raises(httpx.ReadTimeout):
        await h.http.post(
            f"{h.url}/v24.0/{PN}/messages",
            json=text(biz_opaque_callback_data="req-2"),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=0.2,
        )
    r = await h.http.get(f"{h.url}/_sim/messages", params={"biz_opaque_callback_data": "req-2"})
    assert r.json()["count"] == 1


async def test_latency_is_added_to_every_answer(make_sim: SimFactory) -> None:
    h = await make_sim(latency_ms=150)
    await h.open_window()
    started = time.monotonic()
    await h.send(text())
    assert time.monotonic() - started >= 0.15


async def test_behaviour_changes_at_runtime_through_the_control_api(make_sim: SimFactory) -> None:
    h = await make_sim()
    await h.open_window()
    r = await h.http.patch(f"{h.url}/_sim/behaviour", json={"error_5xx_rate": 1.0})
    assert r.json()["error_5xx_rate"] == 1.0
    assert (await h.send(text())).status_code in (500, 503)
    await h.http.patch(f"{h.url}/_sim/behaviour", json={"error_5xx_rate": 0.0})
    assert (await h.send(text())).status_code == 200
    bad = await h.http.patch(f"{h.url}/_sim/behaviour", json={"no_such_knob": 1})
    assert bad.status_code == 422


# --- what tests can observe ----------------------------------------------------------------


async def test_messages_and_stats_expose_duplicates_by_callback_data(make_sim: SimFactory) -> None:
    h = await make_sim()
    await h.open_window()
    first = (await h.send(text(biz_opaque_callback_data="order-8812"))).json()["messages"][0]["id"]
    await h.send(text(biz_opaque_callback_data="order-8812"))
    await h.send(text(biz_opaque_callback_data="order-8813"))
    await h.send(text(), token="bad")
    r = await h.http.get(f"{h.url}/_sim/messages", params={"biz_opaque_callback_data": "order-8812"})
    assert r.json()["count"] == 2
    by_wamid = (await h.http.get(f"{h.url}/_sim/messages", params={"wamid": first})).json()
    assert by_wamid["data"][0]["biz_opaque_callback_data"] == "order-8812"
    stats = (await h.http.get(f"{h.url}/_sim/stats")).json()
    assert stats["requests"] == {
        "total": 4,
        "accepted": 3,
        "rejected": 1,
        "timeouts": 0,
        "timeouts_after_accept": 0,
    }
    assert stats["errors_by_code"] == {"190": 1}
    assert stats["per_number"][PN]["accepted"] == 3
    assert stats["duplicate_biz_opaque_callback_data"] == 1


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_message_memory_is_bounded_oldest_first() -> None:
    import json

    from parley_simulator import CloudApiSimulator

    from .conftest import make_config

    sim = CloudApiSimulator(make_config(None).model_copy(update={"max_messages_kept": 3}))
    wamids = []
    for i in range(5):
        body = json.dumps(template("ticket_confirmation", ["A", "B"], biz_opaque_callback_data=f"r{i % 2}"))
        outcome = await sim.send("v24.0", PN, f"Bearer {TOKEN}", body.encode())
        wamids.append(outcome.body["messages"][0]["id"])
    assert list(sim.messages) == wamids[2:]
    assert [m.wamid for m in sim.find_messages(biz_opaque_callback_data="r0")] == [wamids[2], wamids[4]]
    assert [m.wamid for m in sim.find_messages(biz_opaque_callback_data="r1")] == [wamids[3]]
