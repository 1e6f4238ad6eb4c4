"""``deploy/local/topic_reading.py``, the one reader behind the demo's summary and the soak's
counts: the records between two offset snapshots, and a whole topic, on the real broker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from parley_common.topics import SENDS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))

from topic_reading import end_offsets, read_range, read_topic  # deploy/local is a folder of scripts

pytestmark = pytest.mark.infra


async def produce(bootstrap: str, topic: str, values: list[dict[str, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, v in enumerate(values):
            await producer.send_and_wait(topic, json.dumps(v).encode(), key=str(i % 3).encode())
    finally:
        await producer.stop()


async def test_a_range_holds_exactly_the_records_between_two_snapshots(kafka_bootstrap: str) -> None:
    topic = SENDS.name  # namespaced for this module by the fixture
    await produce(kafka_bootstrap, topic, [{"n": i, "run": "earlier"} for i in range(5)])
    before = (await end_offsets(kafka_bootstrap, [topic]))[topic]
    await produce(kafka_bootstrap, topic, [{"n": i, "run": "this"} for i in range(7)])
    after = (await end_offsets(kafka_bootstrap, [topic]))[topic]
    assert sum(after.values()) - sum(before.values()) == 7
    this_run = await read_range(kafka_bootstrap, topic, before, after)
    assert sorted(r["n"] for r in this_run) == list(range(7)) and {r["run"] for r in this_run} == {"this"}
    everything = await read_topic(kafka_bootstrap, topic)
    assert len(everything) == 12
