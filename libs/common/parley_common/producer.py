"""Parley's one Kafka producer: a long-lived aiokafka producer that every service writes through.

Every record Parley writes goes through one :class:`RecordProducer` per process (``rt.producer``):
events, dead letters, consent changes and notices alike; the FastStream broker only consumes.

Guarantees (the same for every service, ADR 0005): ``acks="all"`` with the idempotent producer
(no record lost or written twice by the producer's own retries), lz4 compression, batches up to
256 KiB, requests up to :data:`parley_common.broker.MAX_REQUEST_BYTES`, and the Kafka transport
(TLS, SASL) of the settings (ADR 0106). Only the linger differs per service (ingest measured 0 ms
as best for its request/response path, ADR 0010; the consumers batch anyway and use 5 ms).

:meth:`RecordProducer.send` hands a list of records over without waiting and returns one future
per record; :meth:`RecordProducer.send_all` returns once Kafka acknowledged them all. Records are
grouped by topic partition in input order (the key decides the partition, as aiokafka's own
``send`` would: murmur2 over all partitions), so the records of one key keep their order. A
partition's group of several records is handed over as whole record batches (far cheaper per
record than one ``send`` each, ADR 0033); a lone record goes through ``send`` so that it joins the
batch other callers are filling for that partition (aiokafka drains one batch per partition per
request, so many one-record batches would each wait their turn).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, OutOfOrderSequenceNumber, UnknownProducerId
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.transaction_manager import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, PidAndEpoch
from opentelemetry import propagate

from parley_common.broker import PRODUCER_SETTINGS, kafka_client_options
from parley_common.settings import CommonSettings

log = logging.getLogger("parley.producer")

Headers = Sequence[tuple[str, bytes]]
JSON_HEADERS: Headers = (("content-type", b"application/json"),)

_MAX_CACHED_KEYS = 100_000  # keys are phone number ids and app ids: a bounded set in practice


class Record(NamedTuple):
    """One record to write: its topic, key (the partition), value and headers."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers = ()


class ProducerNotStarted(RuntimeError):
    pass


def trace_headers() -> Headers:
    """The current span's trace context (W3C ``traceparent``, ``tracestate``) as record headers,
    so that whoever consumes the record continues the trace it was written in (none: empty)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


#: The broker's answers when an idempotent producer's sequence numbers or identity no longer match
#: what it kept for that producer id (after a broker restart, for one). aiokafka fails the batch and
#: every later one the same way, for good (aio-libs/aiokafka#1017); the Java client bumps its epoch.
SEQUENCE_DESYNC = (OutOfOrderSequenceNumber, UnknownProducerId)


def renew_producer_identity(producer: AIOKafkaProducer, exc: BaseException) -> bool:
    """After a sequence desync (``exc`` or its cause), make the idempotent ``producer`` ask the
    broker for a new producer id, with sequence numbers from zero, before its next batch (what the
    Java producer does). The batch that failed was not written; its caller retries it, so at most
    that batch is written twice, which every consumer's event-id dedupe absorbs. True if renewed."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, SEQUENCE_DESYNC):
        seen = seen.__cause__ or seen.__context__
    txn = getattr(producer, "_txn_manager", None)
    if seen is None or txn is None or txn.transactional_id is not None:
        return False
    txn._pid_and_epoch = PidAndEpoch(NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
    txn._pid_waiter = asyncio.get_running_loop().create_future()
    txn._sequence_numbers.clear()
    log.warning("Kafka producer out of sequence with the broker; renewing its producer id",
                extra={"error_type": type(seen).__name__})
    return True


def producer_options(settings: CommonSettings, *, service: str, linger_ms: int = 5) -> dict[str, Any]:
    """aiokafka's producer arguments: Parley's producer settings and the Kafka transport."""
    return {
        **PRODUCER_SETTINGS,
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": f"parley-{service}",
        "linger_ms": linger_ms,
        **kafka_client_options(settings),
    }


class RecordProducer:
    """Created unstarted (aiokafka binds to the running loop): ``await start()`` in the lifespan."""

    def __init__(self, settings: CommonSettings, *, service: str, linger_ms: int = 5) -> None:
        self._options = producer_options(settings, service=service, linger_ms=linger_ms)
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[tuple[str, bytes, int], int] = {}

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._options)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def send_all(self, records: Sequence[Record], *, headers: Headers = ()) -> None:
        """Return once Kafka acknowledged every record (``headers`` are added to each)."""
        futures = await self.send(records, headers=headers)
        if futures:
            try:
                await asyncio.gather(*futures)
            except KafkaError as exc:
                self.renew_after(exc)
                raise

    def renew_after(self, exc: BaseException) -> bool:
        """After the broker answered out of sequence (``exc`` or its cause), ask it for a new
        producer id before the next batch, else every later batch fails the same way
        (:func:`renew_producer_identity`). For callers that gather the futures of
        :meth:`send` themselves; :meth:`send_all` does it. True if renewed."""
        return self._producer is not None and renew_producer_identity(self._producer, exc)

    async def send(self, records: Sequence[Record], *, headers: Headers = ()) -> list[asyncio.Future[Any]]:
        """Hand every record over without waiting; one future per record, in input order (the
        records of one record batch share its future: they are acknowledged together)."""
        producer = self._producer
        if producer is None:
            raise ProducerNotStarted("the Kafka producer is not started")
        groups: dict[tuple[str, int], list[int]] = {}
        partitions: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault((r.topic, await self._partition(producer, r, partitions)), []).append(i)
        futures: list[asyncio.Future[Any] | None] = [None] * len(records)
        for (topic, partition), indexes in groups.items():
            if len(indexes) == 1:
                r = records[indexes[0]]
                futures[indexes[0]] = await producer.send(
                    topic, r.value, key=r.key, partition=partition, headers=[*r.headers, *headers])
                continue
            for batch, members in self._batches(producer, records, indexes, headers):
                future = await producer.send_batch(batch, topic, partition=partition)
                for i in members:
                    futures[i] = future
        return [f for f in futures if f is not None]

    @staticmethod
    def _batches(
        producer: AIOKafkaProducer, records: Sequence[Record], indexes: list[int], headers: Headers
    ) -> list[tuple[Any, list[int]]]:
        """The records at ``indexes`` as full record batches, in order."""
        out: list[tuple[Any, list[int]]] = []
        batch, members = producer.create_batch(), list[int]()
        for i in indexes:
            r = records[i]
            record_headers = [*r.headers, *headers]
            if batch.append(key=r.key, value=r.value, timestamp=None, headers=record_headers) is None:
                out.append((batch, members))
                batch, members = producer.create_batch(), []
                if batch.append(key=r.key, value=r.value, timestamp=None, headers=record_headers) is None:
                    raise MessageSizeTooLargeError("a record larger than a producer batch")
            members.append(i)
        out.append((batch, members))
        for b, _ in out:
            b.close()
        return out

    async def _partition(self, producer: AIOKafkaProducer, r: Record, partitions: dict[str, list[int]]) -> int:
        """The partition aiokafka's ``send`` would choose for the key (murmur2 once per topic,
        key and partition count)."""
        known = partitions.get(r.topic)
        if known is None:
            known = partitions[r.topic] = sorted(await producer.partitions_for(r.topic))
        cache_key = (r.topic, r.key, len(known))
        partition = self._partition_of.get(cache_key)
        if partition is None:
            partition = self._partitioner(r.key, known, known)
            if len(self._partition_of) >= _MAX_CACHED_KEYS:
                self._partition_of.clear()
            self._partition_of[cache_key] = partition
        return partition
