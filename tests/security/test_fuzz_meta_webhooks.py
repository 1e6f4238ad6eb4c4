"""Hypothesis-generated Meta webhooks, signed and posted to a live ingest on the real broker:
valid shapes carrying hostile values (integers far beyond 64 bits, NUL, lone surrogates, deep
nesting, times in year 1 and year 9999, non-numeric codes, invalid UTF-8 bytes).

The properties, checked per webhook once all were posted:
- no answer is a 5xx;
- nothing half-written: a 200 means the exact bytes are in ``wa.webhooks.raw`` and every message
  and status id of the payload reached its topic or a dead letter; a refusal (4xx) means none of
  its bytes or ids reached any topic.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from parley_common.topics import ACCOUNT_EVENTS, DEAD_LETTERS, MESSAGES_IN, STATUSES, WEBHOOKS_RAW
from support.tenancy import import_tenants

from .fuzz_harness import ThreadServed

pytestmark = pytest.mark.infra

APP_ID = "920000000000001"
SECRET = "meta-fuzz-app-secret"
WABA = "220000000000001"
NUMBER = "120000000000001"
WEBHOOKS = 200  # hypothesis examples: signed webhooks posted

DEEP = "__DEEP_NESTING__"
TAG = "__TAG__"

# --- hostile values -------------------------------------------------------------------------------

huge_int = st.one_of(st.integers(min_value=-(2**70), max_value=2**70),
                     st.sampled_from([2**63, -(2**63) - 1, 10**35, 0, -1]))
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(lambda t: t + "\x00" + t),
    st.sampled_from(["\x00", "", " ", "\u202e", "💥" * 50, "x" * 5000, "ＳＴＯＰ", "\ufeffSTART"]),
)
# A lone surrogate makes the whole body invalid JSON for ingest (a 400): one field per webhook at
# most, in a quarter of them, so that most webhooks test the other values.
lone_surrogate = st.sampled_from(["\ud800", "a\udfffb", "\udbff"])
# Meta sends unix seconds as strings; hostile: far past, far future, not numbers, numbers, floats.
hostile_time = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**14).map(str),
    st.sampled_from(["0", "-62135596800", "253402300800", "99999999999999999999", "abc", "1e20", "", "1.5",
                     "NaN"]),
    huge_int, st.floats(allow_nan=False, allow_infinity=False),
)
digits = st.one_of(st.from_regex(r"\A[0-9]{1,20}\Z"), hostile_text)
unknown_value = st.recursive(
    st.one_of(st.none(), st.booleans(), huge_int, hostile_text, st.just(DEEP)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


@dataclass
class Shape:
    """One generated webhook: its body and the ids that must be accounted for."""

    body: bytes
    message_ids: list[str] = field(default_factory=list)
    status_ids: list[str] = field(default_factory=list)


@st.composite
def message(draw: st.DrawFn, wamid: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "location", "interactive", "button", "reaction", "image", "weird"]))
    msg: dict[str, Any] = {"from": draw(digits), "id": wamid, "timestamp": draw(hostile_time), "type": kind}
    if kind == "text":
        msg["text"] = {"body": draw(hostile_text)}
    elif kind == "location":
        msg["location"] = {"latitude": draw(st.one_of(huge_int, st.floats(allow_nan=False, allow_infinity=False))),
                           "longitude": draw(huge_int), "name": draw(hostile_text)}
    elif kind == "interactive":
        msg["interactive"] = {"type": "button_reply", "button_reply": {"id": draw(hostile_text),
                                                                        "title": draw(hostile_text)}}
    elif kind == "button":
        msg["button"] = {"payload": draw(hostile_text), "text": draw(hostile_text)}
    elif kind == "reaction":
        msg["reaction"] = {"message_id": draw(hostile_text), "emoji": draw(hostile_text)}
    elif kind == "image":
        msg["image"] = {"id": draw(hostile_text), "mime_type": draw(hostile_text), "sha256": draw(hostile_text)}
    if draw(st.booleans()):
        msg["context"] = {"from": draw(digits), "id": draw(hostile_text)}
    if draw(st.booleans()):
        msg["errors"] = [{"code": draw(st.one_of(huge_int, hostile_text)), "title": draw(hostile_text)}]
    if draw(st.booleans()):
        msg["x_new_meta_field"] = draw(unknown_value)
    return msg


@st.composite
def status(draw: st.DrawFn, wamid: str) -> dict[str, Any]:
    s: dict[str, Any] = {
        "id": wamid, "timestamp": draw(hostile_time), "recipient_id": draw(digits),
        "status": draw(st.sampled_from(["sent", "delivered", "read", "failed", "played", "deleted", "Ω"])),
    }
    if draw(st.booleans()):
        s["pricing"] = {"billable": draw(st.one_of(st.booleans(), huge_int, hostile_text)),
                        "pricing_model": draw(st.sampled_from(["PMP", "CBP", "??"])),
                        "type": draw(st.sampled_from(["regular", "free_customer_service", "free_entry_point", ""])),
                        "category": draw(st.one_of(st.sampled_from(["marketing", "utility", "authentication"]),
                                                   hostile_text))}
    if draw(st.booleans()):
        s["conversation"] = {"id": draw(hostile_text), "expiration_timestamp": draw(hostile_time),
                             "origin": {"type": draw(hostile_text)}}
    if draw(st.booleans()):
        s["errors"] = [{"code": draw(st.one_of(huge_int, hostile_text)), "title": draw(hostile_text),
                        "error_data": {"details": draw(hostile_text)}}]
    if draw(st.booleans()):
        s["biz_opaque_callback_data"] = draw(hostile_text)
    return s


@st.composite
def webhook(draw: st.DrawFn) -> Shape:
    # Ids carry a placeholder; each post replaces it with a number of its own.
    messages = [draw(message(f"wamid.fz{TAG}m{i}")) for i in range(draw(st.integers(0, 3)))]
    statuses = [draw(status(f"wamid.fz{TAG}s{i}")) for i in range(draw(st.integers(0, 3)))]
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "905300000100", "phone_number_id": NUMBER},
    }
    if messages:
        name = draw(st.one_of(hostile_text, hostile_text, hostile_text, lone_surrogate))
        value["contacts"] = [{"profile": {"name": name}, "wa_id": draw(digits)}]
        value["messages"] = messages
    if statuses:
        value["statuses"] = statuses
    if draw(st.booleans()):  # errors of the whole change (a "messages.errors" webhook)
        value["errors"] = [{"code": draw(st.one_of(huge_int, hostile_text)), "title": draw(hostile_text)}]
    if draw(st.booleans()):
        value["x_unknown"] = DEEP
    entry: dict[str, Any] = {"id": WABA, "changes": [{"field": "messages", "value": value}]}
    if draw(st.booleans()):
        entry["time"] = draw(hostile_time)
    text = json.dumps({"object": "whatsapp_business_account", "entry": [entry]},
                      ensure_ascii=draw(st.sampled_from([True, True, False])))
    depth = draw(st.sampled_from([1, 1, 1, 50, 300, 2000]))
    text = text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    # Lone surrogates are valid as JSON escapes (ensure_ascii) but not as UTF-8 bytes.
    body = text.encode("utf-8", "surrogatepass")
    return Shape(body, [m["id"] for m in messages], [s["id"] for s in statuses])


# --- the live ingest ------------------------------------------------------------------------------


async def _register(database_url: str) -> None:
    await import_tenants(database_url, {
        "apps": [{"app_id": APP_ID, "app_secret_refs": ["env:META_FUZZ_APP_SECRET"]}],
        "tenants": [{"tenant_id": "meta-fuzz", "name": "Meta fuzz", "app_id": APP_ID, "business_country": "TR",
                     "time_zone": "Europe/Istanbul", "wabas": [WABA],
                     "phone_numbers": [{"phone_number_id": NUMBER, "display_phone_number": "905300000100",
                                        "waba_id": WABA}]}]})


@pytest.fixture(scope="module")
def ingest_url(kafka_bootstrap: str, database_url: str) -> Iterator[str]:
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    os.environ["META_FUZZ_APP_SECRET"] = SECRET
    asyncio.run(_register(database_url))
    served = ThreadServed(create_app(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url,
                                                    gc_freeze=False)), start_broker=True).start()
    try:
        yield served.url
    finally:
        served.stop()


@dataclass
class Posted:
    shape: Shape
    status: int


async def _topic_contents(bootstrap: str) -> dict[str, list[tuple[bytes, dict[str, bytes]]]]:
    topics = [WEBHOOKS_RAW.name, MESSAGES_IN.name, STATUSES.name, ACCOUNT_EVENTS.name, DEAD_LETTERS.name]
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=f"meta-fuzz-{uuid.uuid4().hex[:8]}",
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    out: dict[str, list[tuple[bytes, dict[str, bytes]]]] = {t: [] for t in topics}
    try:
        await consumer.seek_to_end()
        ends = {tp: await consumer.position(tp) for tp in consumer.assignment()}
        await consumer.seek_to_beginning()
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                out[tp.topic].extend((r.value or b"", dict(r.headers or ())) for r in records)
    finally:
        await consumer.stop()
    return out


def test_hostile_meta_webhooks_never_get_a_5xx_and_are_never_half_written(
        ingest_url: str, kafka_bootstrap: str) -> None:
    posted: list[Posted] = []

    @settings(max_examples=WEBHOOKS, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture])
    @given(generated=webhook())
    def post(generated: Shape) -> None:
        tag = f"{len(posted):05d}{uuid.uuid4().hex[:8]}"
        shape = Shape(generated.body.replace(TAG.encode(), tag.encode()),
                      [i.replace(TAG, tag) for i in generated.message_ids],
                      [i.replace(TAG, tag) for i in generated.status_ids])
        signature = "sha256=" + hmac.new(SECRET.encode(), shape.body, hashlib.sha256).hexdigest()
        r = client.post(f"{ingest_url}/webhooks/meta/{APP_ID}", content=shape.body, timeout=60,
                       headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"})
        assert r.status_code < 500, (r.status_code, r.text[:500], shape.body[:300])
        posted.append(Posted(shape, r.status_code))

    with httpx.Client() as client:
        started = time.monotonic()
        post()
        posting_s = time.monotonic() - started
    assert posted, "no webhook was posted"

    contents = asyncio.run(_topic_contents(kafka_bootstrap))
    raw_hashes = {h.get("x-parley-body-sha256", b"").decode() for _v, h in contents[WEBHOOKS_RAW.name]}
    event_ids: set[str] = set()
    for topic in (MESSAGES_IN.name, STATUSES.name):
        for value, _h in contents[topic]:
            event = orjson.loads(value)
            event_ids.add(str(event.get("wamid") or event.get("event_id")))
    letters = b"\n".join(v for v, _h in contents[DEAD_LETTERS.name])

    accepted = [p for p in posted if p.status == 200]
    refused = [p for p in posted if p.status != 200]
    problems: list[str] = []
    for p in accepted:
        if hashlib.sha256(p.shape.body).hexdigest() not in raw_hashes:
            problems.append(f"accepted but not archived: {p.shape.body[:120]!r}")
        for wamid in p.shape.message_ids + p.shape.status_ids:
            if wamid not in event_ids and wamid.encode() not in letters:
                problems.append(f"accepted but {wamid} reached neither its topic nor a dead letter")
    for p in refused:
        if hashlib.sha256(p.shape.body).hexdigest() in raw_hashes:
            problems.append(f"answered {p.status} yet archived: {p.shape.body[:120]!r}")
        for wamid in p.shape.message_ids + p.shape.status_ids:
            if wamid in event_ids:
                problems.append(f"answered {p.status} yet {wamid} was published")
    assert problems == [], problems[:10]
    statuses = sorted({p.status for p in posted})
    print(f"\nmeta webhooks posted: {len(posted)} ({len(accepted)} accepted, {len(refused)} refused; "
          f"statuses {statuses}; posting took {posting_s:.1f} s)")
