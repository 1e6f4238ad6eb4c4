"""503 when Kafka does not acknowledge; replay of the raw archive gives the same event ids."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from parley_common.contracts import DeadLetter, InboundMessage
from parley_common.meta.signature import sign
from parley_common.topics import DEAD_LETTERS, MESSAGES_IN
from support.kafka import read_topic

from .conftest import IngestEnv
from .ingest_support import APP1_SECRET, APP_1, corpus_cases

pytestmark = pytest.mark.infra


async def test_unacknowledged_write_is_503_fast_then_breaker_answers_at_once(
    kafka_bootstrap: str, database_url: str, ingest_registry: dict[str, str]
) -> None:
    from parley_ingest.app import create_app
    from parley_ingest.settings import IngestSettings

    app = create_app(
        IngestSettings(
            kafka_bootstrap=kafka_bootstrap,
            database_url=database_url,
            produce_timeout_s=1.0,
            kafka_breaker_s=30.0,
        )
    )
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    headers = {"X-Hub-Signature-256": sign(body, APP1_SECRET)}
    namespace = os.environ["PARLEY_TOPIC_NAMESPACE"]
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")
        # topics that do not exist (the broker does not auto-create): Kafka never acknowledges
        os.environ["PARLEY_TOPIC_NAMESPACE"] = "missing-" + uuid.uuid4().hex[:6] + "."
        try:
            started = time.monotonic()
            first = await client.post(f"/webhooks/meta/{APP_1}", content=body, headers=headers)
            first_s = time.monotonic() - started
            started = time.monotonic()
            second = await client.post(f"/webhooks/meta/{APP_1}", content=body, headers=headers)
            second_s = time.monotonic() - started
        finally:
            os.environ["PARLEY_TOPIC_NAMESPACE"] = namespace
            await client.aclose()
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    assert first_s < 3.0
    assert second.status_code == 503 and second_s < 0.5


async def test_replay_of_the_raw_archive_republishes_the_same_event_ids(
    ingest: IngestEnv, database_url: str
) -> None:
    from parley_ingest.replay import replay_raw
    from parley_ingest.settings import IngestSettings

    marker = uuid.uuid4().hex[:8]
    import orjson

    body = orjson.dumps(dict(corpus_cases())["batched_entries"]["webhook"]).replace(
        b"wamid.", f"wamid.{marker}.".encode()
    )
    start = datetime.now(UTC) - timedelta(seconds=1)
    r = await ingest.client.post(
        f"/webhooks/meta/{APP_1}", content=body, headers={"X-Hub-Signature-256": sign(body, APP1_SECRET)}
    )
    assert r.status_code == 200
    report = await replay_raw(
        IngestSettings(kafka_bootstrap=ingest.kafka_bootstrap, database_url=database_url),
        start,
        datetime.now(UTC) + timedelta(seconds=1),
    )
    assert report.webhooks >= 1
    events = [
        InboundMessage.model_validate_json(rec.value)
        for rec in await read_topic(ingest.kafka_bootstrap, MESSAGES_IN.name)
        if marker.encode() in rec.value
    ]
    per_id = Counter(e.event_id for e in events)
    assert len(per_id) == 3 and set(per_id.values()) == {2}  # live + replay, same ids
    tenants = {e.event_id.rsplit(".", 1)[1]: e.tenant_id for e in events}
    assert tenants == {"B1": "ingest-acme", "B2": "ingest-acme", "B5": "ingest-globex"}
    # B6 is for a number nobody registered: kept as a dead letter (live and replay), never published
    unbound = [
        DeadLetter.model_validate_json(rec.value)
        for rec in await read_topic(ingest.kafka_bootstrap, DEAD_LETTERS.name)
        if f"wamid.{marker}.B6".encode() in rec.value
    ]
    assert [d.error_type for d in unbound] == ["UnboundTenant", "UnboundTenant"]
    assert {d.event_id for d in unbound} == {f"ingest:unbound:wamid.{marker}.B6"}
