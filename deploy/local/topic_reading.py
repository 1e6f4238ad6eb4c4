"""Reading Kafka topics back, for the demo's summary (``run_demo.py``) and the soak's counts
(``tests/soak/counting.py``): the end offsets of topics, and every record between two offset
snapshots (or from the beginning), decoded as JSON."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = consumer.partitions_for_topic(topic) or set()
    if not parts:
        await consumer._client.force_metadata_update()  # aiokafka has no public lookup without a subscription
        parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def end_offsets(bootstrap: str, topics: list[str]) -> dict[str, dict[int, int]]:
    """Per topic, per partition: the offset the next record will get."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        result: dict[str, dict[int, int]] = {}
        for topic in topics:
            tps = await _partitions(consumer, topic)
            offs = await consumer.end_offsets(tps) if tps else {}
            result[topic] = {tp.partition: off for tp, off in offs.items()}
        return result
    finally:
        await consumer.stop()


async def read_range(bootstrap: str, topic: str, start: dict[int, int], end: dict[int, int],
                     timeout_s: float = 120) -> list[dict[str, Any]]:
    """Every record of ``topic`` between two offset snapshots (a partition missing from ``start``:
    from its first record still kept), decoded as JSON."""
    # earliest: a start offset retention has already deleted begins at the first record kept
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in end if end[p] > start.get(p, 0)]
        if not tps:
            return out
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start.get(tp.partition, 0))
        remaining = {tp: end[tp.partition] for tp in tps}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10000)
            for tp, records in batch.items():
                out.extend(json.loads(r.value) for r in records if r.offset < remaining.get(tp, 0))
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    remaining.pop(tp)
                    consumer.pause(tp)
        return out
    finally:
        try:
            await consumer.stop()
        except asyncio.CancelledError:  # aiokafka cancels its own committed-offsets task on stop
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 300) -> list[dict[str, Any]]:
    """Every record of a topic from the beginning to its current end, decoded as JSON."""
    end = (await end_offsets(bootstrap, [topic]))[topic]
    return await read_range(bootstrap, topic, {}, end, timeout_s)
