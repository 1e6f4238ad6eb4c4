"""Every in-doubt request is resolved within a bounded time (docs/adr/0030-sender-exactly-once.md).

Each replica, every ``in_doubt_sweep_s``:

1. resolves in-doubt requests whose status webhook was recorded before they were in doubt (it
   came during the call, or while a crashed process was restarting): accepted, result published;
2. reports requests in doubt for longer than ``in_doubt_deadline_s`` - and rows left ``sending``
   that long by a process that is gone - as ``in_doubt`` on wa.sends, then records them
   ``unresolved`` (final; GET /v1/messages/{id} shows it; the tenant may send again). Results are
   published before the state changes, so a crash in between publishes them again (same event
   id). A status webhook arriving later still turns such a request into ``accepted``.

Replicas may sweep at the same time: every change is a guarded UPDATE, and results are
idempotent by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import replace

from parley_common.deadletter import is_transient

from parley_sender.delivery import Sender
from parley_sender.domain.outcomes import MessageState, backoff_s

log = logging.getLogger("parley.sender.sweeper")


class InDoubtSweeper:
    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self._task: asyncio.Task[None] | None = None

    def reason(self) -> str:
        deadline = self.sender.settings.in_doubt_deadline_s
        return (
            f"in doubt: no answer from the Cloud API and no status webhook within {deadline:g} s; "
            "it may or may not have been sent: send it again if the customer should get it"
        )

    async def sweep_once(self) -> tuple[int, int]:
        """(resolved from recorded statuses, reported in doubt)."""
        sender = self.sender
        resolved = await sender.store.resolve_from_deliveries()
        if resolved:
            await sender.effects.publish_results(resolved)
        deadline = sender.settings.in_doubt_deadline_s
        overdue = await sender.store.overdue_in_doubt(deadline)
        if not overdue:
            return len(resolved), 0
        reason = self.reason()
        await sender.effects.publish_results(
            [replace(r, state=MessageState.UNRESOLVED.value, reason=reason) for r in overdue]
        )
        marked = await sender.store.mark_unresolved([r.message_id for r in overdue], deadline, reason)
        if marked:
            log.warning("sends reported in doubt after the deadline", extra={"count": len(marked)})
        return len(resolved), len(marked)

    async def _run(self) -> None:
        failures = 0
        s = self.sender.settings
        while True:
            try:
                await self.sweep_once()
                failures = 0
                delay = s.in_doubt_sweep_s * (0.5 + random.random())  # replicas drift apart
            except Exception as exc:
                failures += 1
                log.log(
                    logging.WARNING if is_transient(exc) else logging.ERROR,
                    "in-doubt sweep failed; trying again",
                    extra={"error_type": type(exc).__name__},
                )
                delay = max(
                    s.in_doubt_sweep_s,
                    backoff_s(failures, initial_s=s.backoff_initial_s, max_s=s.backoff_max_s, jitter=random.random()),
                )
            await asyncio.sleep(delay)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sender-in-doubt-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
