"""Kafka subscribers of the sender: decode, call the core, perform effects.

- ``wa.messages.out`` and ``wa.messages.out.retry`` (group ``parley-sender``): send requests, by
  the sender's own per-partition consumer (:mod:`parley_sender.consuming`), not by FastStream.
- ``wa.messages.in`` (group ``parley-sender-windows``): the windows, in event time.
- ``wa.statuses`` (group ``parley-sender-statuses``): message states forward; opt-outs where the
  error table says a failure means one (131050); in-doubt sends resolved by the callback data the
  sender sent (the request's message id).
- ``wa.account.events`` (group ``parley-sender-accounts``): template status, quality and
  category; user preferences; consent changes.

Every subscriber consumes batches (one database round trip per batch, not per record) and
commits only after its effects are durable. An undecodable record, or one holding what PostgreSQL
cannot store, goes to the dead-letter topic and never blocks its partition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson
from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from parley_common.broker import CONSUMER_DEFAULTS
from parley_common.contracts import (
    AccountEvent,
    ConsentChange,
    ContactMerged,
    Event,
    InboundMessage,
    MessageStatus,
    believable_time,
    from_unix,
)
from parley_common.deadletter import ConsumerGuard, raw_records
from parley_common.topics import ACCOUNT_EVENTS, MESSAGES_IN, STATUSES, consumer_group

from parley_sender.contact_merges import as_kept, fold_contacts
from parley_sender.delivery import Sender
from parley_sender.domain.governor import reported_messaging_limit, reported_throughput
from parley_sender.domain.outcomes import stops_consent
from parley_sender.domain.standing import reported_quality, reports_coexistence, template_change
from parley_sender.domain.storable import UnstorableRecord, unstorable_reason
from parley_sender.domain.windows import ConversationWindows
from parley_sender.effects import SERVICE
from parley_sender.observed import number_of, observe_number_health

log = logging.getLogger("parley.sender.handlers")

# Inbound types that are not a customer writing (they do not open a window).
NOT_FROM_CUSTOMER = frozenset({"system"})


E = TypeVar("E", bound=Event)


def _account_event(raw: bytes) -> AccountEvent | ConsentChange | ContactMerged:
    data = orjson.loads(raw)
    if isinstance(data, dict) and data.get("kind") == "consent":
        return ConsentChange.model_validate(data)
    if isinstance(data, dict) and data.get("kind") == "contact_merged":
        return ContactMerged.model_validate(data)
    return AccountEvent.model_validate(data)


async def _decode(
    guard: ConsumerGuard, sender: Sender, records: Sequence[ConsumerRecord[Any, Any]], parse: Callable[[bytes], E]
) -> list[E]:
    """The records' events that are bound to a tenant owning their number; an undecodable or
    unbound record (``TenantDirectory.resolve``, ADR 0100) is dead-lettered with the reason, never
    acted on."""
    directory = sender.directory()

    def decode(rec: ConsumerRecord[Any, Any]) -> E:
        value = rec.value or b""
        reason = unstorable_reason(value)
        if reason is not None:  # PostgreSQL would refuse it on every try: never retried forever
            raise UnstorableRecord(f"a value PostgreSQL cannot store: {reason}")
        event = parse(value)
        directory.resolve(event.tenant_id, event.phone_number_id)
        return event

    return await guard.decoded(records, decode)


def register(broker: KafkaBroker, sender: Sender, *, not_ready: set[str] | None = None) -> dict[str, ConsumerGuard]:
    """The three subscribers on ``broker``, each under a failure guard (parley_common.deadletter,
    ADR 0075): an unreachable database is retried with backoff (``not_ready`` lists the consumer
    meanwhile), a record the database refuses is dead-lettered alone, through the sender's
    producer. Returns the guards, by consumer."""
    s = sender.settings
    batch: dict[str, Any] = {
        "max_records": s.batch_max_records,
        "batch_timeout_ms": s.batch_timeout_ms,
        **CONSUMER_DEFAULTS,
    }
    guards = {name: ConsumerGuard(sender.effects.producer, service=SERVICE, consumer=f"sender:{name}",
                                  not_ready=not_ready)
              for name in ("windows", "statuses", "accounts")}

    async def windows(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await track_windows(sender, await _decode(guards["windows"], sender, records,
                                                  InboundMessage.model_validate_json))

    async def statuses(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await track_statuses(sender, await _decode(guards["statuses"], sender, records,
                                                   MessageStatus.model_validate_json))

    async def accounts(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        events = await _decode(guards["accounts"], sender, records, _account_event)
        await track_account_events(sender, events)
        reported = [e for e in events if not isinstance(e, ContactMerged)]
        observe_number_health(sender.metrics, reported, sender.directory())

    @broker.subscriber(MESSAGES_IN.name, group_id=consumer_group("parley-sender-windows"), batch=True, **batch)
    async def on_inbound(msg: KafkaMessage) -> None:
        await guards["windows"].run(raw_records(msg), windows)

    @broker.subscriber(STATUSES.name, group_id=consumer_group("parley-sender-statuses"), batch=True, **batch)
    async def on_statuses(msg: KafkaMessage) -> None:
        await guards["statuses"].run(raw_records(msg), statuses)

    @broker.subscriber(ACCOUNT_EVENTS.name, group_id=consumer_group("parley-sender-accounts"), batch=True, **batch)
    async def on_account_events(msg: KafkaMessage) -> None:
        await guards["accounts"].run(raw_records(msg), accounts)

    return guards


async def track_windows(sender: Sender, inbound: Sequence[InboundMessage]) -> None:
    inbound = [m for m in inbound if m.type not in NOT_FROM_CUSTOMER]
    if not inbound:
        return
    inbound = await as_kept(sender.store.pool, inbound)  # stamped before a merge (ADR 0117)
    by_key: dict[tuple[str, str], list[InboundMessage]] = {}
    # event_time: a message dated in the future does not hold a window open until then
    for m in sorted(inbound, key=lambda m: m.event_time):
        by_key.setdefault((m.phone_number_id, m.customer_id), []).append(m)

    def observe(key: tuple[str, str], windows: ConversationWindows) -> tuple[ConversationWindows, str | None]:
        wamid = None
        for m in by_key[key]:
            after = windows.observe_inbound(m.event_time, from_referral=m.referral is not None)
            if after.csw.last_inbound_at != windows.csw.last_inbound_at:
                wamid = m.wamid
            windows = after
        return windows, wamid

    # Windows first, then the wamids: the send path relies on this order (Sender._send_all).
    await sender.store.change_windows(by_key, observe)
    await sender.store.record_inbound_refs(
        [(m.wamid, m.phone_number_id, m.customer_id, m.event_time) for m in inbound]
    )


async def track_statuses(sender: Sender, statuses: Sequence[MessageStatus]) -> None:
    if not statuses:
        return
    await sender.store.record_statuses(statuses)
    directory = sender.directory()
    resolved = []
    for st in statuses:
        if st.biz_opaque_callback_data and st.status in ("sent", "delivered", "read", "failed"):
            try:
                row = await sender.store.resolve_in_doubt(st.phone_number_id, st.biz_opaque_callback_data, st.wamid)
            except asyncpg.UniqueViolationError:
                row = None  # another status (or the sweep) gave that wamid to the message first
            if row is not None:
                resolved.append(row)
        stop_code = stops_consent([e.code for e in st.errors]) if st.status == "failed" else None
        if stop_code is not None:
            tenant = directory.bound_tenant(st.tenant_id, st.phone_number_id)
            customer = st.customer_id
            if tenant is not None and customer:
                await sender.effects.stop_marketing(
                    tenant.tenant_id, st.phone_number_id, customer, f"error_{stop_code}", st.event_id
                )
    await sender.effects.publish_results(resolved)


# Events that report the portfolio's messaging limit (docs/adr/0115-portfolio-messaging-limit.md).
LIMIT_KINDS = frozenset({"business_capability_update", "phone_number_quality_update", "account_update"})
TEMPLATE_KINDS = frozenset(
    {"message_template_status_update", "message_template_quality_update", "template_category_update"}
)


async def track_account_events(
    sender: Sender, events: Sequence[AccountEvent | ConsentChange | ContactMerged]
) -> None:
    directory = sender.directory()
    touched: set[str] = set()
    for ev in events:
        # the event's own tenant (bound where it entered; _decode dropped unbound ones), never
        # the owner of its WABA or number looked up again
        tenant = directory.bound_tenant(ev.tenant_id, ev.phone_number_id)
        if tenant is None:
            continue
        tid = tenant.tenant_id
        if isinstance(ev, ContactMerged):
            # one person under two keys: their state moves to the kept contact (ADR 0117)
            numbers = sorted(tenant.phone_number_ids)
            await fold_contacts(sender.store.pool, tid, numbers, ev.contact_id, ev.absorbed)
            continue
        v = ev.value if isinstance(ev, AccountEvent) else {}
        if isinstance(ev, AccountEvent) and (mps := reported_throughput(ev.kind, v)) is not None:
            number = number_of(ev, directory)
            if number is not None:
                await sender.store.set_throughput(number, mps, ev.occurred_at)
                await sender.reload_throughput(force=True)
        if isinstance(ev, AccountEvent) and (quality := reported_quality(ev.kind, v)) is not None:
            number = number_of(ev, directory)
            if number is not None:  # docs/adr/0121-quality-acts-on-sending.md
                await sender.number_standings.record_quality(number, quality, ev.occurred_at)
                await sender.reload_throughput(force=True)
        if isinstance(ev, AccountEvent) and reports_coexistence(ev.kind):
            number = number_of(ev, directory)
            if number is not None and number not in sender.coexistence:
                await sender.number_standings.record_coexistence(number, ev.occurred_at)
                await sender.reload_throughput(force=True)
        if isinstance(ev, AccountEvent) and ev.kind in LIMIT_KINDS:
            reported = reported_messaging_limit(v.get("max_daily_conversations_per_business"))
            if reported is not None:
                await sender.store.set_reported_limit(tid, reported, ev.occurred_at)
        if isinstance(ev, AccountEvent) and ev.kind in TEMPLATE_KINDS:
            changes = template_change(ev.kind, v)
            if changes:
                tid_str = str(v["message_template_id"]) if v.get("message_template_id") is not None else None
                n = await sender.store.update_template(
                    tid,
                    template_id=tid_str,
                    name=v.get("message_template_name"),
                    language=v.get("message_template_language"),
                    **changes,
                )
                if n == 0:
                    log.info(
                        "template event for a template not in the catalogue; run templates sync",
                        extra={"tenant_id": tid, "kind": ev.kind},
                    )
                touched.add(tid)
        elif isinstance(ev, ConsentChange):
            if ev.category == "marketing":
                await sender.store.apply_consent(tid, ev.customer_id, ev.action, ev.event_time, ev.source)
        elif ev.kind == "user_preferences":
            for customer, action, at in _user_preferences(v):
                await sender.store.apply_consent(
                    tid, ev.contacts.get(customer, customer), action, believable_time(at, ev.received_at),
                    "user_preferences",
                )
    for tid in touched:
        sender.invalidate_catalogue(tid)


def _user_preferences(value: dict[str, Any]) -> list[tuple[str, str, datetime]]:
    """(customer, stop|resume, when) from a ``user_preferences`` webhook value."""
    out = []
    for pref in value.get("user_preferences") or []:
        if str(pref.get("category", "")).lower() != "marketing_messages":
            continue
        action = str(pref.get("value", "")).lower()
        customer = pref.get("wa_id") or pref.get("user_id")
        if action in ("stop", "resume") and customer:
            out.append((str(customer), action, from_unix(pref.get("timestamp"))))
    return out
