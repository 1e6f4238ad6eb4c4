"""The portfolio messaging limit as Meta enforces it, the reports Meta posts about numbers and
portfolios, coexistence numbers and the Marketing Messages API (parley_simulator.portfolio)."""

from __future__ import annotations

from typing import Any

from parley_simulator.config import TemplateConfig

from .conftest import PN, PN2, TEMPLATES, TOKEN, TOKEN2, WABA, WABA2, Receiver, SimFactory, error_code, template


def offer(to: str) -> dict[str, Any]:
    return template("plain_offer", ["Ann"], to=to)


async def test_a_portfolio_past_its_messaging_limit_gets_131048_for_new_customers_only(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    r = await h.http.post(f"{h.url}/_sim/portfolios/{WABA}/limit", json={"messaging_limit": 2})
    assert r.status_code == 200
    await receiver.wait_for(lambda: bool(receiver.by_field("business_capability_update")))
    assert receiver.by_field("business_capability_update") == [{"max_daily_conversations_per_business": 2}]

    assert (await h.send(offer("447700900201"))).status_code == 200
    assert (await h.send(offer("447700900202"))).status_code == 200
    third = await h.send(offer("447700900203"))
    assert error_code(third) == 131048
    assert "messaging limit of 2" in third.json()["error"]["error_data"]["details"]
    assert (await h.send(offer("447700900201"))).status_code == 200  # reached already: fits
    await h.open_window("447700900204")  # inside the customer's window: not business-initiated
    assert (await h.send(offer("447700900204"))).status_code == 200
    # another portfolio is not affected ...
    plain_offer = next(t for t in TEMPLATES if t["name"] == "plain_offer")
    h.sim.template_api.add(WABA2, TemplateConfig.model_validate(plain_offer))
    assert (await h.send(offer("447700900205"), pn=PN2, token=TOKEN2)).status_code == 200
    # ... until its WABA belongs to the same portfolio: the limit is shared by every number
    h.sim.wabas[WABA2].portfolio_id = WABA
    assert error_code(await h.send(offer("447700900206"), pn=PN2, token=TOKEN2)) == 131048
    # Meta lifts the limit: new customers go again
    await h.http.post(f"{h.url}/_sim/portfolios/{WABA}/limit", json={"messaging_limit": -1})
    assert (await h.send(offer("447700900203"))).status_code == 200


async def test_quality_and_throughput_events_are_posted_and_an_upgrade_takes_effect(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    flagged = await h.http.post(f"{h.url}/_sim/numbers/{PN}/events", json={"event": "FLAGGED"})
    assert flagged.json() == {"id": PN, "event": "FLAGGED", "throughput": 80}
    upgraded = await h.http.post(f"{h.url}/_sim/numbers/{PN}/events", json={"event": "THROUGHPUT_UPGRADE"})
    assert upgraded.json()["throughput"] == 1000
    assert h.sim.numbers[PN].throughput == 1000
    await receiver.wait_for(lambda: len(receiver.by_field("phone_number_quality_update")) == 2)
    events = receiver.by_field("phone_number_quality_update")
    assert [e["event"] for e in events] == ["FLAGGED", "THROUGHPUT_UPGRADE"]
    assert all(e["display_phone_number"] == "15550001111" for e in events)
    assert all(e["max_daily_conversations_per_business"] == -1 for e in events)  # unlimited
    assert (await h.http.post(f"{h.url}/_sim/numbers/nope/events", json={"event": "FLAGGED"})).status_code == 404
    assert (await h.http.post(f"{h.url}/_sim/numbers/{PN}/events", json={"event": "x y"})).status_code == 422


async def test_a_coexistence_number_stays_at_20_mps_even_after_an_upgrade(make_sim: SimFactory) -> None:
    h = await make_sim()
    h.sim.numbers[PN2].coexistence = True
    r = await h.http.post(f"{h.url}/_sim/numbers/{PN2}/events", json={"event": "THROUGHPUT_UPGRADE"})
    assert r.json()["throughput"] == 20


async def test_the_marketing_messages_api_sends_marketing_templates_in_metas_answer_shape(
    make_sim: SimFactory,
) -> None:
    h = await make_sim()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{h.url}/v24.0/{PN}/marketing_messages"
    r = await h.http.post(url, json=offer("447700900301") | {"message_activity_sharing": True}, headers=headers)
    assert r.status_code == 200
    body = r.json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "447700900301", "wa_id": "447700900301"}]
    assert body["messages"][0]["message_status"] == "accepted"
    sent = h.sim.find_messages(wamid=body["messages"][0]["id"])
    assert [(m.api, m.category) for m in sent] == [("marketing_messages", "marketing")]
    utility = await h.http.post(url, json=template("ticket_confirmation", ["A", "B"]), headers=headers)
    assert error_code(utility) == 100
    assert "marketing templates only" in utility.json()["error"]["error_data"]["details"]
    text_body = {"messaging_product": "whatsapp", "to": "447700900301", "type": "text", "text": {"body": "hi"}}
    assert error_code(await h.http.post(url, json=text_body, headers=headers)) == 100
    assert (await h.http.post(url, json=offer("447700900302"))).status_code == 401  # no token


async def test_a_template_quality_change_is_posted_as_meta_does(make_sim: SimFactory, receiver: Receiver) -> None:
    h = await make_sim()
    r = await h.http.post(f"{h.url}/_sim/templates/{WABA}/plain_offer/en/quality", json={"score": "RED"})
    assert r.status_code == 200
    await h.http.post(f"{h.url}/_sim/templates/{WABA}/plain_offer/en/quality", json={"score": "GREEN"})
    await receiver.wait_for(lambda: len(receiver.by_field("message_template_quality_update")) == 2)
    red, green = receiver.by_field("message_template_quality_update")
    assert (red["previous_quality_score"], red["new_quality_score"]) == ("UNKNOWN", "RED")
    assert (green["previous_quality_score"], green["new_quality_score"]) == ("RED", "GREEN")
    assert red["message_template_name"] == "plain_offer" and red["message_template_language"] == "en"
    assert str(red["message_template_id"]) == r.json()["id"]
    bad = await h.http.post(f"{h.url}/_sim/templates/{WABA}/plain_offer/en/quality", json={"score": "PURPLE"})
    assert bad.status_code == 422
    unknown = await h.http.post(f"{h.url}/_sim/templates/{WABA}/nope/en/quality", json={"score": "RED"})
    assert unknown.status_code == 404
