"""The sender's hot-path producer: one long-lived aiokafka producer, records handed over without
waiting and their acknowledgements gathered once per batch.

FastStream's ``broker.publish`` awaits each record and runs the telemetry middlewares per record;
a batch of results goes out here in one gather instead (docs/adr/0033-sender-throughput.md). Same
producer settings as :func:`parley_common.broker.make_broker`: ``acks=all``, idempotent, lz4.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from parley_common.broker import MAX_REQUEST_BYTES, renew_producer_identity

JSON_HEADERS = [("content-type", b"application/json")]


class RecordProducer:
    def __init__(self, bootstrap: str, client_id: str = "parley-sender",
                 client_options: dict[str, Any] | None = None) -> None:
        self._bootstrap = bootstrap
        self._client_options = client_options or {}
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        # Created here, inside the running event loop (aiokafka binds to it).
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            compression_type="lz4",
            linger_ms=5,
            max_batch_size=256 * 1024,
            max_request_size=MAX_REQUEST_BYTES,
            **self._client_options,
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def send_all(self, records: Sequence[tuple[str, bytes, bytes]]) -> None:
        """(topic, key, JSON value) records; returns once the broker acknowledged every one."""
        if self._producer is None:
            raise RuntimeError("the producer is not started")
        futures = [
            await self._producer.send(topic, value, key=key, headers=JSON_HEADERS)
            for topic, key, value in records
        ]
        if futures:
            try:
                await asyncio.gather(*futures)
            except KafkaError as exc:
                renew_producer_identity(self._producer, exc)  # else every later batch fails the same way
                raise
