"""The business send API against real Kafka and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from parley_common.contracts import OutboundMessage
from parley_common.topics import MESSAGES_OUT
from support.kafka import read_topic

from .conftest import IngestEnv

pytestmark = pytest.mark.infra

ACME_NUMBER, GLOBEX_NUMBER, INITECH_NUMBER = "880000000001", "880000000003", "880000000004"


def _auth(env: IngestEnv, tenant: str = "ingest-acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {env.keys[tenant]}"}


def _text(to: str = "+16505551234", body: str | None = None, **extra: object) -> dict:
    return {
        "from": ACME_NUMBER,
        "to": to,
        "type": "text",
        "text": {"body": body or uuid.uuid4().hex},
        **extra,
    }


async def _outbound(env: IngestEnv, ids: set[str]) -> list[OutboundMessage]:
    records = await read_topic(env.kafka_bootstrap, MESSAGES_OUT.name)
    return [
        OutboundMessage.model_validate_json(r.value)
        for r in records
        if any(i.encode() in r.value for i in ids)
    ]


async def test_text_message_is_202_and_on_messages_out_keyed_by_number(ingest: IngestEnv) -> None:
    r = await ingest.client.post(
        "/v1/messages",
        json=_text(reply_to="wamid.IN1", biz_opaque_callback_data="o-1"),
        headers=_auth(ingest),
    )
    assert r.status_code == 202
    message_id = r.json()["id"]
    (out,) = await _outbound(ingest, {message_id})
    assert out.event_id == out.message_id == message_id
    assert out.tenant_id == "ingest-acme" and out.phone_number_id == ACME_NUMBER
    assert out.to == "16505551234" and out.type == "text" and out.reply_to_wamid == "wamid.IN1"
    assert out.biz_opaque_callback_data == "o-1" and out.priority == "reply" and out.origin == "api"
    records = [
        rec
        for rec in await read_topic(ingest.kafka_bootstrap, MESSAGES_OUT.name)
        if message_id.encode() in rec.value
    ]
    assert records[0].key == ACME_NUMBER.encode()


async def test_template_media_interactive_and_bsuid_recipients_are_accepted(ingest: IngestEnv) -> None:
    bodies = [
        {
            "from": ACME_NUMBER,
            "to": "4915112345678",
            "type": "template",
            "priority": "marketing",
            "template": {
                "name": "summer_sale",
                "language": {"code": "de"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "Anna"}]}],
            },
        },
        {
            "from": ACME_NUMBER,
            "to_user_id": "US.13491208655302741918",
            "type": "image",
            "image": {"link": "https://example.com/a.jpg", "caption": "new"},
        },
        {
            "from": ACME_NUMBER,
            "to_user_id": "US.ENT.99887766554433221100",
            "type": "text",
            "text": {"body": "hello"},
        },
        {
            "from": ACME_NUMBER,
            "to": "+16505551234",
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Confirm?"},
                "action": {"buttons": [{"type": "reply", "reply": {"id": "y", "title": "Yes"}}]},
            },
            "fallback_template": {"name": "confirm_order", "language": "en_US"},
        },
    ]
    ids = []
    for body in bodies:
        r = await ingest.client.post("/v1/messages", json=body, headers=_auth(ingest))
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    out = {o.message_id: o for o in await _outbound(ingest, set(ids))}
    tpl, img, parent, inter = (out[i] for i in ids)
    assert parent.to is None and parent.to_user_id == "US.ENT.99887766554433221100"
    assert tpl.template is not None and tpl.template.language == "de" and tpl.priority == "marketing"
    assert tpl.template.components[0].parameters == [{"type": "text", "text": "Anna"}]
    assert img.to is None and img.to_user_id == "US.13491208655302741918"
    assert img.content == {"link": "https://example.com/a.jpg", "caption": "new"}
    assert inter.fallback_template is not None and inter.fallback_template.name == "confirm_order"


async def test_missing_or_unknown_api_key_is_401(ingest: IngestEnv) -> None:
    assert (await ingest.client.post("/v1/messages", json=_text())).status_code == 401
    r = await ingest.client.post("/v1/messages", json=_text(), headers={"Authorization": "Bearer pk_nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_key_never_acts_on_another_tenants_number(ingest: IngestEnv) -> None:
    body = _text()
    body["from"] = GLOBEX_NUMBER
    r = await ingest.client.post("/v1/messages", json=body, headers=_auth(ingest))
    assert r.status_code == 403
    batch = {"messages": [_text(), {**_text(), "from": GLOBEX_NUMBER}]}
    r = await ingest.client.post("/v1/messages/batch", json=batch, headers=_auth(ingest))
    assert r.status_code == 403 and "messages.1.from" in r.json()["detail"]
    texts = {body["text"]["body"], batch["messages"][0]["text"]["body"]}
    assert await _outbound(ingest, texts) == []  # nothing half-written


async def test_idempotency_key_repeat_returns_first_answer_and_other_body_is_409(ingest: IngestEnv) -> None:
    key = "order-" + uuid.uuid4().hex
    body = _text()
    headers = {**_auth(ingest), "Idempotency-Key": key}
    first = await ingest.client.post("/v1/messages", json=body, headers=headers)
    again = await ingest.client.post("/v1/messages", json=dict(reversed(body.items())), headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers.get("idempotent-replayed") == "true"
    assert len(await _outbound(ingest, {first.json()["id"]})) == 1
    other = await ingest.client.post("/v1/messages", json=_text(), headers=headers)
    assert other.status_code == 409
    # the same key string of another tenant is that tenant's own key
    globex = {**_auth(ingest, "ingest-globex"), "Idempotency-Key": key}
    r = await ingest.client.post("/v1/messages", json={**_text(), "from": GLOBEX_NUMBER}, headers=globex)
    assert r.status_code == 202 and r.json()["id"] != first.json()["id"]


async def test_validation_errors_are_422_with_field_and_reason(ingest: IngestEnv) -> None:
    cases = [
        (_text(to="12"), "to"),
        ({**_text(), "to_user_id": "US.123"}, "to"),
        ({"from": ACME_NUMBER, "to_user_id": "US-13491208655302741918", "type": "text", "text": {"body": "hi"}},
         "to_user_id"),
        ({"from": ACME_NUMBER, "to_user_id": "US.ENT.", "type": "text", "text": {"body": "hi"}}, "to_user_id"),
        ({"from": ACME_NUMBER, "to": "+16505551234", "type": "text"}, "text"),
        ({**_text(), "image": {"link": "https://x.test/a.png"}}, "image"),
        ({"from": ACME_NUMBER, "to": "+16505551234", "type": "image", "image": {}}, "image"),
        ({**_text(), "text": {"body": "x" * 4097}}, "text.body"),
        ({**_text(), "type": "fax"}, "type"),
        ({**_text(), "unexpected": 1}, "unexpected"),
        ({**_text(), "priority": "urgent"}, "priority"),
        (
            {"from": ACME_NUMBER, "to": "+16505551234", "type": "template", "template": {"name": "t"}},
            "template.language",
        ),
    ]
    for body, field in cases:
        r = await ingest.client.post("/v1/messages", json=body, headers=_auth(ingest))
        assert r.status_code == 422, (field, r.text)
        errors = r.json()["errors"]
        assert any(e["field"] == field or e["field"].startswith(field + ".") for e in errors), (field, errors)
        assert all(e["reason"] for e in errors)
    r = await ingest.client.post(
        "/v1/messages/batch", json={"messages": [_text(), _text(to="+1")]}, headers=_auth(ingest)
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "messages.1.to"
    r = await ingest.client.post(
        "/v1/messages", content=b"{not json", headers={**_auth(ingest), "content-type": "application/json"}
    )
    assert r.status_code == 400


async def test_batch_is_accepted_all_together(ingest: IngestEnv) -> None:
    batch = {"messages": [_text(to=f"+1650555{1000 + i}") for i in range(50)]}
    r = await ingest.client.post("/v1/messages/batch", json=batch, headers=_auth(ingest))
    assert r.status_code == 202
    ids = r.json()["ids"]
    assert len(ids) == len(set(ids)) == 50
    out = await _outbound(ingest, set(ids))
    assert {o.message_id for o in out} == set(ids) and {o.origin for o in out} == {"campaign"}
    too_many = {"messages": [_text() for _ in range(1001)]}
    r = await ingest.client.post("/v1/messages/batch", json=too_many, headers=_auth(ingest))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "messages"


async def test_tenant_over_its_rate_limit_gets_429_with_retry_after(ingest: IngestEnv) -> None:
    # ingest-initech's registry settings allow 3 requests a minute
    body = {"from": INITECH_NUMBER, "to": "+447911123456", "type": "text", "text": {"body": "hi"}}
    statuses = [
        (await ingest.client.post("/v1/messages", json=body, headers=_auth(ingest, "ingest-initech")))
        for _ in range(5)
    ]
    assert [r.status_code for r in statuses] == [202, 202, 202, 429, 429]
    assert 1 <= int(statuses[-1].headers["retry-after"]) <= 60
    # other tenants are not affected
    assert (await ingest.client.post("/v1/messages", json=_text(), headers=_auth(ingest))).status_code == 202


async def test_oversized_api_body_is_413(ingest: IngestEnv) -> None:
    big = b'{"messages": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    r = await ingest.client.post(
        "/v1/messages/batch", content=big, headers={**_auth(ingest), "content-type": "application/json"}
    )
    assert r.status_code == 413
