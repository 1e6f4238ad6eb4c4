"""Group commit of the sender's message rows.

Each request's row is written twice around its own Cloud API call: ``sending`` just before the
call, its outcome just after (docs/adr/0030-sender-exactly-once.md). Concurrent calls' rows are
written together: while one statement runs, the rows that arrive wait and go in the next one, so
the statements per send stay few without holding a request longer than one database round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

from parley_common.deadletter import is_transient

from parley_sender.store import MessageRow

log = logging.getLogger("parley.sender.journal")

# Stores a group; returns the message ids of rows it refused as claims another process holds.
Write = Callable[[Sequence[MessageRow], Any], Awaitable[Collection[str]]]


class NotClaimed(Exception):
    """The row was a claim (a 'sending' row) and another process holds the request."""


@contextlib.asynccontextmanager
async def _no_connection() -> AsyncIterator[None]:
    yield None


class RowJournal:
    """``write(rows, connection)`` stores a group and returns the ids of the rows that lost their
    claim (their futures fail with :class:`NotClaimed`); ``connect()`` lends a connection for as
    long as rows keep coming (one pool checkout per busy spell, not per group)."""

    def __init__(
        self,
        write: Write,
        *,
        connect: Callable[[], contextlib.AbstractAsyncContextManager[Any]] = _no_connection,
        max_rows: int = 500,
    ) -> None:
        self._write = write
        self._connect = connect
        self._max_rows = max_rows
        self._pending: list[tuple[MessageRow, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, row: MessageRow) -> None:
        """Returns once ``row`` is durable; raises what its write raised (a row PostgreSQL refuses
        fails alone, not its group)."""
        await self.submit(row)

    def submit(self, row: MessageRow) -> asyncio.Future[None]:
        """Queue ``row``; the future is done once it is durable (or its write failed)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="sender-journal")
        return fut

    async def _flush(self) -> None:
        try:
            # Rows may arrive while the connection is being returned: look again before ending
            # (this task is the only one that writes; no await between the last look and the end).
            while self._pending:
                async with self._connect() as conn:
                    await self._drain(conn)
        except asyncio.CancelledError:  # stopping: nobody may wait for a write that will not come
            for _, fut in self._pending:
                if not fut.done():
                    fut.cancel()
            self._pending.clear()
            raise
        except Exception as exc:  # no connection: every waiting row fails (the callers retry)
            for _, fut in self._pending:
                if not fut.done():
                    fut.set_exception(exc)
            self._pending.clear()

    async def _drain(self, conn: Any) -> None:
        while self._pending:
            group = self._pending[: self._max_rows]
            del self._pending[: self._max_rows]
            try:
                lost = await self._write([row for row, _ in group], conn)
            except asyncio.CancelledError:
                for _, fut in group:
                    if not fut.done():
                        fut.cancel()
                raise
            except Exception as exc:
                if is_transient(exc):  # the connection is gone: fail these, a later flush reconnects
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    raise
                if len(group) == 1:
                    if not group[0][1].done():
                        group[0][1].set_exception(exc)
                    continue
                await self._one_by_one(group, conn)
                continue
            for row, fut in group:
                _settle(fut, row, lost)

    async def _one_by_one(self, group: list[tuple[MessageRow, asyncio.Future[None]]], conn: Any) -> None:
        """A group refused as a whole: find the row(s) at fault, write the others."""
        for row, fut in group:
            try:
                lost = await self._write([row], conn)
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                _settle(fut, row, lost)


def _settle(fut: asyncio.Future[None], row: MessageRow, lost: Collection[str]) -> None:
    if fut.done():
        return
    if row.message_id in lost:
        fut.set_exception(NotClaimed(row.message_id))
    else:
        fut.set_result(None)
