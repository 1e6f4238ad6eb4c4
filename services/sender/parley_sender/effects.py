"""What follows from recorded outcomes: results on wa.sends, retries on the retry topic, dead
letters, consent stops, the messaging limit's reached customers and free-entry-point starts.

Every effect is idempotent and derived from the outcome's row, so a redelivered request whose row
is already final has its effects applied again (:meth:`Effects.of_row`) without harm: results
and consent changes carry deterministic event ids, the database writes are upserts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from parley_common.contracts import ConsentChange, OutboundMessage, body_hash
from parley_common.deadletter import dead_letter_record, publish_dead_letter
from parley_common.producer import JSON_HEADERS, Record, RecordProducer, trace_headers
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_OUT, MESSAGES_OUT_RETRY, SENDS

from parley_sender.domain.outcomes import FINAL, NOT_SENT, MessageState, stops_consent
from parley_sender.results import now_utc, result_json
from parley_sender.store import MessageRow, SenderStore

log = logging.getLogger("parley.sender.effects")
SERVICE = "sender"


@dataclass
class Outcome:
    """One request's outcome and the effects still to apply."""

    row: MessageRow
    written: bool = False  # the row is durable already (written right after the call)
    publish_result: bool = True
    retry: OutboundMessage | None = None
    dead_letter_reason: str | None = None
    dead_letter_value: bytes | None = None  # the request as received, when the row cannot hold it
    consent_stop: bool = False
    reached: bool = False
    fep_started: bool = False
    released: bool = False  # not sent: its partition was revoked (or the process stopped) first
    send_span: str | None = None  # traceparent of the Cloud API call's span, for links by wamid
    pending: asyncio.Future[None] | None = None  # its row's write, queued right after the call


class Effects:
    def __init__(self, *, store: SenderStore, producer: RecordProducer) -> None:
        self.store = store
        self.producer = producer  # every record the sender writes, dead letters included

    @staticmethod
    def of_row(row: MessageRow, request: dict[str, Any] | None = None) -> Outcome:
        """The effects of a row recorded earlier (a redelivery found it final)."""
        st = MessageState(row.state)
        accepted = st is MessageState.ACCEPTED
        dead = st is MessageState.DEAD
        return Outcome(
            row,
            written=True,
            publish_result=st in FINAL,
            dead_letter_reason=(row.reason or "dead") if dead else None,
            dead_letter_value=orjson.dumps(request) if dead and request is not None else None,
            consent_stop=st is MessageState.FAILED and stops_consent([row.error_code]) is not None,
            reached=accepted and row.business_initiated,
            fep_started=accepted and row.free_window == "free_entry_point",
        )

    async def apply(self, outcomes: Sequence[Outcome]) -> None:
        """Durable when this returns (the offsets may then move past these requests)."""
        if not outcomes:
            return
        await self.store.record_outcomes([o.row for o in outcomes if not o.written])
        now = now_utc()
        reached = [
            (o.row.tenant_id, o.row.recipient, now)
            for o in outcomes
            if o.reached and o.row.tenant_id and o.row.recipient
        ]
        await self.store.record_reached(reached)
        # Places in the messaging limit held by sends that did not leave (docs/adr/0115).
        await self.store.release_reach(
            [
                (o.row.tenant_id, o.row.recipient, o.row.message_id)
                for o in outcomes
                if o.row.business_initiated and o.row.tenant_id and o.row.recipient and o.row.state in NOT_SENT
            ]
        )
        await self.store.start_free_entry_points(
            [(o.row.phone_number_id, o.row.recipient, now) for o in outcomes if o.fep_started and o.row.recipient]
        )
        records: list[Record] = []
        jobs = []
        for o in outcomes:
            key = o.row.phone_number_id.encode()
            if o.publish_result:
                records.append(Record(SENDS.name, key, result_json(o.row, o.send_span), JSON_HEADERS))
            if o.retry is not None:
                records.append(Record(MESSAGES_OUT_RETRY.name, key, o.retry.model_dump_json().encode(), JSON_HEADERS))
            if o.dead_letter_reason is not None:
                jobs.append(self.dead_letter_request(o))
            if o.consent_stop and o.row.tenant_id and o.row.recipient:
                jobs.append(
                    self.stop_marketing(
                        o.row.tenant_id,
                        o.row.phone_number_id,
                        o.row.recipient,
                        f"error_{o.row.error_code}",
                        o.row.message_id,
                    )
                )
        jobs.append(self.produce(records))
        await asyncio.gather(*jobs)

    async def produce(self, records: list[Record]) -> None:
        """Every record handed over at once, acknowledgements gathered (order kept per key)."""
        await self.producer.send_all(records)

    async def publish_results(self, rows: Sequence[MessageRow]) -> None:
        await self.produce([Record(SENDS.name, r.phone_number_id.encode(), result_json(r), JSON_HEADERS)
                            for r in rows])

    async def stop_marketing(
        self, tenant_id: str, phone_number_id: str, customer: str, source: str, source_event: str
    ) -> None:
        at = now_utc()
        await self.store.apply_consent(tenant_id, customer, "stop", at, source)
        change = ConsentChange(
            event_id=body_hash(tenant_id, customer, "stop", source_event),
            tenant_id=tenant_id,
            phone_number_id=phone_number_id,
            occurred_at=at,
            customer_id=customer,
            action="stop",
            source=source,
        )
        await self.producer.send_all(
            [Record(ACCOUNT_EVENTS.name, phone_number_id.encode(), change.model_dump_json().encode(), JSON_HEADERS)],
            headers=trace_headers())

    async def dead_letter_request(self, o: Outcome) -> None:
        row = o.row
        value = o.dead_letter_value if o.dead_letter_value is not None else orjson.dumps(row.request or {})
        letter = dead_letter_record(
            service=SERVICE,
            topic=MESSAGES_OUT.name,
            value=value,
            key=row.phone_number_id.encode(),
            exc=RuntimeError(o.dead_letter_reason or "dead"),
            attempts=row.attempt + 1,
            event_id=f"{SERVICE}:{row.message_id}",
        )
        await publish_dead_letter(self.producer, letter)
