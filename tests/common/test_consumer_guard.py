"""The shared failure handling of every consumer (parley_common.deadletter), without infrastructure."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from parley_common.contracts import DeadLetter, InboundMessage
from parley_common.deadletter import Backoff, ConsumerGuard, TransientFailure, classify, failure_reason
from parley_common.producer import Record
from parley_common.topics import DEAD_LETTERS
from pydantic import ValidationError


class FakeProducer:
    """The service's producer as the guard writes dead letters through it (``send_all``)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.published: list[DeadLetter] = []
        self.records: list[Record] = []
        self.fail_first = fail_first

    async def send_all(self, records: list[Record], *, headers: Any = ()) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise KafkaConnectionError("broker away")
        self.records.extend(records)
        self.published.extend(DeadLetter.model_validate_json(r.value) for r in records)


def _rec(value: bytes, offset: int, partition: int = 0) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(topic="t", partition=partition, offset=offset, timestamp=0, timestamp_type=0,
                          key=b"k", value=value, checksum=None, serialized_key_size=1,
                          serialized_value_size=len(value), headers=())


def _pg_error(cls: type[asyncpg.PostgresError], **fields: str) -> asyncpg.PostgresError:
    exc = cls("invalid byte sequence for encoding \"UTF8\": 0x00")
    for k, v in fields.items():
        setattr(exc, k, v)
    return exc


def _guard(producer: FakeProducer, **kw: Any) -> tuple[ConsumerGuard, list[tuple[float, set[str]]]]:
    slept: list[tuple[float, set[str]]] = []
    not_ready: set[str] = set()

    async def sleep(delay: float) -> None:
        slept.append((delay, set(not_ready)))  # readiness as it was while backing off

    guard = ConsumerGuard(producer, service="svc", consumer="svc:t", not_ready=not_ready, sleep=sleep,  # type: ignore[arg-type]
                          rng=lambda: 0.5, **kw)
    return guard, slept


@pytest.mark.parametrize(("exc", "expected"), [
    (ConnectionRefusedError(), "transient"),
    (TimeoutError(), "transient"),
    (asyncpg.ConnectionDoesNotExistError("closed"), "transient"),
    (asyncpg.exceptions.AdminShutdownError("shutdown"), "transient"),
    (asyncpg.TooManyConnectionsError("too many"), "transient"),
    (asyncpg.SerializationError("conflict"), "transient"),
    (KafkaConnectionError("down"), "transient"),
    (asyncpg.exceptions.CharacterNotInRepertoireError("0x00"), "permanent"),
    (asyncpg.UniqueViolationError("dup"), "permanent"),
    (asyncpg.exceptions.NumericValueOutOfRangeError("range"), "permanent"),
    (MessageSizeTooLargeError(), "permanent"),
    (KeyError("wamid"), "permanent"),
    (ValueError("bad"), "permanent"),
])
def test_failures_are_classified_per_record(exc: BaseException, expected: str) -> None:
    assert classify(exc) == expected


async def test_transient_failures_back_off_exponentially_with_readiness_false_and_never_spin() -> None:
    guard, slept = _guard(FakeProducer(), backoff=Backoff(base_s=0.1, max_s=0.5))
    calls: list[list[int]] = []

    async def handle(records: Any) -> None:
        calls.append([r.offset for r in records])
        if len(calls) <= 5:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

    await guard.run([_rec(b"a", 1), _rec(b"b", 2)], handle)
    assert calls == [[1, 2]] * 6  # the same batch each time, nothing split, nothing lost
    # one sleep between every two tries (no hot loop), doubling up to the cap, with jitter
    assert [round(d, 3) for d, _ in slept] == [0.075, 0.15, 0.3, 0.375, 0.375]
    assert all(ready == {"svc:t"} for _, ready in slept)
    assert guard.not_ready == set() and guard.attempts == 6 and guard.transient_failures == 5
    assert guard.dead_lettered == 0


async def test_a_permanent_failure_dead_letters_only_the_record_that_fails_alone() -> None:
    producer = FakeProducer()
    guard, slept = _guard(producer)
    applied: list[int] = []

    async def handle(records: Any) -> None:
        if any(b"\x00" in r.value for r in records):
            raise _pg_error(asyncpg.exceptions.CharacterNotInRepertoireError, column_name="wamid")
        applied.extend(r.offset for r in records)

    records = [_rec(b"good-1", 10), _rec(b"wamid.\x00poison", 11, partition=3), _rec(b"good-2", 12)]
    await guard.run(records, handle)
    assert applied == [10, 12] and slept == []
    assert guard.attempts == 5  # [10 11 12], [10], [11 12], [11] (dead-lettered), [12]
    [letter] = producer.published
    assert (letter.source_partition, letter.source_offset, letter.error_type) == (
        3, 11, "CharacterNotInRepertoireError")
    assert letter.reason == "CharacterNotInRepertoireError (SQLSTATE 22021), column_name wamid"
    assert letter.payload == "wamid.\x00poison"  # replayable as it was
    assert guard.dead_lettered == 1
    [record] = producer.records  # on the dead-letter topic, keyed as its record, naming where it came from
    assert (record.topic, record.key) == (DEAD_LETTERS.name, b"k")
    assert dict(record.headers) == {"content-type": b"application/json", "x-parley-service": b"svc",
                                    "x-parley-source-topic": b"t"}


async def test_one_poison_record_in_a_large_batch_costs_a_logarithmic_number_of_tries() -> None:
    producer = FakeProducer()
    guard, _ = _guard(producer)
    applied: list[int] = []

    async def handle(records: Any) -> None:
        if any(r.offset == 41 for r in records):
            raise asyncpg.exceptions.CharacterNotInRepertoireError("0x00")
        applied.extend(r.offset for r in records)

    await guard.run([_rec(b"v", i, partition=i % 12) for i in range(64)], handle)
    assert applied == [i for i in range(64) if i != 41]  # in order, every other record once
    assert [letter.source_offset for letter in producer.published] == [41]
    assert guard.attempts <= 1 + 2 * 6


async def test_a_lone_record_failing_permanently_is_dead_lettered_once_without_a_retry() -> None:
    producer = FakeProducer(fail_first=2)  # and the dead-letter topic is briefly unreachable
    guard, slept = _guard(producer)
    calls = 0

    async def handle(records: Any) -> None:
        nonlocal calls
        calls += 1
        raise KeyError("phone_number_id")

    await guard.run([_rec(b"{}", 5)], handle)
    assert calls == 1 and len(slept) == 2 and len(producer.published) == 1
    assert producer.published[0].reason == "KeyError: 'phone_number_id'"


async def test_after_give_back_time_the_batch_goes_back_to_the_framework_and_the_streak_carries_on() -> None:
    guard, slept = _guard(FakeProducer(), backoff=Backoff(base_s=1.0, max_s=8.0), give_back_after_s=2.5)

    async def down(records: Any) -> None:
        raise ConnectionRefusedError()

    with pytest.raises(TransientFailure):
        await guard.run([_rec(b"x", 1)], down)
    assert [d for d, _ in slept] == [0.75, 1.5]  # the third delay (3.0) would pass 2.5 s
    with pytest.raises(TransientFailure):
        await guard.run([_rec(b"x", 1)], down)  # fetched again: the streak continues, longer delays
    assert [d for d, _ in slept][2:] == []  # 6.0 s > 2.5 s: handed back at once, no hot loop either
    assert guard.not_ready == {"svc:t"}

    async def up(records: Any) -> None:
        return None

    await guard.run([_rec(b"x", 1)], up)
    assert guard.not_ready == set()


def test_reasons_name_fields_and_errors_never_values() -> None:
    with pytest.raises(ValidationError) as caught:
        InboundMessage.model_validate({"event_id": "e", "wamid": "w", "phone_number_id": "p",
                                       "occurred_at": "2026-01-01T00:00:00Z", "type": {"phone": "+8801799999999"}})
    reason = failure_reason(caught.value)
    assert reason == "ValidationError: type: Input should be a valid string"
    assert "8801799999999" in str(caught.value)  # pydantic's own text would have carried it
    pg = _pg_error(asyncpg.UniqueViolationError, constraint_name="statuses_wamid_key", table_name="statuses")
    pg.detail = "Key (wamid)=(wamid.SECRET) already exists."  # type: ignore[attr-defined]
    assert failure_reason(pg) == ("UniqueViolationError (SQLSTATE 23505), table_name statuses, "
                                  "constraint_name statuses_wamid_key")


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(base_s=0.2, max_s=30.0)
    assert [b.delay(n, lambda: 1.0) for n in (1, 2, 3, 8, 9, 50)] == [0.2, 0.4, 0.8, 25.6, 30.0, 30.0]
    assert b.delay(5000, lambda: 1.0) == 30.0  # a streak of hours of outage (2.0 ** 4999 overflowed)
    assert [b.delay(n, lambda: 0.0) for n in (1, 9)] == [0.1, 15.0]


def test_guard_is_usable_from_a_running_loop_only_when_records_exist() -> None:
    guard, _ = _guard(FakeProducer())

    async def never(records: Any) -> None:
        raise AssertionError("an empty batch calls nothing")

    asyncio.run(guard.run([], never))
    assert guard.attempts == 0


async def test_records_that_do_not_decode_are_dead_lettered_alone_and_the_rest_decoded_in_order() -> None:
    producer = FakeProducer(fail_first=1)  # Kafka away for the first dead letter: backed off, not lost
    guard, slept = _guard(producer)
    records = [_rec(b'{"n": 1}', 0), _rec(b"{not json", 1), _rec(b'{"n": 3}', 2), _rec(b"[]", 3)]

    def decode(rec: ConsumerRecord[Any, Any]) -> int:
        if rec.value == b"[]":
            InboundMessage.model_validate_json(rec.value)  # not an object: a ValidationError
        return int(orjson.loads(rec.value)["n"])

    assert await guard.decoded(records, decode) == [1, 3]
    assert [(le.source_offset, le.error_type) for le in producer.published] == [(1, "JSONDecodeError"),
                                                                             (3, "ValidationError")]
    assert guard.dead_lettered == 2 and len(slept) == 1 and not guard.not_ready


async def test_a_transient_failure_while_decoding_is_raised_for_the_guard_to_retry() -> None:
    guard, _ = _guard(FakeProducer())

    def decode(rec: ConsumerRecord[Any, Any]) -> int:
        raise asyncpg.ConnectionDoesNotExistError("closed")

    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await guard.decoded([_rec(b"{}", 0)], decode)
    assert guard.dead_lettered == 0
