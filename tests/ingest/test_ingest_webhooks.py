"""Webhooks through the real app into real Kafka: the corpus, duplicates, and every rejection."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter

import orjson
import pytest
from parley_common.contracts import AccountEvent, DeadLetter, InboundMessage, MessageStatus
from parley_common.meta.signature import sign
from parley_common.topics import ACCOUNT_EVENTS, DEAD_LETTERS, MESSAGES_IN, STATUSES, WEBHOOKS_RAW
from support.kafka import read_topic

from .conftest import IngestEnv
from .ingest_support import (
    APP1_SECRET,
    APP1_SECRET_NEW,
    APP2_SECRET,
    APP_1,
    APP_2,
    CORPUS_TENANTS,
    corpus_cases,
)

pytestmark = pytest.mark.infra


def _unique(webhook: dict, marker: str) -> bytes:
    """The webhook with every wamid made unique to this test, so topics shared by the session do not mix."""
    return orjson.dumps(webhook).replace(b"wamid.", f"wamid.{marker}.".encode())


async def _post(
    env: IngestEnv,
    body: bytes,
    *,
    secret: bytes = APP1_SECRET,
    app: str | None = APP_1,
    headers: dict[str, str] | None = None,
) -> int:
    path = f"/webhooks/meta/{app}" if app else "/webhooks/meta"
    h = {"X-Hub-Signature-256": sign(body, secret), "content-type": "application/json", **(headers or {})}
    response = await env.client.post(path, content=body, headers=h)
    return response.status_code


async def _events(env: IngestEnv, marker: str) -> dict[str, list]:
    """Everything on the event topics that belongs to this test (by the marker in its ids/values)."""
    found: dict[str, list] = {}
    for topic, model in (
        (MESSAGES_IN, InboundMessage),
        (STATUSES, MessageStatus),
        (ACCOUNT_EVENTS, AccountEvent),
    ):
        records = await read_topic(env.kafka_bootstrap, topic.name)
        found[topic.base] = [
            (r, model.model_validate_json(r.value)) for r in records if marker.encode() in r.value
        ]
    return found


async def test_every_corpus_event_reaches_its_topic_keyed_by_number_with_tenant(ingest: IngestEnv) -> None:
    from datetime import UTC, datetime

    from parley_common.meta import normalise_raw_webhook

    marker = uuid.uuid4().hex[:8]
    expected: Counter[tuple[str, str]] = Counter()
    unbound: Counter[str] = Counter()
    for name, case in corpus_cases():
        webhook = case["webhook"]
        if "entry" in webhook and isinstance(webhook["entry"], list):
            webhook = {
                **webhook,
                "entry": [
                    {
                        **e,
                        "changes": [
                            {**c, "value": _marked(c["value"], marker)}
                            if isinstance(c, dict) and isinstance(c.get("value"), dict)
                            else c
                            for c in e.get("changes", [])
                        ],
                    }
                    for e in webhook["entry"]
                ],
            }
        body = _unique(webhook, marker)
        assert await _post(ingest, body) == 200, name
        local = normalise_raw_webhook(body, received_at=datetime.now(UTC), tenants=CORPUS_TENANTS)
        for topic, events in (
            (MESSAGES_IN.base, local.messages),
            (STATUSES.base, local.statuses),
            (ACCOUNT_EVENTS.base, local.account_events),
        ):
            for e in events:
                # the event's own key (its number, or the WABA of an account event without one)
                # must be registered; a number nobody registered is no tenant's (ADR 0100)
                if CORPUS_TENANTS.numbers.get(e.phone_number_id) or CORPUS_TENANTS.wabas.get(e.phone_number_id):
                    expected[(topic, e.event_id)] += 1
                else:
                    unbound["ingest:unbound:" + e.event_id] += 1
    found = await _events(ingest, marker)
    seen: Counter[tuple[str, str]] = Counter()
    for topic, items in found.items():
        for record, event in items:
            seen[(topic, event.event_id)] += 1
            assert record.key == event.phone_number_id.encode()
            assert dict(record.headers)["x-parley-event-id"] == event.event_id.encode()
            if event.phone_number_id.startswith("8800000000") or event.waba_id in CORPUS_TENANTS.wabas:
                assert event.tenant_id is not None, event.event_id
    assert seen == expected
    assert Counter(d.event_id for d in await _unbound_letters(ingest, marker)) == unbound
    in_corpus = sum(
        len(c["expect"][k]) for _, c in corpus_cases() for k in ("messages_in", "statuses", "account_events")
    )
    assert sum(seen.values()) + sum(unbound.values()) == in_corpus


def _marked(value: dict, marker: str) -> dict:
    marked = {**value, "_t": marker}
    if isinstance(value.get("metadata"), dict):
        marked["metadata"] = {**value["metadata"], "_t": marker}
    return marked


async def test_same_batch_three_times_gives_the_same_event_ids_and_raw_copies(ingest: IngestEnv) -> None:
    """Meta's duplicate deliveries: each POST is archived, and every event carries the same
    deterministic id each time, so consumers (unique keys per event id) change nothing the
    second and third time."""
    marker = uuid.uuid4().hex[:8]
    case = dict(corpus_cases())["batched_entries"]
    body = _unique(case["webhook"], marker)
    for _ in range(3):
        assert await _post(ingest, body) == 200
    found = await _events(ingest, marker)
    per_id = Counter(e.event_id for items in found.values() for _, e in items)
    assert len(per_id) == 5  # 3 messages + 2 statuses (B6's number is nobody's: dead-lettered)
    assert set(per_id.values()) == {3}
    # after dedupe on event id, downstream holds exactly one event per distinct id
    distinct = {e.event_id: e for items in found.values() for _, e in items}
    assert len(distinct) == 5
    assert {d.event_id for d in await _unbound_letters(ingest, marker)} == {f"ingest:unbound:wamid.{marker}.B6"}
    raws = [
        r
        for r in await read_topic(ingest.kafka_bootstrap, WEBHOOKS_RAW.name)
        if dict(r.headers).get("x-parley-body-sha256") == hashlib.sha256(body).hexdigest().encode()
    ]
    assert len(raws) == 3 and all(r.value == body for r in raws)
    assert all(r.key == APP_1.encode() for r in raws)


async def test_raw_archive_keeps_exact_bytes_with_app_and_receive_time(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    body = _unique(dict(corpus_cases())["message_text"]["webhook"], marker)
    body = body.replace(b'"Does it', b'"\\u00e9 Does it')  # escaped unicode stays escaped
    assert await _post(ingest, body, app=None, secret=APP1_SECRET_NEW) == 200
    raws = [
        r for r in await read_topic(ingest.kafka_bootstrap, WEBHOOKS_RAW.name) if marker.encode() in r.value
    ]
    assert len(raws) == 1
    headers = dict(raws[0].headers)
    assert raws[0].value == body
    assert headers["x-parley-app-id"] == APP_1.encode()
    assert headers["x-parley-signature-valid"] == b"true"
    assert headers["x-parley-received-at"].startswith(b"20")


async def test_missing_or_wrong_signature_is_401_and_nothing_reaches_kafka(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    body = _unique(dict(corpus_cases())["message_text"]["webhook"], marker)
    assert (await ingest.client.post(f"/webhooks/meta/{APP_1}", content=body)).status_code == 401
    assert await _post(ingest, body, secret=b"not-the-secret") == 401
    assert await _post(ingest, body, secret=APP2_SECRET, app=APP_1) == 401  # another app's secret
    assert (
        await _post(
            ingest, body + b" ", secret=APP1_SECRET, headers={"X-Hub-Signature-256": sign(body, APP1_SECRET)}
        )
        == 401
    )  # body changed after signing
    assert await _post(ingest, body, app="no-such-app") == 401
    assert await _post(ingest, body, secret=b"nobody", app=None) == 401
    for topic in (WEBHOOKS_RAW, MESSAGES_IN):
        assert not [
            r for r in await read_topic(ingest.kafka_bootstrap, topic.name) if marker.encode() in r.value
        ]


async def test_webhook_of_another_app_does_not_speak_for_this_apps_tenants(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    body = _unique(dict(corpus_cases())["message_text"]["webhook"], marker)  # acme's number, app 1's tenant
    assert await _post(ingest, body, secret=APP2_SECRET, app=APP_2) == 200
    assert (await _events(ingest, marker))[MESSAGES_IN.base] == []  # nothing a consumer would act on
    (letter,) = await _unbound_letters(ingest, marker)
    assert letter.source_topic == MESSAGES_IN.name and letter.headers["x-parley-app-id"] == APP_2
    assert InboundMessage.model_validate_json(letter.payload).tenant_id is None


async def _unbound_letters(env: IngestEnv, marker: str) -> list[DeadLetter]:
    return [
        letter
        for r in await read_topic(env.kafka_bootstrap, DEAD_LETTERS.name)
        if marker.encode() in r.value
        and (letter := DeadLetter.model_validate_json(r.value)).error_type == "UnboundTenant"
    ]


async def test_body_over_3_mb_is_413_and_invalid_json_is_400(ingest: IngestEnv) -> None:
    big = b'{"object":"whatsapp_business_account","pad":"' + b"x" * (3 * 1024 * 1024) + b'"}'
    assert await _post(ingest, big) == 413

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b"x" * 100_000

    streamed = await ingest.client.post(
        f"/webhooks/meta/{APP_1}", content=chunks(), headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}
    )
    assert streamed.status_code == 413
    just_fits = (
        b'{"object":"whatsapp_business_account","entry":[],"pad":"' + b"x" * (3 * 1024 * 1024 - 100) + b'"}'
    )
    assert len(just_fits) <= 3 * 1024 * 1024
    assert await _post(ingest, just_fits) == 200  # accepted, kept raw, reported as a shape problem
    assert await _post(ingest, b'{"object": "whatsapp_business_account", "entry": [') == 400


async def test_valid_signature_unknown_shape_is_200_kept_raw_and_dead_lettered(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    body = orjson.dumps({"object": "page", "marker": marker, "entry": [{"messaging": []}]})
    response = await ingest.client.post(
        f"/webhooks/meta/{APP_1}", content=body, headers={"X-Hub-Signature-256": sign(body, APP1_SECRET)}
    )
    assert response.status_code == 200 and response.json() == {"events": 0, "problems": 1}
    raws = [
        r for r in await read_topic(ingest.kafka_bootstrap, WEBHOOKS_RAW.name) if marker.encode() in r.value
    ]
    assert [r.value for r in raws] == [body]
    letters = [
        DeadLetter.model_validate_json(r.value)
        for r in await read_topic(ingest.kafka_bootstrap, DEAD_LETTERS.name)
        if marker.encode() in r.value
    ]
    assert len(letters) == 1
    assert letters[0].service == "ingest" and letters[0].source_topic == WEBHOOKS_RAW.name
    assert letters[0].reason.startswith("$.object")
    metrics = (await ingest.client.get("/metrics")).text
    assert "parley_ingest_shape_problems_total" in metrics


async def test_unknown_number_is_dead_lettered_and_counted_never_published(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    webhook = dict(corpus_cases())["message_text"]["webhook"]
    before = _metric(
        await ingest.client.get("/metrics"), 'parley_ingest_unknown_number_events_total{kind="message"}'
    )
    # a number not registered, under a registered WABA: no tenant's number, so no tenant (ADR 0100)
    new_number = _unique(webhook, marker + "a").replace(b"880000000001", b"889999999998")
    # neither number nor WABA registered: no tenant
    nobody = (
        _unique(webhook, marker + "b")
        .replace(b"880000000001", b"889999999998")
        .replace(b"880000000101", b"889999999101")
    )
    assert await _post(ingest, new_number) == 200
    assert await _post(ingest, nobody) == 200
    assert (await _events(ingest, marker))[MESSAGES_IN.base] == []
    letters = {d.event_id: d for d in await _unbound_letters(ingest, marker)}
    assert set(letters) == {f"ingest:unbound:wamid.{marker}a.TEXT1", f"ingest:unbound:wamid.{marker}b.TEXT1"}
    assert {d.key for d in letters.values()} == {"889999999998"}
    after = _metric(
        await ingest.client.get("/metrics"), 'parley_ingest_unknown_number_events_total{kind="message"}'
    )
    assert after - before == 2


def _metric(response, name: str) -> float:
    for line in response.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_handshake_echoes_challenge_for_known_token_only(ingest: IngestEnv) -> None:
    ok = await ingest.client.get(
        f"/webhooks/meta/{APP_1}",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": "verify-me-please",
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    any_app = await ingest.client.get(
        "/webhooks/meta",
        params={"hub.mode": "subscribe", "hub.verify_token": "verify-me-please", "hub.challenge": "42"},
    )
    assert any_app.status_code == 200 and any_app.text == "42"
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "verify-me-please", "hub.challenge": "1"},
        {},
    ):
        assert (await ingest.client.get(f"/webhooks/meta/{APP_1}", params=params)).status_code == 403
    no_token_app = await ingest.client.get(
        f"/webhooks/meta/{APP_2}",
        params={"hub.mode": "subscribe", "hub.verify_token": "verify-me-please", "hub.challenge": "1"},
    )
    assert no_token_app.status_code == 403


async def test_bare_webhook_route_answers_exactly_as_the_fastapi_route(ingest: IngestEnv) -> None:
    """The webhook POST is served by the bare ASGI route in front of FastAPI (ADR 0010); the
    FastAPI routes behind it (documented in OpenAPI) must answer every case the same way."""
    from parley_ingest.app import IngestApp

    app = ingest.app
    assert isinstance(app, IngestApp) and app.webhook_route is not None
    marker = uuid.uuid4().hex[:8]
    good = _unique(dict(corpus_cases())["message_text"]["webhook"], marker)
    unknown_shape = orjson.dumps({"object": "page", "marker": marker})
    big = b"{" + b" " * (3 * 1024 * 1024) + b"}"
    cases = [
        (f"/webhooks/meta/{APP_1}", good, sign(good, APP1_SECRET)),
        ("/webhooks/meta", good, sign(good, APP1_SECRET_NEW)),
        (f"/webhooks/meta/{APP_1}", good, None),
        (f"/webhooks/meta/{APP_1}", good, sign(good, APP2_SECRET)),
        ("/webhooks/meta/no-such-app", good, sign(good, APP1_SECRET)),
        (f"/webhooks/meta/{APP_1}", b"{not json", sign(b"{not json", APP1_SECRET)),
        (f"/webhooks/meta/{APP_1}", unknown_shape, sign(unknown_shape, APP1_SECRET)),
        (f"/webhooks/meta/{APP_1}", big, sign(big, APP1_SECRET)),
    ]
    answers: dict[str, list[tuple[int, bytes, str | None, str | None]]] = {}
    route = app.webhook_route
    try:
        for stack in ("bare", "fastapi"):
            app.webhook_route = route if stack == "bare" else None
            answers[stack] = []
            for path, body, signature in cases:
                headers = {"X-Hub-Signature-256": signature} if signature else {}
                r = await ingest.client.post(path, content=body, headers=headers)
                answers[stack].append(
                    (r.status_code, r.content, r.headers.get("content-type"), r.headers.get("retry-after"))
                )
    finally:
        app.webhook_route = route
    assert [a[0] for a in answers["bare"]] == [200, 200, 401, 401, 401, 400, 200, 413]
    assert answers["bare"] == answers["fastapi"]
    assert answers["bare"][0][1] == b'{"events":1,"problems":0}'


async def test_incoming_trace_context_continues_into_the_kafka_records(ingest: IngestEnv) -> None:
    marker = uuid.uuid4().hex[:8]
    body = _unique(dict(corpus_cases())["message_text"]["webhook"], marker)
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    assert await _post(ingest, body, headers={"traceparent": traceparent}) == 200
    ((record, _),) = (await _events(ingest, marker))[MESSAGES_IN.base]
    assert dict(record.headers)["traceparent"].decode().split("-")[1] == trace_id


async def test_garbage_collector_is_tuned_once_the_broker_runs(ingest: IngestEnv) -> None:
    """ADR 0010: start-up objects frozen out of full collections, gen0 collected less often."""
    import asyncio
    import gc

    settings = ingest.app.state.ingest.settings
    for _ in range(100):
        if gc.get_freeze_count() and gc.get_threshold()[0] == settings.gc_gen0_threshold:
            break
        await asyncio.sleep(0.05)
    assert settings.gc_freeze and gc.get_freeze_count() > 10_000
    assert gc.get_threshold()[0] == settings.gc_gen0_threshold == 10_000


@pytest.mark.parametrize("where", ["from", "contacts"])
@pytest.mark.parametrize("who", ["\u0000", "1650555\u00001234", "9" * 3000, "user\tname"])
async def test_a_customer_no_person_could_be_is_no_contact_and_the_webhook_is_still_taken(
        ingest: IngestEnv, who: str, where: str) -> None:
    """A signed webhook whose customer id PostgreSQL could not store (a NUL) or no index could hold:
    ingest answered 503 for ever, so Meta would retry it for days (the webhook fuzzer found it).
    Such an id names no one: no contact is decided, and the events go on. (A lone surrogate is
    not valid JSON text for ingest: 400, tested with the fuzzer.)"""
    marker = uuid.uuid4().hex[:8]
    case = dict(corpus_cases())["message_ad_referral"]
    value = case["webhook"]["entry"][0]["changes"][0]["value"]
    message = {k: v for k, v in value["messages"][0].items() if k != "from"}
    if where == "from":
        message = {**message, "from": who, "from_user_id": who}
    hostile = {**value, "contacts": [{"profile": {"name": "x", "username": who}, "wa_id": who, "user_id": who}],
               "messages": [{**message, "id": f"wamid.{marker}.m"}],
               "statuses": [{"id": f"wamid.{marker}.s", "status": "sent", "timestamp": "1750275993",
                             "recipient_id": who, "recipient_user_id": who}]}
    webhook = {**case["webhook"], "entry": [{**case["webhook"]["entry"][0],
                                             "changes": [{"field": "messages", "value": hostile}]}]}
    body = json.dumps(webhook).encode()
    assert await _post(ingest, body) == 200
    raws = [r for r in await read_topic(ingest.kafka_bootstrap, WEBHOOKS_RAW.name) if marker.encode() in r.value]
    assert [r.value for r in raws] == [body]
