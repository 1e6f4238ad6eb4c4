"""Kafka batch subscribers: decode records into facts, meter them, commit after the DB commit.

Each subscriber takes a batch of records; the batch is metered in one database transaction and
the offsets are committed by FastStream only after the handler returned (NACK_ON_ERROR): a crash
before the commit replays the batch, which the idempotent store absorbs. Failures go through
``parley_common.deadletter.ConsumerGuard`` (ADR 0075): an unreachable database is retried with
backoff (readiness false meanwhile); a record that cannot be a fact, or that the database
refuses, goes to the dead-letter topic on its own and the rest of the batch is metered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import orjson
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.deadletter import ConsumerGuard, raw_records, undecoded
from parley_common.producer import RecordProducer
from parley_common.tenancy.directory import TenantDirectory
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_IN, SENDS, STATUSES, Topic, consumer_group
from prometheus_client import CollectorRegistry, Counter

from parley_billing.domain.facts import FactError, contact_merge, inbound_record, send_fact, status_fact
from parley_billing.domain.tiers import tier_update
from parley_billing.settings import BillingSettings
from parley_billing.store import Metering
from parley_billing.trace_links import SendSpanLinks, StatusRef, status_ref

log = logging.getLogger("parley.billing")
GROUP = "parley-billing"
Rec: TypeAlias = ConsumerRecord[Any, Any]


def register(broker: KafkaBroker, producer: RecordProducer, metering: Metering, settings: BillingSettings,
             registry: CollectorRegistry, links: SendSpanLinks | None = None, *,
             tenants: Callable[[], TenantDirectory], not_ready: set[str] | None = None) -> dict[str, ConsumerGuard]:
    """The subscribers on ``broker``, each under a failure guard that dead-letters through
    ``producer``; returns the guards by topic base name.

    ``tenants`` gives the current tenant directory: a fact is metered only for the tenant it was
    bound to where it entered Parley, and only on that tenant's number
    (``TenantDirectory.resolve``, ADR 0100); any other raises ``UnboundEvent`` and is
    dead-lettered with that reason, never billed."""
    events = Counter("parley_billing_events", "Records metered, by topic", ["topic"], registry=registry)
    priced = Counter("parley_billing_ledger_writes", "Ledger rows written or re-priced", registry=registry)
    bad = Counter("parley_billing_bad_records", "Records dead-lettered, by topic", ["topic"], registry=registry)
    batch = {"batch": True, "max_records": settings.batch_max_records,
             "batch_timeout_ms": settings.batch_timeout_ms, "decoder": undecoded, **CONSUMER_DEFAULTS}
    guards = {t.base: ConsumerGuard(producer, service="billing", consumer=f"billing:{t.base}", not_ready=not_ready)
              for t in (STATUSES, SENDS, MESSAGES_IN, ACCOUNT_EVENTS)}

    async def guarded(topic: Topic, msg: Any, handle: Callable[[Sequence[Rec]], Awaitable[None]]) -> None:
        """``handle`` of the batch's raw records under the topic's guard (ADR 0075)."""
        records = raw_records(msg)
        guard = guards[topic.base]
        dead_before = guard.dead_lettered
        await guard.run(records, handle)
        events.labels(topic.name).inc(len(records))
        if guard.dead_lettered > dead_before:
            bad.labels(topic.name).inc(guard.dead_lettered - dead_before)

    async def decode(topic: str, records: Sequence[Rec], make: Callable[[dict[str, Any]], Any],
                     seen: Callable[[dict[str, Any], Any], None] | None = None) -> list[Any]:
        """The records' values, parsed with orjson (FastStream's body decoding is skipped); a record
        that cannot be a fact raises, and the guard narrows the batch down to it. ``seen`` is
        shown each decoded record with its Kafka record (for the span links)."""
        facts = []
        directory = tenants()
        for rec in records:
            record = orjson.loads(rec.value)
            if type(record) is not dict:
                raise FactError("record is not a JSON object")
            fact = make(record)
            if fact is not None:
                tenant_id, number = record.get("tenant_id"), record.get("phone_number_id")
                directory.resolve(tenant_id if isinstance(tenant_id, str) else None,
                                  number if isinstance(number, str) else "")
                facts.append(fact)
                if seen is not None:
                    seen(record, rec)
        return facts

    @broker.subscriber(STATUSES.name, group_id=consumer_group(GROUP), **batch)
    async def on_statuses(msg: KafkaMessage) -> None:
        await guarded(STATUSES, msg, statuses)

    async def statuses(records: Sequence[Rec]) -> None:
        if links is None or not links.tracing():
            priced.inc(await metering.record_statuses(await decode(STATUSES.name, records, status_fact)))
            return
        refs: list[StatusRef] = []

        def keep(record: dict[str, Any], rec: Any) -> None:
            ref = status_ref(record, rec.headers)
            if ref is not None:
                refs.append(ref)

        facts = await decode(STATUSES.name, records, status_fact, keep)
        spans = await links.spans_of([r.wamid for r in refs])
        if not spans:
            priced.inc(await metering.record_statuses(facts))
            return
        with links.pricing(refs, spans):
            priced.inc(await metering.record_statuses(facts))
        links.record_statuses(refs, spans)

    @broker.subscriber(SENDS.name, group_id=consumer_group(GROUP), **batch)
    async def on_sends(msg: KafkaMessage) -> None:
        await guarded(SENDS, msg, sends)

    async def sends(records: Sequence[Rec]) -> None:
        send_spans: list[tuple[str, str]] = []

        def keep(record: dict[str, Any], _: Any) -> None:
            if record.get("send_span") and record.get("wamid"):
                send_spans.append((str(record["wamid"]), str(record["send_span"])))

        facts = await decode(SENDS.name, records, send_fact, keep)
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

    @broker.subscriber(MESSAGES_IN.name, group_id=consumer_group(GROUP), **batch)
    async def on_inbound(msg: KafkaMessage) -> None:
        await guarded(MESSAGES_IN, msg, inbound)

    async def inbound(records: Sequence[Rec]) -> None:
        priced.inc(await metering.record_inbound(await decode(MESSAGES_IN.name, records, inbound_record)))

    @broker.subscriber(ACCOUNT_EVENTS.name, group_id=consumer_group(GROUP), **batch)
    async def on_account_events(msg: KafkaMessage) -> None:
        await guarded(ACCOUNT_EVENTS, msg, account_events)

    async def account_events(records: Sequence[Rec]) -> None:
        # Meta's volume-tier updates and contact merges (ADR 0117) concern billing; the rest is skipped.
        await metering.record_tier_updates(await decode(ACCOUNT_EVENTS.name, records, tier_update))
        for tenant_id, kept, absorbed in await decode(ACCOUNT_EVENTS.name, records, contact_merge):
            priced.inc(await metering.fold_contacts(tenant_id, kept, absorbed))

    return guards
