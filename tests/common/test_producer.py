"""Parley's one producer (parley_common.producer) against the real broker: every record arrives
once, on the partition its key names (as aiokafka's own send would choose), in order per key, with
its headers; and every producer carries the same guarantees and the settings' Kafka transport."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner
from parley_common.producer import ProducerNotStarted, Record, RecordProducer, producer_options
from parley_common.settings import CommonSettings
from parley_common.topics import AGENT_QUEUE, MESSAGES_ROUTED, SENDS


def test_every_producer_waits_for_all_replicas_and_never_writes_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "SCRAM-SHA-512",
                        "SASL_USERNAME": "parley-router", "SASL_PASSWORD": "p"}.items():
        monkeypatch.setenv(f"PARLEY_KAFKA_{name}", value)
    options = producer_options(CommonSettings(), service="router", linger_ms=0)
    assert (options["acks"], options["enable_idempotence"], options["compression_type"]) == ("all", True, "lz4")
    assert (options["client_id"], options["linger_ms"]) == ("parley-router", 0)
    assert (options["security_protocol"], options["sasl_mechanism"], options["sasl_plain_username"]) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-512", "parley-router")


async def test_a_producer_that_is_not_started_refuses_instead_of_dropping() -> None:
    producer = RecordProducer(CommonSettings(), service="test")
    with pytest.raises(ProducerNotStarted):
        await producer.send([Record("t", b"k", b"v")])


async def _read(bootstrap: str, topics: list[str], want: int) -> list[tuple[str, int, bytes, bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    got: list[tuple[str, int, bytes, bytes, dict[str, bytes]]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                got += [(tp.topic, tp.partition, m.key, m.value, dict(m.headers)) for m in messages]
        return got
    finally:
        await consumer.stop()


@pytest.mark.infra
async def test_records_arrive_once_on_their_keys_partition_in_order_with_their_headers(kafka_bootstrap: str) -> None:
    producer = RecordProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap), service="test")
    routed, agents = MESSAGES_ROUTED.name, AGENT_QUEUE.name
    keys = [f"1555000{n:04d}".encode() for n in range(7)]
    # many records of a few keys (whole batches), a lone record (joins the open batch), two topics
    records = [Record(routed, keys[i % 6], f"routed-{i}".encode(), [("x-n", str(i).encode())]) for i in range(60)]
    records.append(Record(agents, keys[6], b"task-60", [("x-n", b"60")]))
    await producer.start()
    try:
        futures = await producer.send(records, headers=[("traceparent", b"00-abc-def-01")])
        assert len(futures) == len(records)
        await asyncio.gather(*futures)
        await producer.send_all([Record(routed, keys[0], b"routed-60")])
        partitions = {t: sorted(await producer._producer.partitions_for(t)) for t in (routed, agents)}  # type: ignore[union-attr]
    finally:
        await producer.stop()

    got = await _read(kafka_bootstrap, [routed, agents], len(records) + 1)
    assert sorted(value for _, _, _, value, _ in got) == sorted([r.value for r in records] + [b"routed-60"])
    choose = DefaultPartitioner()
    per_key: dict[bytes, list[bytes]] = defaultdict(list)
    for topic, partition, key, value, headers in got:
        assert partition == choose(key, partitions[topic], partitions[topic])
        per_key[key].append(value)
        if value != b"routed-60":
            assert headers["traceparent"] == b"00-abc-def-01" and value.endswith(headers["x-n"])
    assert per_key[keys[0]] == [b"routed-0", b"routed-6", b"routed-12", b"routed-18", b"routed-24", b"routed-30",
                                b"routed-36", b"routed-42", b"routed-48", b"routed-54", b"routed-60"]
    assert per_key[keys[6]] == [b"task-60"]


@pytest.mark.infra
async def test_a_record_larger_than_a_batch_still_goes_in_a_batch_of_its_own(kafka_bootstrap: str) -> None:
    producer = RecordProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap), service="test")
    big = b"x" * (300 * 1024)  # over the 256 KiB batch size, under the request limit
    records = [Record(SENDS.name, b"15559990001", v) for v in (b"small-1", big, b"small-2")]
    await producer.start()
    try:
        await producer.send_all(records)
    finally:
        await producer.stop()
    got = await _read(kafka_bootstrap, [SENDS.name], 3)
    assert [value for *_, value, _ in got] == [b"small-1", big, b"small-2"]
