"""Bounded retries and the dead-letter topic, shared by every consumer.

A handler's failure is either *transient* (the database or Kafka is unreachable: raise so the
offset is not committed and the record comes again) or *permanent* for that record (bad data,
a bug): after ``max_attempts`` tries the record goes to ``wa.deadletter`` with the reason and
the offset moves on, so a poison record never blocks its partition.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import asyncpg
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from parley_common.contracts import DeadLetter
from parley_common.topics import DEAD_LETTERS

log = logging.getLogger("parley.deadletter")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


def dead_letter_record(
    *,
    service: str,
    topic: str,
    value: bytes,
    key: bytes | None,
    exc: BaseException,
    attempts: int,
    partition: int | None = None,
    offset: int | None = None,
    headers: dict[str, str] | None = None,
    event_id: str | None = None,
) -> DeadLetter:
    encoding: Literal["utf-8", "base64"]
    try:
        payload, encoding = value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(value).decode("ascii"), "base64"
    return DeadLetter(
        event_id=event_id or f"{service}:{topic}:{partition}:{offset}",
        service=service,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        key=key.decode("utf-8", "replace") if key else None,
        reason=str(exc)[:2000],
        error_type=type(exc).__name__,
        attempts=attempts,
        payload=payload,
        payload_encoding=encoding,
        headers=headers or {},
    )


async def publish_dead_letter(broker: KafkaBroker, letter: DeadLetter) -> None:
    await broker.publish(
        letter.model_dump(mode="json"),
        DEAD_LETTERS.name,
        key=(letter.key or letter.event_id).encode(),
        headers={"x-parley-service": letter.service, "x-parley-source-topic": letter.source_topic},
    )


async def with_dead_letter(
    broker: KafkaBroker,
    *,
    service: str,
    topic: str,
    value: bytes,
    key: bytes | None,
    handle: Callable[[], Awaitable[Any]],
    max_attempts: int = 3,
    partition: int | None = None,
    offset: int | None = None,
    backoff_s: float = 0.05,
) -> Any:
    """Run ``handle``; transient errors propagate (redelivery), others dead-letter after retries."""
    for attempt in range(1, max_attempts + 1):
        try:
            return await handle()
        except Exception as exc:
            if is_transient(exc):
                raise
            if attempt < max_attempts:
                await asyncio.sleep(backoff_s * attempt)
                continue
            log.warning(
                "dead-lettering record",
                extra={"service": service, "topic": topic, "partition": partition, "offset": offset,
                       "error_type": type(exc).__name__},
            )
            await publish_dead_letter(
                broker,
                dead_letter_record(service=service, topic=topic, value=value, key=key, exc=exc,
                                   attempts=attempt, partition=partition, offset=offset),
            )
            return None
    return None
