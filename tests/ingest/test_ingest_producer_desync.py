"""After a broker restart an idempotent producer's sequence numbers can stop matching what the
broker kept for it; the broker then answers OutOfOrderSequenceNumber to every later batch, and
aiokafka never recovers on its own (aio-libs/aiokafka#1017). The soak's Kafka restart left one
ingest replica answering 503 to every webhook from then on. Ingest must renew the producer's
identity and write again."""

from __future__ import annotations

import json
import uuid

import pytest
from aiokafka import TopicPartition
from parley_common.producer import RecordProducer
from parley_common.settings import CommonSettings
from parley_common.topics import MESSAGES_IN
from parley_ingest.domain.records import OutRecord
from parley_ingest.publishing import KafkaUnavailable, RecordWriter
from support.kafka import read_topic

pytestmark = pytest.mark.infra


async def test_a_producer_out_of_sequence_with_the_broker_is_renewed_and_writes_again(kafka_bootstrap: str) -> None:
    records = RecordProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap), service="ingest-desync-test",
                             linger_ms=0)
    await records.start()
    try:
        writer = RecordWriter(records, timeout_s=10.0, breaker_s=0.0)
        key = uuid.uuid4().hex.encode()

        def record(n: int) -> OutRecord:
            return OutRecord(MESSAGES_IN.name, f'{{"n": {n}, "k": "{key.decode()}"}}'.encode(), key)

        await writer.write_all([record(1)])
        producer = records._producer
        assert producer is not None
        # What a broker restart can leave behind: the producer's next sequence number for the
        # partition is ahead of what the broker has for this producer id.
        txn = producer._txn_manager
        tp = next(tp for tp in txn._sequence_numbers if tp.topic == MESSAGES_IN.name)
        assert isinstance(tp, TopicPartition)
        txn._sequence_numbers[tp] += 5

        with pytest.raises(KafkaUnavailable, match="OutOfOrderSequenceNumber"):
            await writer.write_all([record(2)])
        await writer.write_all([record(3)])  # a new producer identity: accepted
        await writer.write_all([record(4)])
    finally:
        await records.stop()
    values = [json.loads(r.value) for r in await read_topic(kafka_bootstrap, MESSAGES_IN.name) if r.key == key]
    mine = [v for v in values if v.get("k") == key.decode()]
    assert [r["n"] for r in mine] == [1, 3, 4]
