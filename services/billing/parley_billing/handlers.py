"""Kafka batch subscribers: decode records into facts, meter them, commit after the DB commit.

Each subscriber takes a batch of records; the batch is metered in one database transaction and
the offsets are committed by FastStream only after the handler returned (NACK_ON_ERROR): a crash
before the commit replays the batch, which the idempotent store absorbs. A record that cannot be
a fact goes to the dead-letter topic on its own; the rest of the batch is metered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.deadletter import dead_letter_record, publish_dead_letter
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_IN, SENDS, STATUSES
from prometheus_client import CollectorRegistry, Counter

from parley_billing.domain.facts import FactError, inbound_record, send_fact, status_fact
from parley_billing.domain.tiers import tier_update
from parley_billing.settings import BillingSettings
from parley_billing.store import Metering
from parley_billing.trace_links import SendSpanLinks, StatusRef, status_ref

log = logging.getLogger("parley.billing")
GROUP = "parley-billing"


async def _raw_batch(msg: Any) -> None:
    """FastStream's batch decoder builds a message object and JSON-decodes every record; the
    handlers read ``msg.raw_message`` themselves, so nothing is decoded here."""
    return None


def register(broker: KafkaBroker, metering: Metering, settings: BillingSettings, registry: CollectorRegistry,
             links: SendSpanLinks | None = None) -> None:
    events = Counter("parley_billing_events", "Records metered, by topic", ["topic"], registry=registry)
    priced = Counter("parley_billing_ledger_writes", "Ledger rows written or re-priced", registry=registry)
    bad = Counter("parley_billing_bad_records", "Records dead-lettered, by topic", ["topic"], registry=registry)
    batch = {"batch": True, "max_records": settings.batch_max_records,
             "batch_timeout_ms": settings.batch_timeout_ms, "decoder": _raw_batch, **CONSUMER_DEFAULTS}

    async def decode(topic: str, msg: Any, make: Callable[[dict[str, Any]], Any],
                     seen: Callable[[dict[str, Any], Any], None] | None = None) -> list[Any]:
        """The batch's raw record values, parsed with orjson (FastStream's body decoding is skipped);
        ``seen`` is shown each decoded record with its Kafka record (for the span links)."""
        raw = msg.raw_message
        records = raw if isinstance(raw, tuple) else (raw,)
        facts = []
        for rec in records:
            body = rec.value
            try:
                record = orjson.loads(body)
                if type(record) is not dict:
                    raise FactError("record is not a JSON object")
                fact = make(record)
            except (FactError, orjson.JSONDecodeError, TypeError, KeyError) as exc:
                bad.labels(topic).inc()
                await publish_dead_letter(broker, dead_letter_record(
                    service="billing", topic=topic, value=body if isinstance(body, bytes) else b"",
                    key=rec.key, exc=exc, attempts=1, partition=rec.partition, offset=rec.offset))
                continue
            if fact is not None:
                facts.append(fact)
                if seen is not None:
                    seen(record, rec)
        events.labels(topic).inc(len(records))
        return facts

    @broker.subscriber(STATUSES.name, group_id=GROUP, **batch)
    async def on_statuses(msg: KafkaMessage) -> None:
        if links is None or not links.tracing():
            priced.inc(await metering.record_statuses(await decode(STATUSES.name, msg, status_fact)))
            return
        refs: list[StatusRef] = []

        def keep(record: dict[str, Any], rec: Any) -> None:
            ref = status_ref(record, rec.headers)
            if ref is not None:
                refs.append(ref)

        facts = await decode(STATUSES.name, msg, status_fact, keep)
        spans = await links.spans_of([r.wamid for r in refs])
        if not spans:
            priced.inc(await metering.record_statuses(facts))
            return
        with links.pricing(refs, spans):
            priced.inc(await metering.record_statuses(facts))
        links.record_statuses(refs, spans)

    @broker.subscriber(SENDS.name, group_id=GROUP, **batch)
    async def on_sends(msg: KafkaMessage) -> None:
        send_spans: list[tuple[str, str]] = []

        def keep(record: dict[str, Any], _: Any) -> None:
            if record.get("send_span") and record.get("wamid"):
                send_spans.append((str(record["wamid"]), str(record["send_span"])))

        facts = await decode(SENDS.name, msg, send_fact, keep)
        if links is None or not send_spans:
            priced.inc(await metering.record_sends(facts))
            return
        await links.remember(send_spans)
        if not links.tracing():
            priced.inc(await metering.record_sends(facts))
            return
        # A send that arrives after its delivery is priced here: the pricing span links to it too.
        with links.pricing_sends(send_spans):
            priced.inc(await metering.record_sends(facts))

    @broker.subscriber(MESSAGES_IN.name, group_id=GROUP, **batch)
    async def on_inbound(msg: KafkaMessage) -> None:
        priced.inc(await metering.record_inbound(await decode(MESSAGES_IN.name, msg, inbound_record)))

    @broker.subscriber(ACCOUNT_EVENTS.name, group_id=GROUP, **batch)
    async def on_account_events(msg: KafkaMessage) -> None:
        # Only Meta's volume-tier updates concern billing; every other account event is skipped.
        await metering.record_tier_updates(await decode(ACCOUNT_EVENTS.name, msg, tier_update))
