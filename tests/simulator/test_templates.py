"""Templates per WABA: Meta's list shape, creation, approval and status webhooks, seed files."""

from __future__ import annotations

from pathlib import Path

import pytest
from parley_simulator import SimulatorConfig

from .conftest import TOKEN, TOKEN_OTHER, WABA, Receiver, SimFactory, error_code, template

REPO = Path(__file__).resolve().parents[2]
NEW = {
    "name": "delivery_window",
    "language": "en_US",
    "category": "UTILITY",
    "components": [
        {
            "type": "BODY",
            "text": "Your delivery arrives between {{1}} and {{2}}.",
            "example": {"body_text": [["9", "11"]]},
        }
    ],
}


async def test_list_has_metas_shape(make_sim: SimFactory) -> None:
    h = await make_sim()
    r = await h.http.get(
        f"{h.url}/v24.0/{WABA}/message_templates", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 200
    body = r.json()
    names = {(t["name"], t["language"]) for t in body["data"]}
    assert ("ticket_confirmation", "en") in names and ("order_update", "en") in names
    for t in body["data"]:
        assert set(t) == {"name", "language", "status", "category", "components", "parameter_format", "id"}
    order_update = next(t for t in body["data"] if t["name"] == "order_update")
    assert order_update["parameter_format"] == "NAMED" and order_update["category"] == "UTILITY"
    assert set(body["paging"]["cursors"]) == {"before", "after"}


async def test_list_pages_with_cursors_and_filters(make_sim: SimFactory) -> None:
    h = await make_sim()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{h.url}/v24.0/{WABA}/message_templates"
    seen: list[str] = []
    params: dict[str, str] = {"limit": "3"}
    while True:
        page = (await h.http.get(url, params=params, headers=auth)).json()
        seen += [t["id"] for t in page["data"]]
        if "next" not in page.get("paging", {}):
            break
        params = {"limit": "3", "after": page["paging"]["cursors"]["after"]}
    assert len(seen) == len(set(seen)) == 9
    approved = (await h.http.get(url, params={"status": "APPROVED"}, headers=auth)).json()["data"]
    assert {t["status"] for t in approved} == {"APPROVED"} and len(approved) == 6
    marketing = (await h.http.get(url, params={"category": "MARKETING"}, headers=auth)).json()["data"]
    assert {t["category"] for t in marketing} == {"MARKETING"}


async def test_template_endpoints_need_a_token_of_that_waba(make_sim: SimFactory) -> None:
    h = await make_sim()
    url = f"{h.url}/v24.0/{WABA}/message_templates"
    assert (await h.http.get(url)).status_code == 401
    r = await h.http.get(url, headers={"Authorization": f"Bearer {TOKEN_OTHER}"})
    assert r.status_code == 401 and error_code(r) == 190


async def test_created_template_is_pending_then_approved_with_a_status_webhook(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim(template_approval_delay_s=0.3)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = await h.http.post(f"{h.url}/v24.0/{WABA}/message_templates", json=NEW, headers=auth)
    assert r.status_code == 200
    created = r.json()
    assert created["status"] == "PENDING" and created["category"] == "UTILITY" and created["id"]
    early = await h.send(template("delivery_window", ["9", "11"], language="en_US"))
    assert error_code(early) == 132001  # not approved yet
    await receiver.wait_for(lambda: bool(receiver.by_field("message_template_status_update")))
    [update] = receiver.by_field("message_template_status_update")
    assert update == {
        "event": "APPROVED",
        "message_template_id": int(created["id"]),
        "message_template_name": "delivery_window",
        "message_template_language": "en_US",
        "message_template_category": "UTILITY",
        "reason": "NONE",
    }
    assert receiver.posts[-1].json["entry"][0]["id"] == WABA
    listed = (
        await h.http.get(
            f"{h.url}/v24.0/{WABA}/message_templates", params={"name": "delivery_window"}, headers=auth
        )
    ).json()["data"]
    assert [t["status"] for t in listed] == ["APPROVED"]
    assert (await h.send(template("delivery_window", ["9", "11"], language="en_US"))).status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        {**NEW, "name": "Has Spaces"},
        {**NEW, "category": "SERVICE"},
        {**NEW, "components": []},
        {k: v for k, v in NEW.items() if k != "language"},
    ],
)
async def test_invalid_template_creation_is_code_100(make_sim: SimFactory, bad: dict) -> None:
    h = await make_sim()
    r = await h.http.post(
        f"{h.url}/v24.0/{WABA}/message_templates", json=bad, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 400 and error_code(r) == 100


async def test_duplicate_name_and_language_is_refused(make_sim: SimFactory) -> None:
    h = await make_sim()
    dup = {**NEW, "name": "ticket_confirmation", "language": "en"}
    r = await h.http.post(
        f"{h.url}/v24.0/{WABA}/message_templates", json=dup, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert error_code(r) == 100


async def test_pause_and_disable_post_status_webhooks_and_change_sends(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim(sync_error_codes=[132015])
    base = f"{h.url}/_sim/templates/{WABA}/plain_offer/en/status"
    assert (await h.http.post(base, json={"status": "PAUSED"})).json()["status"] == "PAUSED"
    assert error_code(await h.send(template("plain_offer", ["Ann"]))) == 132015
    await h.http.post(base, json={"status": "DISABLED"})
    assert error_code(await h.send(template("plain_offer", ["Ann"]))) == 132016
    await h.http.post(base, json={"status": "APPROVED"})
    assert (await h.send(template("plain_offer", ["Ann"]))).status_code == 200
    await receiver.wait_for(lambda: len(receiver.by_field("message_template_status_update")) == 3)
    events = receiver.by_field("message_template_status_update")
    assert [e["event"] for e in events] == ["PAUSED", "DISABLED", "APPROVED"]
    assert events[0]["other_info"]["title"] == "FIRST_PAUSE"
    assert receiver.verified() == receiver.posts


async def test_unknown_template_in_control_api_is_404(make_sim: SimFactory) -> None:
    h = await make_sim()
    r = await h.http.post(f"{h.url}/_sim/templates/{WABA}/nope/en/status", json={"status": "PAUSED"})
    assert r.status_code == 404


def test_seed_file_is_loaded_next_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "seed.yaml").write_text(
        "'2001':\n- name: hello\n  language: es\n  category: MARKETING\n"
        "  components: [{type: BODY, text: 'Hola {{1}}'}]\n"
    )
    (tmp_path / "sim.yaml").write_text(
        "apps: [{app_id: '9', app_secret_env: SIM_TEST_SECRET}]\n"
        "wabas: [{id: '2001', app_id: '9', token_env: SIM_TEST_TOKEN}]\n"
        "phone_numbers: [{id: '1001', display_phone_number: '15550001', waba_id: '2001', throughput: 250}]\n"
        "templates_file: seed.yaml\n"
    )
    monkeypatch.setenv("SIM_TEST_SECRET", "s")
    monkeypatch.setenv("SIM_TEST_TOKEN", "t")
    config = SimulatorConfig.from_yaml(tmp_path / "sim.yaml")
    [t] = config.wabas[0].templates
    assert (t.name, t.language, t.status, t.category) == ("hello", "es", "APPROVED", "MARKETING")
    assert config.phone_numbers[0].throughput == 250


def test_config_refuses_a_missing_secret_and_dangling_references(tmp_path: Path) -> None:
    (tmp_path / "sim.yaml").write_text("apps: [{app_id: '9', app_secret_env: SIM_TEST_UNSET_SECRET}]\n")
    config = SimulatorConfig.from_yaml(tmp_path / "sim.yaml")
    with pytest.raises(ValueError, match="SIM_TEST_UNSET_SECRET"):
        config.apps[0].secret()
    with pytest.raises(ValueError, match="unknown waba_id"):
        SimulatorConfig.model_validate(
            {"phone_numbers": [{"id": "1", "display_phone_number": "1", "waba_id": "nope"}]}
        )


def test_the_demo_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    path = REPO / "deploy" / "demo" / "simulator.yaml"
    for name in (
        "PARLEY_DEMO_APP_SECRET",
        "PARLEY_DEMO_APP2_SECRET",
        "PARLEY_DEMO_ACCESS_TOKEN",
        "PARLEY_DEMO_APP2_ACCESS_TOKEN",
    ):
        monkeypatch.setenv(name, "x")
    config = SimulatorConfig.from_yaml(path)
    assert config.phone_numbers and all(w.templates for w in config.wabas[:1])
