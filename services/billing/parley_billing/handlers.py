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
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.deadletter import dead_letter_record, publish_dead_letter
from parley_common.topics import MESSAGES_IN, SENDS, STATUSES
from prometheus_client import CollectorRegistry, Counter

from parley_billing.domain.facts import FactError, inbound_record, send_fact, status_fact
from parley_billing.settings import BillingSettings
from parley_billing.store import Metering

log = logging.getLogger("parley.billing")
GROUP = "parley-billing"


def register(broker: KafkaBroker, metering: Metering, settings: BillingSettings, registry: CollectorRegistry
             ) -> None:
    events = Counter("parley_billing_events", "Records metered, by topic", ["topic"], registry=registry)
    priced = Counter("parley_billing_ledger_writes", "Ledger rows written or re-priced", registry=registry)
    bad = Counter("parley_billing_bad_records", "Records dead-lettered, by topic", ["topic"], registry=registry)
    batch = {"batch": True, "max_records": settings.batch_max_records,
             "batch_timeout_ms": settings.batch_timeout_ms, **CONSUMER_DEFAULTS}

    async def decode(topic: str, bodies: list[Any], make: Callable[[dict[str, Any]], Any]) -> list[Any]:
        facts = []
        for body in bodies:
            try:
                record = orjson.loads(body) if isinstance(body, bytes | str) else body
                if not isinstance(record, dict):
                    raise FactError("record is not a JSON object")
                fact = make(record)
            except (FactError, orjson.JSONDecodeError, TypeError, KeyError) as exc:
                bad.labels(topic).inc()
                raw = body if isinstance(body, bytes) else orjson.dumps(body)
                await publish_dead_letter(broker, dead_letter_record(
                    service="billing", topic=topic, value=raw, key=None, exc=exc, attempts=1))
                continue
            if fact is not None:
                facts.append(fact)
        events.labels(topic).inc(len(bodies))
        return facts

    @broker.subscriber(STATUSES.name, group_id=GROUP, **batch)
    async def on_statuses(bodies: list[Any]) -> None:
        priced.inc(await metering.record_statuses(await decode(STATUSES.name, bodies, status_fact)))

    @broker.subscriber(SENDS.name, group_id=GROUP, **batch)
    async def on_sends(bodies: list[Any]) -> None:
        priced.inc(await metering.record_sends(await decode(SENDS.name, bodies, send_fact)))

    @broker.subscriber(MESSAGES_IN.name, group_id=GROUP, **batch)
    async def on_inbound(bodies: list[Any]) -> None:
        priced.inc(await metering.record_inbound(await decode(MESSAGES_IN.name, bodies, inbound_record)))
