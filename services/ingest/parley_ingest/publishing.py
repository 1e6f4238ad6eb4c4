"""Writing a request's records to Kafka: all at once, answered only when Kafka acknowledged all.

Every record is handed to the producer without waiting (``no_confirm=True`` returns the
delivery future), then the futures are awaited together, so a 50-item batch costs one round
trip, not fifty. The broker is ``acks=all`` with the idempotent producer (parley_common.broker).
If Kafka does not acknowledge within ``timeout_s`` the request fails with ``KafkaUnavailable``
(HTTP 503, Meta retries); for ``breaker_s`` afterwards requests fail at once instead of each
waiting out the timeout, then one request probes again.

The breaker opens only when the broker is unavailable. A record too large for Kafka is the
request's own fault: ``RecordTooLarge`` (HTTP 413) is raised before anything is sent, and a size
refusal from the producer or broker is reported the same way, leaving the breaker as it was, so
one tenant's oversized request never makes ingest answer 503 to everyone else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker
from opentelemetry import propagate
from parley_common.broker import MAX_RECORD_BYTES, aiokafka_producer, record_size, renew_producer_identity

from parley_ingest.domain.records import OutRecord


class KafkaUnavailable(RuntimeError):
    pass


class RecordTooLarge(ValueError):
    """A record of the request is larger than Kafka takes (``index`` in the request's records)."""

    def __init__(self, index: int, size: int) -> None:
        super().__init__(f"record {index} is {size} bytes; Kafka takes at most {MAX_RECORD_BYTES}")
        self.index = index
        self.size = size


#: The producer's or broker's answers that refuse a record for its size, not for an outage.
SIZE_REFUSALS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


class RecordWriter:
    def __init__(self, broker: KafkaBroker, *, timeout_s: float, breaker_s: float) -> None:
        self._broker = broker
        self._timeout_s = timeout_s
        self._breaker_s = breaker_s
        self._failing_until = 0.0
        self._probing = False
        self._partitioner = DefaultPartitioner()

    async def write_all(self, records: Sequence[OutRecord]) -> None:
        """Return once Kafka acknowledged every record; raise ``KafkaUnavailable`` otherwise."""
        if not records:
            return
        for i, r in enumerate(records):
            size = record_size(r.key, r.value, r.headers)
            if size > MAX_RECORD_BYTES:
                raise RecordTooLarge(i, size)
        now = time.monotonic()
        probe = False
        if now < self._failing_until:
            raise KafkaUnavailable("Kafka failed recently; retry shortly")
        if self._failing_until:
            if self._probing:
                raise KafkaUnavailable("Kafka failed recently; a probe is in flight")
            self._probing = probe = True
        try:
            await asyncio.wait_for(self._send_all(records), self._timeout_s)
        except SIZE_REFUSALS as exc:
            raise RecordTooLarge(-1, sum(len(r.value) for r in records)) from exc
        except (TimeoutError, KafkaError, OSError, RuntimeError) as exc:
            producer = self._aiokafka_producer()
            if producer is not None:
                renew_producer_identity(producer, exc)  # else every later write fails the same way
            self._failing_until = time.monotonic() + self._breaker_s
            raise KafkaUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from exc
        else:
            self._failing_until = 0.0
        finally:
            if probe:
                self._probing = False

    def _aiokafka_producer(self) -> AIOKafkaProducer | None:
        """The started broker's own aiokafka producer (same acks=all/idempotent settings)."""
        return aiokafka_producer(self._broker)

    async def _send_all(self, records: Sequence[OutRecord]) -> None:
        producer = self._aiokafka_producer()
        if producer is None:  # e.g. FastStream's in-memory test broker
            futures = [
                await self._broker.publish(r.value, r.topic, key=r.key, headers=r.headers, no_confirm=True)
                for r in records
            ]
            await asyncio.gather(*futures)
            return
        # Hot path (ADR 0010): straight to the producer, one trace context for the whole request
        # instead of FastStream's per-record middleware span.
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        trace_headers = [(k, v.encode()) for k, v in carrier.items()]
        groups: dict[tuple[str, bytes], list[OutRecord]] = {}
        for r in records:
            groups.setdefault((r.topic, r.key), []).append(r)
        futures = []
        for (topic, key), group in groups.items():
            if len(group) == 1:
                r = group[0]
                headers = [(k, v.encode()) for k, v in r.headers.items()] + trace_headers
                futures.append(await producer.send(topic, r.value, key=key, headers=headers))
            else:
                futures += await self._send_as_batches(producer, topic, key, group, trace_headers)
        await asyncio.gather(*futures)

    async def _send_as_batches(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        key: bytes,
        group: list[OutRecord],
        trace_headers: list[tuple[str, bytes]],
    ) -> list[asyncio.Future[Any]]:
        """Records with one key share a partition: hand them over as whole batches (far cheaper
        per record than one send() each); the partition is the one send() would choose."""
        partitions = sorted(await producer.partitions_for(topic))
        partition = self._partitioner(key, partitions, partitions)
        futures = []
        batch = producer.create_batch()
        for r in group:
            headers = [(k, v.encode()) for k, v in r.headers.items()] + trace_headers
            if batch.append(key=key, value=r.value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=r.value, timestamp=None, headers=headers) is None:
                    raise MessageSizeTooLargeError("record larger than a producer batch")
        futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures
