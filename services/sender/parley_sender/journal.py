"""Group commit of the sender's message rows.

Each request's row is written twice around its own Cloud API call: ``sending`` just before the
call, its outcome just after (docs/adr/0030-sender-exactly-once.md). Concurrent calls' rows are
written together: while one statement runs, the rows that arrive wait and go in the next one, so
the statements per send stay few without holding a request longer than one database round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from parley_common.deadletter import is_transient

from parley_sender.store import MessageRow

log = logging.getLogger("parley.sender.journal")

Write = Callable[[Sequence[MessageRow]], Awaitable[None]]


class RowJournal:
    def __init__(self, write: Write, *, max_rows: int = 500) -> None:
        self._write = write
        self._max_rows = max_rows
        self._pending: list[tuple[MessageRow, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, row: MessageRow) -> None:
        """Returns once ``row`` is durable; raises what its write raised (a row PostgreSQL refuses
        fails alone, not its group)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="sender-journal")
        await fut

    async def _flush(self) -> None:
        while self._pending:
            group = self._pending[: self._max_rows]
            del self._pending[: self._max_rows]
            try:
                await self._write([row for row, _ in group])
            except asyncio.CancelledError:  # stopping: nobody may wait for a write that will not come
                for _, fut in group + self._pending:
                    if not fut.done():
                        fut.cancel()
                self._pending.clear()
                raise
            except Exception as exc:
                if is_transient(exc) or len(group) == 1:
                    for _, fut in group:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                await self._one_by_one(group)
                continue
            for _, fut in group:
                if not fut.done():
                    fut.set_result(None)

    async def _one_by_one(self, group: list[tuple[MessageRow, asyncio.Future[None]]]) -> None:
        """A group refused as a whole: find the row(s) at fault, write the others."""
        for row, fut in group:
            try:
                await self._write([row])
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(None)
