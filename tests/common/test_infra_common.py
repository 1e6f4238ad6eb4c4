"""The shared plumbing against the real broker and database."""

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from faststream.kafka import KafkaMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from parley_common.broker import CONSUMER_DEFAULTS, make_broker
from parley_common.contracts import DeadLetter, InboundMessage
from parley_common.db import connect, migrate
from parley_common.deadletter import ConsumerGuard
from parley_common.producer import RecordProducer
from parley_common.settings import CommonSettings
from parley_common.tenancy.cli import RegistryFile, add_api_key, import_registry
from parley_common.tenancy.directory import TenantDirectory
from parley_common.topics import DEAD_LETTERS, MESSAGES_IN

pytestmark = pytest.mark.infra

TENANCY = Path(__file__).resolve().parents[2] / "libs/common/parley_common/tenancy/migrations"


async def test_record_round_trip_carries_trace_context_and_dead_letters_poison(kafka_bootstrap):
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    broker = make_broker(kafka_bootstrap, service="commontest", tracer_provider=tp)
    producer = RecordProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap), service="commontest")
    got: list[tuple[InboundMessage, dict]] = []
    poison_headers: dict = {}
    letters: list[tuple[DeadLetter, dict]] = []
    done = asyncio.Event()

    guard = ConsumerGuard(producer, service="commontest", consumer="commontest:messages.in")

    @broker.subscriber(MESSAGES_IN.name, group_id="commontest", **CONSUMER_DEFAULTS)
    async def on_message(msg: KafkaMessage) -> None:
        if msg.body == b"{not json":
            poison_headers.update(msg.headers)

        async def handle(records: object) -> None:
            event = InboundMessage.model_validate_json(msg.body)  # poison records raise here
            if event.event_id == "wamid.rt1":
                got.append((event, dict(msg.headers)))

        await guard.run([msg.raw_message], handle)
        if got and letters:
            done.set()

    @broker.subscriber(DEAD_LETTERS.name, group_id="commontest-dlq", **CONSUMER_DEFAULTS)
    async def on_letter(msg: KafkaMessage) -> None:
        letter = DeadLetter.model_validate_json(msg.body)
        if letter.payload == "{not json":
            letters.append((letter, dict(msg.headers)))
        if got:
            done.set()

    await producer.start()  # what the guard dead-letters through: started before the consumers
    try:
        async with broker:
            await broker.start()
            event = InboundMessage(event_id="wamid.rt1", wamid="wamid.rt1", phone_number_id="555", type="text",
                                   text="hello", occurred_at=datetime.now(UTC))
            await broker.publish(b"{not json", MESSAGES_IN.name, key=b"555")
            await broker.publish(event, MESSAGES_IN.name, key=b"555")
            await asyncio.wait_for(done.wait(), 60)
    finally:
        await producer.stop()

    assert got[0][0] == event
    assert "traceparent" in got[0][1]
    letter, headers = letters[0]
    assert letter.source_topic == MESSAGES_IN.name and letter.payload == "{not json"
    assert letter.attempts == 1 and letter.key == "555"  # permanent: no retry
    assert letter.reason.startswith("ValidationError: ") and letter.error_type == "ValidationError"
    assert headers["x-parley-service"] == "commontest" and headers["x-parley-source-topic"] == MESSAGES_IN.name
    # the dead letter continues the trace of the record it came from
    assert headers["traceparent"].split("-")[1] == poison_headers["traceparent"].split("-")[1]
    names = {s.name for s in exporter.get_finished_spans()}
    assert f"{MESSAGES_IN.name} process" in names and f"{MESSAGES_IN.name} publish" in names


async def test_a_pooled_connection_comes_back_without_the_transaction_left_open(database_url):
    # The pool skips asyncpg's session reset statement (parley_common.db._keep_session); what a
    # handler leaves open is still rolled back before the next one borrows the connection.
    from parley_common.db import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_open (x int)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    finally:
        await pool.close()


async def test_migrations_apply_once_and_refuse_edited_files(database_url, tmp_path):
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE mtest.a (id int);")
    assert await migrate(database_url, "mtest", tmp_path) == ["0001_a.sql"]
    (tmp_path / "0002_b.sql").write_text("CREATE TABLE mtest.b (id int);")
    assert await migrate(database_url, "mtest", tmp_path) == ["0002_b.sql"]
    assert await migrate(database_url, "mtest", tmp_path) == []
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE mtest.a (id bigint);")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        await migrate(database_url, "mtest", tmp_path)


async def test_tenant_registry_import_keys_and_isolation(database_url, monkeypatch):
    monkeypatch.setenv("T_SECRET", "s3cret")
    await migrate(database_url, "tenancy", TENANCY)
    reg = RegistryFile.model_validate({
        "apps": [{"app_id": "app1", "app_secret_refs": ["env:T_SECRET"], "access_token_ref": "env:T_SECRET"}],
        "tenants": [
            {"tenant_id": "ta", "name": "A", "app_id": "app1", "business_country": "BD", "time_zone": "Asia/Dhaka",
             "wabas": ["wa1"],
             "phone_numbers": [{"phone_number_id": "pa", "display_phone_number": "1", "waba_id": "wa1"}]},
            {"tenant_id": "tb", "name": "B", "app_id": "app1", "business_country": "TR",
             "time_zone": "Europe/Istanbul", "wabas": ["wb1"],
             "phone_numbers": [{"phone_number_id": "pb", "display_phone_number": "2", "waba_id": "wb1"}]},
        ]})
    conn = await connect(database_url)
    try:
        await import_registry(conn, reg)
        await import_registry(conn, reg)  # idempotent
        _, key_a = await add_api_key(conn, "ta")
        stolen = RegistryFile.model_validate({"tenants": [
            {"tenant_id": "tb", "name": "B", "app_id": "app1", "business_country": "TR",
             "time_zone": "Europe/Istanbul", "wabas": ["wa1"]}]})
        with pytest.raises(ValueError, match="already belongs to tenant ta"):
            await import_registry(conn, stolen)
        d = await TenantDirectory.load(conn)
    finally:
        await conn.close()
    assert d.tenant_for_api_key(key_a).tenant_id == "ta"
    assert d.tenant_for_api_key(key_a + "x") is None
    assert d.tenant_for_number("pb").tenant_id == "tb"
    assert d.apps["app1"].app_secrets == (b"s3cret",)
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT key_hash FROM tenancy.api_keys")
    finally:
        await conn.close()
    assert key_a.encode() not in bytes(stored)


def test_inline_secrets_are_rejected():
    with pytest.raises(ValueError, match="never inline"):
        RegistryFile.model_validate({"apps": [{"app_id": "a", "app_secret_refs": ["hunter2"]}]})


def test_log_records_are_redacted(caplog):
    from parley_common.redaction import Redactor
    from parley_common.telemetry import RedactingFilter

    logger = logging.getLogger("parley.test.redact")
    f = RedactingFilter(Redactor("k"))
    record = logger.makeRecord("x", logging.INFO, "f", 1, "sent to %s", ("+8801700000001",), None,
                               extra={"text": "refund my order 42", "count": 3})
    f.filter(record)
    assert "8801700000001" not in record.getMessage()
    assert record.text.startswith("h:") and record.count == 3
