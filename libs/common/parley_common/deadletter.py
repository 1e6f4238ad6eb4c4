"""What every consumer does when handling a record fails: retry it, or dead-letter it and move on.

A failure is classified per record (ADR 0075):

- **transient**: the database or Kafka is unreachable or refused for a moment (connection lost or
  refused, timeouts, shutdown, too many connections, serialization conflicts and deadlocks).
  The same records are tried again after an exponential backoff with jitter; while backing off
  the consumer is listed in ``not_ready`` (``/readyz`` answers 503) and fetches nothing, so an
  outage never turns into a hot loop. After ``give_back_after_s`` the batch is handed back to the
  framework (its offsets are not committed; it comes again) so the consumer stays in its group.
- **permanent**: anything else (a value the database refuses, such as NUL; a record that does not
  decode or validate; a shape the handler cannot process). The batch is halved and retried until
  the failing records stand alone, so only the records that fail alone go to ``wa.deadletter``, with a reason that names
  the error and its fields but never the input's values; the rest of the batch takes effect and
  the partition moves on. A dead letter is replayable onto its source topic.

Usage, in a batch subscriber (handlers are idempotent, so a record that already took effect in
a failed batch may safely take effect again)::

    guard = ConsumerGuard(rt.producer, service="billing", consumer="statuses", not_ready=rt.not_ready)

    @broker.subscriber(STATUSES.name, group_id=consumer_group(GROUP), batch=True, decoder=undecoded,
                       **CONSUMER_DEFAULTS)
    async def on_statuses(msg: KafkaMessage) -> None:
        await guard.run(raw_records(msg), meter_statuses)  # meter_statuses(records) -> None

A handler that decodes its records one by one and can go on without the ones that do not decode
(or are not bound to a tenant) uses ``await guard.decoded(records, decode)``: those are
dead-lettered alone with the reason, without halving the batch. A consumer of its own (the
sender's send requests) dead-letters a record with :func:`dead_letter_consumed`.

Dead letters are written through the service's one producer (``rt.producer``,
:class:`parley_common.producer.RecordProducer`, ADR 0005), never through the FastStream broker,
which only consumes. Its ``send_all`` renews the producer id after the broker answered out of
sequence (ADR 0077), so a dead letter (or any other record) that failed that way is written by
the guard's next try instead of failing the same way for good.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import asyncpg
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from pydantic import ValidationError

from parley_common.contracts import DeadLetter
from parley_common.producer import JSON_HEADERS, Record, RecordProducer, trace_headers
from parley_common.topics import DEAD_LETTERS

log = logging.getLogger("parley.deadletter")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # connection refused / reset, and TimeoutError
    asyncio.TimeoutError,
    KafkaError,
    asyncpg.PostgresConnectionError,  # connection lost (ConnectionDoesNotExistError, ...)
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory
)
#: Kafka refusing a record for its size is the record's fault, not an outage.
_SIZE_REFUSALS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)

Classification = Literal["transient", "permanent"]


def classify(exc: BaseException) -> Classification:
    if isinstance(exc, _SIZE_REFUSALS):
        return "permanent"
    return "transient" if isinstance(exc, TRANSIENT_ERRORS) else "permanent"


def is_transient(exc: BaseException) -> bool:
    return classify(exc) == "transient"


def failure_reason(exc: BaseException) -> str:
    """Why a record failed, without the record's values: pydantic's field paths and messages
    (not its ``input_value``), PostgreSQL's error class, SQLSTATE and the constraint, table or
    column it names (never its DETAIL, which quotes values)."""
    name = type(exc).__name__
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc'])) or '$'}: {e['msg']}" for e in exc.errors()[:10]]
        return f"{name}: {'; '.join(parts)}"[:2000]
    if isinstance(exc, asyncpg.PostgresError):
        named = [f"{attr} {getattr(exc, attr)}" for attr in ("table_name", "column_name", "constraint_name")
                 if getattr(exc, attr, None)]
        return ", ".join([f"{name} (SQLSTATE {getattr(exc, 'sqlstate', '?')})", *named])
    text = str(exc)
    return f"{name}: {text}"[:500] if text else name


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
        reason=failure_reason(exc),
        error_type=type(exc).__name__,
        attempts=attempts,
        payload=payload,
        payload_encoding=encoding,
        headers=headers or {},
    )


def raw_records(msg: Any) -> tuple[ConsumerRecord[Any, Any], ...]:
    """The aiokafka records of a FastStream message: a batch subscriber's tuple, or the one record."""
    raw = msg.raw_message
    return raw if isinstance(raw, tuple) else (raw,)


async def undecoded(msg: Any) -> None:
    """A FastStream decoder that decodes nothing: the handler reads :func:`raw_records` itself,
    so no body is JSON-decoded twice and a record that does not decode never stops the batch."""
    return None


async def publish_dead_letter(producer: RecordProducer, letter: DeadLetter) -> None:
    """``letter`` onto ``wa.deadletter``, keyed by its record's key (else its event id), with the
    current trace context; returns once Kafka acknowledged it (a failure raises)."""
    headers = (*JSON_HEADERS, ("x-parley-service", letter.service.encode()),
               ("x-parley-source-topic", letter.source_topic.encode()))
    record = Record(DEAD_LETTERS.name, (letter.key or letter.event_id).encode(), letter.model_dump_json().encode(),
                    headers)
    await producer.send_all([record], headers=trace_headers())


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with "equal jitter": the n-th consecutive delay is uniform in
    [cap/2, cap], cap = min(max_s, base_s * 2**(n-1))."""

    base_s: float = 0.2
    max_s: float = 30.0

    def delay(self, streak: int, rng: Callable[[], float] = random.random) -> float:
        # the exponent is bounded: the streak carries on across hand-backs, and 2.0 ** 1024 overflows
        cap = min(self.max_s, self.base_s * 2.0 ** min(max(streak - 1, 0), 64))
        return cap / 2 + rng() * cap / 2


class TransientFailure(RuntimeError):
    """Raised to hand a batch back to the framework after backing off for ``give_back_after_s``:
    its offsets are not committed and it is fetched again (the backoff streak carries on)."""


Handler = Callable[[Sequence[ConsumerRecord[Any, Any]]], Awaitable[Any]]
T = TypeVar("T")


async def dead_letter_consumed(producer: RecordProducer, rec: ConsumerRecord[Any, Any], exc: BaseException, *,
                               service: str, attempts: int = 1) -> None:
    """``rec``, consumed from its topic, onto ``wa.deadletter`` with the reason (logged without
    its values). The one way a consumed record becomes a dead letter; a failure to publish raises."""
    log.warning("dead-lettering a record that cannot be processed",
                extra={"service": service, "topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
                       "error_type": type(exc).__name__})
    await publish_dead_letter(producer, dead_letter_record(
        service=service, topic=rec.topic, value=rec.value or b"", key=rec.key, exc=exc, attempts=attempts,
        partition=rec.partition, offset=rec.offset))


class ConsumerGuard:
    """One consumer's failure handling (see the module doc). Counters are for metrics and tests."""

    def __init__(
        self,
        producer: RecordProducer,
        *,
        service: str,
        consumer: str,
        not_ready: set[str] | None = None,
        backoff: Backoff | None = None,
        give_back_after_s: float = 120.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.producer = producer  # what the dead letters are written through
        self.service = service
        self.consumer = consumer
        self.not_ready = not_ready if not_ready is not None else set()
        self.backoff = backoff or Backoff()
        self.give_back_after_s = give_back_after_s
        self._sleep = sleep
        self._rng = rng
        self._streak = 0
        self.attempts = 0  # calls of the handler
        self.transient_failures = 0
        self.delays: list[float] = []  # every backoff delay slept, in order
        self.dead_lettered = 0

    async def run(self, records: Sequence[ConsumerRecord[Any, Any]], handle: Handler) -> None:
        """``handle(records)``; transient failures retried after a backoff, permanent ones
        narrowed to the records that fail alone, which are dead-lettered."""
        if not records:
            return
        started = asyncio.get_running_loop().time()
        exc = await self._until_not_transient(records, handle, started)
        if exc is None:
            return
        log.warning("a batch failed permanently; narrowing it down to the records that fail alone",
                    extra={"service": self.service, "consumer": self.consumer, "records": len(records),
                           "error_type": type(exc).__name__})
        await self._narrow(records, exc, handle, started)

    async def decoded(self, records: Sequence[ConsumerRecord[Any, Any]],
                      decode: Callable[[ConsumerRecord[Any, Any]], T]) -> list[T]:
        """``decode`` of every record, in order; a record whose decoding fails for good (it does
        not parse or validate, or is bound to no tenant owning its number) is dead-lettered alone
        and left out. A transient failure raises, for :meth:`run` to retry the batch."""
        out: list[T] = []
        for rec in records:
            try:
                out.append(decode(rec))
            except Exception as exc:
                if is_transient(exc):
                    raise
                await self.dead_letter(rec, exc)
        return out

    async def dead_letter(self, rec: ConsumerRecord[Any, Any], exc: BaseException) -> None:
        """``rec`` onto ``wa.deadletter``; Kafka being unreachable meanwhile is backed off from."""
        await self._dead_letter(rec, exc, asyncio.get_running_loop().time())

    async def _narrow(self, records: Sequence[ConsumerRecord[Any, Any]], exc: Exception, handle: Handler,
                      started: float) -> None:
        """``records`` failed permanently with ``exc``: halve until the failing records stand
        alone (left half first, so records keep their order), dead-letter those."""
        if len(records) == 1:
            await self._dead_letter(records[0], exc, started)
            return
        mid = len(records) // 2
        for half in (records[:mid], records[mid:]):
            failed = await self._until_not_transient(half, handle, started)
            if failed is not None:
                await self._narrow(half, failed, handle, started)

    async def _until_not_transient(
        self, records: Sequence[ConsumerRecord[Any, Any]], handle: Handler, started: float
    ) -> Exception | None:
        """None once ``handle(records)`` succeeded; the exception of a permanent failure."""
        while True:
            self.attempts += 1
            try:
                await handle(records)
            except Exception as exc:
                if not is_transient(exc):
                    return exc
                await self._back_off(exc, started)
                continue
            self._recovered()
            return None

    async def _back_off(self, exc: BaseException, started: float) -> None:
        self._streak += 1
        self.transient_failures += 1
        self.not_ready.add(self.consumer)
        delay = self.backoff.delay(self._streak, self._rng)
        log.warning("transient failure; backing off before trying again",
                    extra={"service": self.service, "consumer": self.consumer, "error_type": type(exc).__name__,
                           "streak": self._streak, "delay_s": round(delay, 3)})
        if asyncio.get_running_loop().time() - started + delay > self.give_back_after_s:
            raise TransientFailure(f"{self.consumer}: still failing after {self._streak} tries") from exc
        self.delays.append(delay)
        await self._sleep(delay)

    def _recovered(self) -> None:
        if self._streak:
            log.info("recovered from a transient failure",
                     extra={"service": self.service, "consumer": self.consumer, "streak": self._streak})
        self._streak = 0
        self.not_ready.discard(self.consumer)

    async def _dead_letter(self, rec: ConsumerRecord[Any, Any], exc: BaseException, started: float) -> None:
        while True:
            try:
                await dead_letter_consumed(self.producer, rec, exc, service=self.service)
            except Exception as publish_exc:
                if not is_transient(publish_exc):
                    raise
                await self._back_off(publish_exc, started)
                continue
            self._recovered()
            self.dead_lettered += 1
            return
