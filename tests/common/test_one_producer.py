"""Every record Parley writes goes through the service's one ``RecordProducer`` (ADR 0005); the
FastStream broker only consumes, and nothing reaches into its private producer (issue 15).

A dead letter is a record like any other: written through the producer, it is written again after
the broker answered out of sequence (ADR 0077), where the FastStream broker's producer, behind
``ConsumerGuard``, was renewed only after a handler failed, never after a dead letter failed.
"""

from __future__ import annotations

import ast
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from parley_common.deadletter import ConsumerGuard
from parley_common.producer import RecordProducer
from parley_common.settings import CommonSettings
from parley_common.topics import DEAD_LETTERS
from support.kafka import read_topic

REPO = Path(__file__).resolve().parents[2]
WRITES = frozenset({"publish", "publish_batch", "request"})


def _reaches(path: Path) -> list[str]:
    """Where ``path`` writes through a broker (``broker.publish`` …), walks a broker's
    attributes by name (``getattr(broker, …)``) or reads FastStream's ``config.producer``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute):
            owner = ast.unparse(node.value)
            if (node.attr in WRITES and "broker" in owner) or (node.attr == "producer" and owner.endswith("config")):
                found.append(f"{where} {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and node.args and "broker" in ast.unparse(node.args[0])):
            found.append(f"{where} {ast.unparse(node)}")
    return found


def test_no_record_is_written_through_the_faststream_broker_and_nothing_reaches_into_it() -> None:
    shipped = [p for top in ("services", "libs/common") for p in sorted((REPO / top).rglob("*.py"))
               if ".venv" not in p.parts]
    assert shipped
    assert [reach for p in shipped for reach in _reaches(p)] == []


def _rec(key: bytes, offset: int) -> ConsumerRecord[Any, Any]:
    value = b'{"not": "an inbound message"}'
    return ConsumerRecord(topic="wa.test.source", partition=0, offset=offset, timestamp=0, timestamp_type=0,
                          key=key, value=value, checksum=None, serialized_key_size=len(key),
                          serialized_value_size=len(value), headers=())


@pytest.mark.infra
async def test_a_dead_letter_refused_out_of_sequence_renews_the_producer_and_is_written(kafka_bootstrap: str) -> None:
    producer = RecordProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap), service="deadletter-desync-test")
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    guard = ConsumerGuard(producer, service="desync", consumer="desync:t", sleep=sleep, rng=lambda: 0.5)
    key = uuid.uuid4().hex.encode()
    await producer.start()
    try:
        await guard.dead_letter(_rec(key, 1), ValueError("first"))
        # What a broker restart can leave behind: the producer's next sequence number for the
        # dead-letter partition is ahead of what the broker has for this producer id.
        txn = producer._producer._txn_manager  # type: ignore[union-attr]
        tp = next(tp for tp in txn._sequence_numbers if tp.topic == DEAD_LETTERS.name)
        assert isinstance(tp, TopicPartition)
        txn._sequence_numbers[tp] += 5

        await guard.dead_letter(_rec(key, 2), ValueError("second"))  # refused once, renewed, written
    finally:
        await producer.stop()
    assert guard.dead_lettered == 2 and guard.transient_failures == 1 and len(slept) == 1
    letters = [json.loads(r.value) for r in await read_topic(kafka_bootstrap, DEAD_LETTERS.name) if r.key == key]
    assert [letter["source_offset"] for letter in letters] == [1, 2]
