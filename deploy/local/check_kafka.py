"""Smoke check for the local Kafka broker started by deploy/local/infra.sh (needs aiokafka).

    python deploy/local/check_kafka.py [bootstrap]      # default: $PARLEY_KAFKA_BOOTSTRAP or 127.0.0.1:19092

Creates a throwaway topic (auto-create is off), then checks:
  1. idempotent producer (acks=all, enable_idempotence=True), including one 3 MB record;
  2. consumer group: join, read everything from earliest, commit, committed offsets visible;
  3. transactional producer + read_committed consumer (commit and abort);
and deletes the topic. Exit code 0 on success.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BIG = 3 * 1024 * 1024  # WhatsApp webhook upper bound
MAX_REQUEST = 5 * 1024 * 1024  # broker message.max.bytes is 5 MiB


async def consume_all(
    bootstrap: str, topic: str, group: str, expected: int, **kw: object
) -> tuple[list, dict[int, int | None]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=MAX_REQUEST * 2,
        max_partition_fetch_bytes=MAX_REQUEST,
        **kw,
    )
    await consumer.start()
    got: list = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                got.extend(msgs)
        await consumer.commit()
        parts = consumer.assignment()
        committed = {tp.partition: await consumer.committed(tp) for tp in parts}
    finally:
        await consumer.stop()
    return got, committed


async def main(bootstrap: str) -> None:
    topic = f"parley-smoke-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        t0 = time.monotonic()

        # 1. idempotent producer
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, max_request_size=MAX_REQUEST
        )
        await producer.start()
        try:
            futs = [await producer.send(topic, f"m{i}".encode(), key=b"k%d" % (i % 5)) for i in range(100)]
            await asyncio.gather(*futs)
            md = await producer.send_and_wait(topic, b"x" * BIG, key=b"big")
        finally:
            await producer.stop()
        print(f"[1] produced 100 + 1 x {BIG} B, acks=all, idempotent (big: p{md.partition}@{md.offset})")

        # 2. consumer group
        group = f"{topic}-g"
        got, committed = await consume_all(bootstrap, topic, group, 101)
        assert len(got) == 101, f"consumed {len(got)} of 101"
        assert any(len(m.value) == BIG for m in got), "3 MB record missing"
        assert sum(committed.values()) == 101, f"committed offsets {committed}"
        print(f"[2] group {group}: consumed {len(got)}, committed {committed}")

        # 3. transactions
        tx_topic = f"{topic}-tx"
        await admin.create_topics([NewTopic(tx_topic, num_partitions=1, replication_factor=1)])
        txp = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-txid")
        await txp.start()
        try:
            async with txp.transaction():
                await txp.send(tx_topic, b"committed-1")
                await txp.send(tx_topic, b"committed-2")
            try:
                async with txp.transaction():
                    await txp.send(tx_topic, b"aborted")
                    raise RuntimeError("abort on purpose")
            except RuntimeError:
                pass
            async with txp.transaction():
                await txp.send(tx_topic, b"committed-3")
        finally:
            await txp.stop()
        got, _ = await consume_all(bootstrap, tx_topic, f"{tx_topic}-g", 3, isolation_level="read_committed")
        values = [m.value for m in got]
        assert values == [b"committed-1", b"committed-2", b"committed-3"], values
        print(f"[3] transactions: read_committed saw {values} (aborted record hidden)")
        print(f"OK against {bootstrap} in {time.monotonic() - t0:.1f} s")
    finally:
        try:
            await admin.delete_topics([topic, f"{topic}-tx"])
        except Exception as exc:  # best-effort cleanup
            print(f"(cleanup: {exc!r})", file=sys.stderr)
        await admin.close()


if __name__ == "__main__":
    bs = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PARLEY_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    asyncio.run(main(bs))
