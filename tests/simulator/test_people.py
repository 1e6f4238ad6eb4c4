"""Meta applies its rules to the person, however the business addresses them (usernames, 2026):
a username-only user, the same user after sharing their number, a BSUID change."""

from __future__ import annotations

from typing import Any

from .conftest import PN, Receiver, SimFactory, text

BSUID = "GB.13491208655302741918"
NEW_BSUID = "GB.55500011122233344455"
PHONE = "447700900777"


def by_user(body: dict[str, Any], user_id: str = BSUID) -> dict[str, Any]:
    body = dict(body)
    del body["to"]
    return body | {"recipient": user_id}


async def test_a_window_opened_by_username_holds_for_the_number_the_user_shares_later(make_sim: SimFactory) -> None:
    h = await make_sim()
    r = await h.http.post(f"{h.url}/_sim/inbound", json={"phone_number_id": PN, "messages": [
        {"from_user_id": BSUID, "username": "@ann.buys", "text": "hi"}]})
    assert r.status_code == 200 and r.json()["messages"][0]["username_only"]
    assert (await h.send(by_user(text()))).status_code == 200  # a reply by BSUID, inside the window
    # Before the user shares it, their number is nobody Meta can tie to them: no window.
    outside = await h.send(text(to=PHONE))
    assert h.sim.messages[outside.json()["messages"][0]["id"]].failure_code == 131047
    r = await h.http.post(f"{h.url}/_sim/inbound", json={"phone_number_id": PN, "messages": [
        {"from": PHONE, "from_user_id": BSUID, "text": "my number"}]})
    assert not r.json()["messages"][0]["username_only"]
    inside = await h.send(text(to=PHONE))
    assert h.sim.messages[inside.json()["messages"][0]["id"]].failure_code is None


async def test_a_stop_under_the_bsuid_holds_for_the_number_and_statuses_name_both(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    await h.http.post(f"{h.url}/_sim/inbound", json={"phone_number_id": PN, "messages": [
        {"from": PHONE, "from_user_id": BSUID, "text": "hello"}]})
    r = await h.http.post(f"{h.url}/_sim/preferences", json={"phone_number_id": PN, "customer": BSUID,
                                                               "value": "stop", "notify": False})
    assert r.status_code == 200
    sent = await h.send(text(to=PHONE))
    assert sent.status_code == 200
    await h.drain()
    statuses = [s for s in receiver.statuses() if s["id"] == sent.json()["messages"][0]["id"]]
    assert statuses and all(s["recipient_id"] == PHONE and s["recipient_user_id"] == BSUID for s in statuses)
    assert h.sim.consent.stopped(h.sim.numbers[PN].waba_id, h.sim.people.person(PHONE))


async def test_a_bsuid_change_posts_user_id_update_and_keeps_the_person(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    await h.http.post(f"{h.url}/_sim/inbound", json={"phone_number_id": PN, "messages": [
        {"from_user_id": BSUID, "text": "hi"}]})
    r = await h.http.post(f"{h.url}/_sim/user_id_update", json={"phone_number_id": PN, "customer": BSUID,
                                                                  "new_user_id": NEW_BSUID})
    assert r.json() == {"previous": BSUID, "current": NEW_BSUID}
    await receiver.wait_for(lambda: bool(receiver.by_field("user_id_update")))
    [value] = receiver.by_field("user_id_update")
    assert value["user_id_update"][0]["user_id"] == {"previous": BSUID, "current": NEW_BSUID}
    # the window the user opened under the old id holds under the new one
    assert (await h.send(by_user(text(), NEW_BSUID))).status_code == 200
