"""Writing a request's records to Kafka: all at once, answered only when Kafka acknowledged all.

Every record is handed to the service's producer (:class:`parley_common.producer.RecordProducer`,
``acks=all`` with the idempotent producer) without waiting, then the acknowledgements are awaited
together, so a 50-item batch costs one round trip, not fifty.
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

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from parley_common.broker import MAX_RECORD_BYTES, record_size
from parley_common.producer import Record, RecordProducer, trace_headers

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
    def __init__(self, producer: RecordProducer, *, timeout_s: float, breaker_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._breaker_s = breaker_s
        self._failing_until = 0.0
        self._probing = False

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
            self._failing_until = time.monotonic() + self._breaker_s
            raise KafkaUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from exc
        else:
            self._failing_until = 0.0
        finally:
            if probe:
                self._probing = False

    async def _send_all(self, records: Sequence[OutRecord]) -> None:
        # Hot path (ADR 0010): one trace context for the whole request, added to every record,
        # instead of FastStream's per-record middleware span.
        await self._producer.send_all(
            [Record(r.topic, r.key, r.value, [(k, v.encode()) for k, v in r.headers.items()]) for r in records],
            headers=trace_headers())
