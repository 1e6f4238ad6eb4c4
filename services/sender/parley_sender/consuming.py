"""The sender's own consumer of send requests: one worker per assigned partition, pipelined.

FastStream hands a batch subscriber one batch at a time and commits after it, so nothing is sent
while a batch's outcomes are written, and it ignores ``max_workers`` for batch subscribers
(docs/adr/0033-sender-throughput.md). Here, on raw aiokafka:

- ONE consumer (group ``parley-sender``) subscribes to ``wa.messages.out`` and
  ``wa.messages.out.retry``: one group member per process, so a process joining or leaving causes
  one rebalance, and with equal partition counts the range assignor gives partition *i* of both
  topics (the same business numbers) to the same process.
- A fetch loop hands each partition's records to that partition's :class:`PartitionWorker` and
  pauses a partition whose backlog is long (resumed when the worker has caught up).
- A worker runs its batches in order: decide and call the Cloud API, each call's row written
  around it (:meth:`Sender.send_batch`), then applies the effects (:meth:`Sender.complete`)
  *while the next batch is already being sent*; it commits the partition's offset only after the
  effects of every record up to it are durable, and in offset order.
- Failures are classified per record: a transient one (database or broker unreachable) is
  retried with exponential backoff and jitter, never in a hot loop; a permanent one (a value the
  database refuses, a record that cannot be processed) is found by handling the batch's records
  one by one, and the record at fault goes to the dead-letter topic with the reason while the
  partition moves on.
- Revocation (rebalance) and stop close the partition's :class:`Gate`: requests still waiting for
  a rate grant are released unsent, calls already made finish, their outcomes are recorded, the
  offset of what is done is committed, then the partition is let go. The commit never passes a
  released request, so the next owner sends it. What this process kept about the partition's
  business numbers (pacing, pair rates) is dropped: another process moves that state on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from parley_common.broker import kafka_client_options
from parley_common.deadletter import dead_letter_consumed, is_transient
from parley_common.topics import MESSAGES_OUT, MESSAGES_OUT_RETRY, consumer_group

from parley_sender.delivery import Batch, Sender
from parley_sender.domain.outcomes import backoff_s
from parley_sender.effects import SERVICE
from parley_sender.pacing import Gate

log = logging.getLogger("parley.sender.consuming")

GROUP = "parley-sender"
IDLE_FETCH_WAIT_MS = 500
T = TypeVar("T")


class Interrupted(Exception):
    """A batch released requests while the partition is still ours (the database could not
    record their calls): the worker starts again from the last durable offset, after a pause."""


class PartitionWorker:
    def __init__(self, owner: SendConsumer, tp: TopicPartition, *, restarts: int = 0, delay_s: float = 0.0) -> None:
        self.owner = owner
        self.tp = tp
        self.from_retry = tp.topic == MESSAGES_OUT_RETRY.name
        self.queue: deque[ConsumerRecord[Any, Any]] = deque()
        self.ready = asyncio.Event()
        self.gate = Gate()
        self.next_offset: int | None = None  # of the next record to accept from the fetch loop
        self.done_offset: int | None = None  # every record below it has durable effects
        self.committed: int | None = None
        self.numbers: set[str] = set()  # business numbers seen on this partition (record keys)
        self.restarts = restarts  # consecutive restarts after failures (for the backoff)
        self._finishing: asyncio.Task[None] | None = None
        self.task = asyncio.create_task(self._start(delay_s), name=f"sender-{tp.topic}-{tp.partition}")
        self.task.add_done_callback(self._ended)

    async def _start(self, delay_s: float) -> None:
        if delay_s > 0:  # a restart after a failure: not in a hot loop
            await asyncio.sleep(delay_s)
        await self._run()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.log(
                logging.WARNING if isinstance(exc, Interrupted) else logging.ERROR,
                "sender worker stopped; restarting it from its last durable offset",
                exc_info=None if isinstance(exc, Interrupted) else exc,
                extra={"topic": self.tp.topic, "partition": self.tp.partition},
            )
            self.owner.restart(self)

    def feed(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        if self.gate.closed:
            return
        for rec in records:
            if self.next_offset is not None and rec.offset < self.next_offset:
                continue  # fetched twice around a seek or rebalance
            self.queue.append(rec)
            self.next_offset = rec.offset + 1
        self.ready.set()

    def _take(self) -> list[ConsumerRecord[Any, Any]]:
        n = min(len(self.queue), self.owner.batch_max)
        out = [self.queue.popleft() for _ in range(n)]
        if not self.queue:
            self.ready.clear()
        return out

    async def _run(self) -> None:
        while not self.gate.closed:
            await self.ready.wait()
            if self.gate.closed:
                break
            records = self._take()
            if not records:
                continue
            self.numbers.update(r.key.decode() for r in records if r.key)
            self.owner.maybe_resume(self)
            batches = await self._send(records)
            if batches is None:
                break
            for batch, end in batches:
                if self._finishing is not None:  # effects and commits stay in offset order
                    await self._finishing
                self._finishing = asyncio.create_task(self._finish(batch, end))
                if batch.release_offset is not None:
                    await self._finishing
                    if self.gate.closed:
                        return  # nothing after a released request may be handled here
                    raise Interrupted("requests released unsent; reading again from the durable offset")
        if self._finishing is not None:
            await self._finishing

    async def _send(self, records: list[ConsumerRecord[Any, Any]]) -> list[tuple[Batch, int]] | None:
        """The batch's calls; None when the partition was let go while the database was away."""
        sender = self.owner.sender

        def send(recs: list[ConsumerRecord[Any, Any]]) -> Callable[[], Awaitable[Batch]]:
            return lambda: sender.send_batch(recs, from_retry=self.from_retry, gate=self.gate)

        try:
            batch = await self._transient_retried("send", send(records), give_up_when_closed=True)
        except Exception as exc:  # permanent: find the record at fault, one record at a time
            log.warning(
                "sender batch failed; handling its records one by one",
                extra={"partition": self.tp.partition, "error_type": type(exc).__name__},
            )
            return await self._one_by_one(records, send)
        if batch is None:
            return None
        end = records[-1].offset + 1 if batch.release_offset is None else batch.release_offset
        return [(batch, end)]

    async def _one_by_one(
        self,
        records: list[ConsumerRecord[Any, Any]],
        send: Callable[[list[ConsumerRecord[Any, Any]]], Callable[[], Awaitable[Batch]]],
    ) -> list[tuple[Batch, int]] | None:
        out: list[tuple[Batch, int]] = []
        for rec in records:
            try:
                batch = await self._transient_retried("send", send([rec]), give_up_when_closed=True)
            except Exception as exc:
                dead_letter = functools.partial(dead_letter_consumed, self.owner.sender.effects.producer, rec, exc,
                                                service=SERVICE)
                await self._transient_retried("dead-letter", dead_letter)
                out.append((Batch([], []), rec.offset + 1))
                continue
            if batch is None:
                return out or None
            out.append((batch, rec.offset + 1 if batch.release_offset is None else batch.release_offset))
            if batch.release_offset is not None:
                break
        return out

    async def _finish(self, batch: Batch, end: int) -> None:
        sender = self.owner.sender
        try:
            await self._transient_retried("apply effects", lambda: sender.complete(batch), settle=batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A permanent failure of the batch's effects: each outcome on its own, and one that
            # fails for good is logged and left (its row is recorded; its redelivery re-applies it).
            log.error(
                "sender effects failed; applying them one by one",
                extra={"partition": self.tp.partition, "error_type": type(exc).__name__},
            )
            for outcome in batch.outcomes:
                single = Batch([outcome], [])
                try:
                    await self._transient_retried("apply effects", functools.partial(sender.complete, single))
                except Exception as one:
                    log.error("sender effects of one request refused", extra={"error_type": type(one).__name__})
            sender.settle(batch)
        self.done_offset = end
        if batch.release_offset is None:
            self.restarts = 0
        await self.owner.commit(self)

    async def _transient_retried(
        self,
        what: str,
        step: Callable[[], Awaitable[T]],
        *,
        settle: Batch | None = None,
        give_up_when_closed: bool = False,
    ) -> T | None:
        """Run ``step``, repeating it after transient failures (database or broker unreachable)
        with exponential backoff and jitter; a permanent failure is raised to the caller.

        A failing *send* step is repeated only while the partition is still ours
        (``give_up_when_closed``: None then); a failing *effects* step is repeated until it
        succeeds or the process gives up stopping (the outcomes exist only in memory).
        """
        failures = 0
        s = self.owner.sender.settings
        while True:
            try:
                return await step()
            except asyncio.CancelledError:
                if settle is not None:
                    self.owner.sender.settle(settle)
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                log.warning(
                    "sender worker: %s failed (transient); retrying",
                    what,
                    extra={"partition": self.tp.partition, "error_type": type(exc).__name__, "failures": failures},
                )
                if give_up_when_closed and self.gate.closed:
                    return None
            await asyncio.sleep(
                backoff_s(failures, initial_s=s.backoff_initial_s, max_s=s.backoff_max_s, jitter=random.random())
            )

    async def close(self, timeout_s: float) -> None:
        """Stop taking records, release those still waiting, let calls made finish and record them."""
        self.gate.close()
        self.ready.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        except TimeoutError:
            log.error(
                "sender worker did not finish in time; its unrecorded sends will be in doubt",
                extra={"topic": self.tp.topic, "partition": self.tp.partition},
            )
            self.task.cancel()
            if self._finishing is not None:
                self._finishing.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        except Exception as exc:  # it had stopped on its own: what is done is committed
            log.info(
                "sender worker had stopped before its partition was released",
                extra={"partition": self.tp.partition, "error_type": type(exc).__name__},
            )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: SendConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.owner.assign(assigned)


class SendConsumer:
    def __init__(
        self,
        sender: Sender,
        *,
        group_id: str | None = None,
        topics: tuple[str, ...] | None = None,
    ) -> None:
        s = sender.settings
        self.sender = sender
        self.group_id = group_id or consumer_group(GROUP)
        self.topics = topics or (MESSAGES_OUT.name, MESSAGES_OUT_RETRY.name)
        self.batch_max = s.batch_max_records
        self.high_water = s.partition_backlog_records
        self.stop_timeout_s = s.stop_timeout_s
        self.workers: dict[TopicPartition, PartitionWorker] = {}
        self._paused: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._seeks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        s = self.sender.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=self.group_id,
            client_id="parley-sender",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=s.send_fetch_partition_bytes,
            # How long the broker may hold a fetch when it has nothing new (fetch_min_bytes=1: it
            # answers as soon as a record arrives, so this adds no latency). 20 ms made each sender
            # send ~50 fetches a second while idle: 26 ms of CPU a second against 4 ms at 500.
            fetch_max_wait_ms=IDLE_FETCH_WAIT_MS,
            **kafka_client_options(s),
        )
        consumer.subscribe(list(self.topics), listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._fetch_loop(), name="sender-fetch")

    async def _fetch_loop(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        failures = 0
        s = self.sender.settings
        while not self._stopping:
            try:
                fetched = await consumer.getmany(timeout_ms=200, max_records=self.batch_max * 4)
                failures = 0
            except Exception as exc:  # KafkaError and anything unexpected: the loop must keep running
                failures += 1
                log.warning("sender fetch failed; retrying", extra={"error_type": type(exc).__name__})
                await asyncio.sleep(
                    backoff_s(failures, initial_s=s.backoff_initial_s, max_s=s.backoff_max_s, jitter=random.random())
                )
                continue
            for tp, records in fetched.items():
                worker = self.workers.get(tp)
                if worker is None:
                    continue  # no longer ours; the next owner reads it from the committed offset
                worker.feed(records)
                if len(worker.queue) >= self.high_water and tp not in self._paused:
                    consumer.pause(tp)
                    self._paused.add(tp)

    def maybe_resume(self, worker: PartitionWorker) -> None:
        tp = worker.tp
        if tp in self._paused and len(worker.queue) < self.high_water // 2 and self._consumer is not None:
            self._paused.discard(tp)
            if tp in self._consumer.assignment():
                self._consumer.resume(tp)

    def assign(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self.workers:
                self.workers[tp] = PartitionWorker(self, tp)

    def restart(self, worker: PartitionWorker) -> None:
        """A worker that died: a fresh one re-reads the partition from what is durable."""
        tp = worker.tp
        if self._stopping or self._consumer is None or self.workers.get(tp) is not worker:
            return
        s = self.sender.settings
        restarts = worker.restarts + 1
        delay = backoff_s(restarts, initial_s=s.backoff_initial_s, max_s=s.backoff_max_s, jitter=random.random())
        fresh = self.workers[tp] = PartitionWorker(self, tp, restarts=restarts, delay_s=delay)
        fresh.numbers = worker.numbers
        fresh.next_offset = worker.done_offset
        if worker.done_offset is not None:
            self._consumer.seek(tp, worker.done_offset)
        else:
            seek = asyncio.get_running_loop().create_task(self._consumer.seek_to_committed(tp))
            self._seeks.add(seek)
            seek.add_done_callback(self._seeks.discard)
        if tp in self._paused:
            self._paused.discard(tp)
            self._consumer.resume(tp)

    async def release(self, revoked: list[TopicPartition]) -> None:
        """Revocation: finish or abandon each partition's work, commit what is done, let it go."""
        workers = [w for tp in revoked if (w := self.workers.pop(tp, None)) is not None]
        self._paused.difference_update(revoked)
        await asyncio.gather(*(w.close(self.stop_timeout_s) for w in workers))
        await asyncio.gather(*(self.commit(w) for w in workers))
        kept = set().union(*(w.numbers for w in self.workers.values()))
        self.sender.forget_numbers(set().union(*(w.numbers for w in workers)) - kept)

    async def commit(self, worker: PartitionWorker) -> None:
        offset = worker.done_offset
        if offset is None or self._consumer is None or (worker.committed or -1) >= offset:
            return
        try:
            await self._consumer.commit({worker.tp: offset})
            worker.committed = offset
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance is under way: the revocation commits what is done, or the next owner
            # re-reads and the message store turns the repeats into re-published results.
            log.warning("sender commit deferred", extra={"partition": worker.tp.partition, "error": str(exc)})

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self.release(list(self.workers))
            await self._consumer.stop()
            self._consumer = None
