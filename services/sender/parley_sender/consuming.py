"""The sender's own consumer of send requests: one worker per assigned partition, pipelined.

FastStream hands a batch subscriber one batch at a time and commits after it, so nothing is sent
while a batch's outcomes are written, and it ignores ``max_workers`` for batch subscribers
(docs/adr/0030-sender-throughput.md). Here, on raw aiokafka:

- ONE consumer (group ``parley-sender``) subscribes to ``wa.messages.out`` and
  ``wa.messages.out.retry``: one group member per process, so a process joining or leaving causes
  one rebalance, and with equal partition counts the range assignor gives partition *i* of both
  topics (the same business numbers) to the same process.
- A fetch loop hands each partition's records to that partition's :class:`PartitionWorker` and
  pauses a partition whose backlog is long (resumed when the worker has caught up).
- A worker runs its batches in order: decide, record the intents, call the Cloud API
  (:meth:`Sender.send_batch`), then records the outcomes and publishes the results
  (:meth:`Sender.finish`) *while the next batch is already being sent*; it commits the partition's
  offset only after the effects of every record up to it are durable, and in offset order.
- Revocation (rebalance) and stop close the partition's :class:`Gate`: requests still waiting for
  a rate grant are released unsent, calls already made finish, their outcomes are recorded, the
  offset of what is done is committed, then the partition is let go. The commit never passes a
  released request, so the next owner sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from parley_common.broker import kafka_client_options
from parley_common.topics import MESSAGES_OUT, MESSAGES_OUT_RETRY

from parley_sender.delivery import Batch, Sender
from parley_sender.pacing import Gate

log = logging.getLogger("parley.sender.consuming")

GROUP = "parley-sender"
RETRY_BACKOFF_MAX_S = 5.0


class PartitionWorker:
    def __init__(self, owner: SendConsumer, tp: TopicPartition) -> None:
        self.owner = owner
        self.tp = tp
        self.from_retry = tp.topic == MESSAGES_OUT_RETRY.name
        self.queue: deque[ConsumerRecord[Any, Any]] = deque()
        self.ready = asyncio.Event()
        self.gate = Gate()
        self.next_offset: int | None = None  # of the next record to accept from the fetch loop
        self.done_offset: int | None = None  # every record below it has durable effects
        self.committed: int | None = None
        self._finishing: asyncio.Task[None] | None = None
        self.task = asyncio.create_task(self._run(), name=f"sender-{tp.topic}-{tp.partition}")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "sender worker stopped unexpectedly; restarting it from its last durable offset",
                exc_info=task.exception(),
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
        sender = self.owner.sender
        while not self.gate.closed:
            await self.ready.wait()
            if self.gate.closed:
                break
            records = self._take()
            if not records:
                continue
            self.owner.maybe_resume(self)
            batch = await self._retrying(
                "send", functools.partial(sender.send_batch, records, from_retry=self.from_retry, gate=self.gate)
            )
            if batch is None:
                break
            if self._finishing is not None:  # effects and commits stay in offset order
                await self._finishing
            end = records[-1].offset + 1 if batch.release_offset is None else batch.release_offset
            self._finishing = asyncio.create_task(self._finish(batch, end))
            if batch.release_offset is not None:
                break  # the gate closed: nothing after a released request may be handled here
        if self._finishing is not None:
            await self._finishing

    async def _finish(self, batch: Batch, end: int) -> None:
        sender = self.owner.sender
        done = await self._retrying(
            "record outcomes", functools.partial(self._finish_once, sender, batch), settle=batch
        )
        if done is None:
            return
        self.done_offset = end
        await self.owner.commit(self)

    @staticmethod
    async def _finish_once(sender: Sender, batch: Batch) -> bool:
        await sender._apply(batch.outcomes)
        sender._settle(batch)
        return True

    async def _retrying(self, what: str, step: Any, settle: Batch | None = None) -> Any:
        """Run ``step`` until it succeeds (infrastructure errors: the same records, again).

        A failing *send* step is repeated only while the partition is still ours; a failing
        *record outcomes* step is repeated until it succeeds or the process gives up stopping
        (the outcomes exist only in memory: they must be written before the offset moves).
        """
        delay = 0.1
        while True:
            try:
                return await step()
            except asyncio.CancelledError:
                if settle is not None:
                    self.owner.sender._settle(settle)
                raise
            except Exception:
                log.exception("sender worker: %s failed; retrying", what, extra={"partition": self.tp.partition})
                if settle is None and self.gate.closed:
                    return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_BACKOFF_MAX_S)

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
        group_id: str = GROUP,
        topics: tuple[str, ...] | None = None,
    ) -> None:
        s = sender.settings
        self.sender = sender
        self.group_id = group_id
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
            fetch_max_wait_ms=s.batch_timeout_ms,
            **kafka_client_options(s),
        )
        consumer.subscribe(list(self.topics), listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._fetch_loop(), name="sender-fetch")

    async def _fetch_loop(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while not self._stopping:
            try:
                fetched = await consumer.getmany(timeout_ms=200, max_records=self.batch_max * 4)
            except Exception:  # KafkaError and anything unexpected: the loop must keep running
                log.exception("sender fetch failed; retrying")
                await asyncio.sleep(1.0)
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
        self.workers[tp] = PartitionWorker(self, tp)
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
