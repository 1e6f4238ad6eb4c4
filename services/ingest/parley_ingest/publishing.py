"""Writing a request's records to Kafka: all at once, answered only when Kafka acknowledged all.

Every record is handed to the producer without waiting (``no_confirm=True`` returns the
delivery future), then the futures are awaited together, so a 50-item batch costs one round
trip, not fifty. The broker is ``acks=all`` with the idempotent producer (parley_common.broker).
If Kafka does not acknowledge within ``timeout_s`` the request fails with ``KafkaUnavailable``
(HTTP 503, Meta retries); for ``breaker_s`` afterwards requests fail at once instead of each
waiting out the timeout, then one request probes again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from parley_ingest.domain.records import OutRecord


class KafkaUnavailable(RuntimeError):
    pass


class RecordWriter:
    def __init__(self, broker: KafkaBroker, *, timeout_s: float, breaker_s: float) -> None:
        self._broker = broker
        self._timeout_s = timeout_s
        self._breaker_s = breaker_s
        self._failing_until = 0.0
        self._probing = False

    async def write_all(self, records: Sequence[OutRecord]) -> None:
        """Return once Kafka acknowledged every record; raise ``KafkaUnavailable`` otherwise."""
        if not records:
            return
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
        except (TimeoutError, KafkaError, OSError, RuntimeError) as exc:
            self._failing_until = time.monotonic() + self._breaker_s
            raise KafkaUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from exc
        else:
            self._failing_until = 0.0
        finally:
            if probe:
                self._probing = False

    async def _send_all(self, records: Sequence[OutRecord]) -> None:
        futures = []
        for r in records:
            futures.append(await self._broker.publish(
                r.value, r.topic, key=r.key, headers=r.headers, no_confirm=True))
        await asyncio.gather(*futures)
