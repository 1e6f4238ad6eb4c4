"""A send request read again (after a crash, a rebalance, or a replay): its recorded row alone
says what happens (:func:`domain.outcomes.on_redelivery`, docs/adr/0030-sender-exactly-once.md):
sent, its effects re-applied, re-queued at its newer attempt, skipped while in doubt, or, when the
process that recorded its call died during it, declared in doubt (or accepted, if a status webhook
already named it). Never re-sent blindly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from parley_common.contracts import OutboundMessage

from parley_sender.domain.outcomes import MessageState, Redelivery, on_redelivery
from parley_sender.effects import Effects, Outcome
from parley_sender.journal import RowJournal
from parley_sender.store import MessageRow, SenderStore

log = logging.getLogger("parley.sender")
S = MessageState


@dataclass
class Redeliveries:
    _store: Callable[[], SenderStore]  # the sender's (set once its pool is open)
    journal: RowJournal

    @property
    def store(self) -> SenderStore:
        return self._store()

    async def sort(self, msgs: dict[str, OutboundMessage]) -> tuple[list[OutboundMessage], list[Outcome]]:
        """The requests to send, and the outcomes of those whose row decided otherwise."""
        existing = await self.store.messages(list(msgs))
        to_send: list[OutboundMessage] = []
        again: list[tuple[Redelivery, OutboundMessage, MessageRow]] = []
        for m in msgs.values():
            row = existing.get(m.message_id)
            decision = on_redelivery(
                row.state if row else None, row.attempt if row else 0, m.attempt, replay=m.origin == "replay"
            )
            if decision is Redelivery.SEND:
                to_send.append(m)
            elif decision is not Redelivery.SKIP and row is not None:
                again.append((decision, m, row))
        return to_send, (await self._outcomes(again) if again else [])

    async def _outcomes(self, items: list[tuple[Redelivery, OutboundMessage, MessageRow]]) -> list[Outcome]:
        need = [row.message_id for d, _, row in items if d is Redelivery.REQUEUE or row.state == S.DEAD]
        requests = await self.store.requests(need) if need else {}
        out: list[Outcome] = []
        for decision, m, row in items:
            if decision is Redelivery.REPUBLISH:
                out.append(Effects.of_row(row, requests.get(row.message_id)))
            elif decision is Redelivery.REQUEUE:
                stored = requests.get(row.message_id)
                if stored is not None:
                    retry = OutboundMessage.model_validate(stored)
                    out.append(Outcome(row, written=True, publish_result=False, retry=retry))
            else:
                cut = await self._cut_off(m, row)
                await self.journal.write(cut.row)  # at once: the row must not go on saying "sending"
                cut.written = True
                out.append(cut)
        return out

    async def _cut_off(self, m: OutboundMessage, row: MessageRow) -> Outcome:
        """A process recorded this call as started and died before its outcome: maybe sent. Never
        re-sent; accepted if a status webhook already named it, else in doubt."""
        wamid = await self.store.delivered_wamid_for(m.phone_number_id, row.callback_data or m.message_id)
        if wamid:
            return Outcome(replace(row, state=S.ACCEPTED, wamid=wamid, reason=None))
        log.warning("send outcome unknown after a restart; held in doubt", extra={"message_id": m.message_id})
        return Outcome(
            replace(row, state=S.IN_DOUBT, reason="in doubt: the process stopped during the call"),
            publish_result=False,
        )
