"""Synthetic event streams in the contracts' JSON shape, for exactness checks and benchmarks.

A stream is a list of ``(topic, record)`` with topic one of "statuses", "sends", "inbound" and the
record a dict as the contract model would serialise it. Everything is derived from a seed.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from parley_billing.domain.facts import FactError, inbound_record, send_fact, status_fact
from parley_billing.domain.rules import rules_at
from parley_billing.store import Metering

Event = tuple[str, dict[str, Any]]

# Country calling-code prefixes of valid-looking mobile numbers per market.
PREFIXES = ("9198", "6281", "5511", "9053", "9665", "4477", "1650", "3361", "2348", "5255")
CATEGORIES = ("marketing", "utility", "authentication")


def _iso(t: datetime) -> str:
    return t.isoformat()


def generate(*, seed: int = 7, customers: int = 200, messages_per_customer: int = 5,
             numbers: Sequence[str] = ("100001", "100002"), tenant_id: str = "acme",
             start: datetime = datetime(2026, 1, 10, tzinfo=UTC), with_cbp: bool = True,
             late_start: datetime | None = None, with_bsuids: bool = False) -> list[Event]:
    """Inbound messages (some from ads), sends and statuses (sent, delivered, read; sometimes no
    delivered), spread over a few days per customer; with ``with_cbp`` a fifth of the customers
    talk before 2025-07-01; with ``late_start`` two fifths start then instead of at ``start`` (e.g.
    after 2026-10-01, where free-form replies and in-window utility templates are charged); with
    ``with_bsuids`` statuses also carry the customer's business-scoped user id, as Meta's do since 2026."""
    rnd = random.Random(seed)
    events: list[Event] = []
    for c in range(customers):
        prefix = PREFIXES[c % len(PREFIXES)]
        customer = prefix + f"{rnd.randrange(10**7):07d}"
        pnid = numbers[c % len(numbers)]
        base = start if not (with_cbp and c % 5 == 0) else datetime(2024, 9, 20, tzinfo=UTC)
        if late_start is not None and c % 5 in (1, 2):
            base = late_start
        t = base + timedelta(minutes=rnd.randrange(60 * 24 * 20))
        for m in range(messages_per_customer):
            if rnd.random() < 0.4:
                events.append(("inbound", {
                    "event_id": f"in.{c}.{m}", "wamid": f"wamid.in.{c}.{m}", "tenant_id": tenant_id,
                    "phone_number_id": pnid, "customer_wa_id": customer, "type": "text",
                    "occurred_at": _iso(t), "referral": {"source_type": "ad"} if rnd.random() < 0.2 else None}))
                t += timedelta(minutes=rnd.randrange(1, 600))
            wamid = f"wamid.out.{c}.{m}"
            template = rnd.random() < 0.7
            category = rnd.choice(CATEGORIES) if template else None
            sent = t + timedelta(seconds=rnd.randrange(1, 30))
            events.append(("sends", {
                "event_id": f"{wamid}:accepted", "message_id": f"msg.{c}.{m}", "outcome": "accepted",
                "wamid": wamid, "tenant_id": tenant_id, "phone_number_id": pnid, "recipient": customer,
                "is_template": template, "category": category, "occurred_at": _iso(t)}))
            rules = rules_at(sent)
            charged = template or rules.service_charged
            meta = {"billable": charged, "pricing_model": rules.model,
                    "type": "regular" if charged else "free_customer_service", "category": category or "service"}
            base_status = {"tenant_id": tenant_id, "phone_number_id": pnid, "waba_id": "waba-" + pnid,
                           "wamid": wamid, "recipient_id": customer}
            if with_bsuids:
                base_status["recipient_user_id"] = f"ZZ.{customer}"
            events.append(("statuses", {**base_status, "event_id": f"{wamid}:sent", "status": "sent",
                                        "occurred_at": _iso(sent), "pricing": meta}))
            delivered = sent + timedelta(seconds=rnd.randrange(1, 120))
            if rnd.random() < 0.9:
                events.append(("statuses", {**base_status, "event_id": f"{wamid}:delivered",
                                            "status": "delivered", "occurred_at": _iso(delivered),
                                            "pricing": meta}))
                read_at = delivered + timedelta(seconds=rnd.randrange(1, 3600))
                events.append(("statuses", {**base_status, "event_id": f"{wamid}:read", "status": "read",
                                            "occurred_at": _iso(read_at)}))
            elif rnd.random() < 0.7:  # delivered skipped: read only, with the pricing
                events.append(("statuses", {**base_status, "event_id": f"{wamid}:read", "status": "read",
                                            "occurred_at": _iso(delivered), "pricing": meta}))
            t += timedelta(minutes=rnd.randrange(1, 60 * 30))
    events.sort(key=lambda e: e[1]["occurred_at"])
    return events


def chaos(events: Sequence[Event], *, seed: int = 11, duplicates: float = 0.05, late: float = 0.01,
          replays: int = 2) -> list[Event]:
    """The stream replayed ``replays`` times, with ``duplicates`` extra copies, shuffled, and a
    ``late`` share of events held back to the very end (as if 30 days late: their event time is
    unchanged, they just arrive after everything else)."""
    rnd = random.Random(seed)
    out: list[Event] = []
    for _ in range(replays):
        out.extend(events)
        out.extend(rnd.sample(list(events), int(len(events) * duplicates)))
    rnd.shuffle(out)
    held = [e for e in out if rnd.random() < late]
    held_ids = {id(e) for e in held}
    return [e for e in out if id(e) not in held_ids] + held


async def feed(metering: Metering, events: Sequence[Event], *, batch: int = 5000,
               on_bad: Callable[[Event, Exception], Awaitable[None]] | None = None) -> None:
    """Meter a stream in topic batches, as the batch subscribers would."""
    pending: dict[str, list[Any]] = {"statuses": [], "sends": [], "inbound": []}

    async def flush(topic: str) -> None:
        items = pending[topic]
        pending[topic] = []
        if topic == "statuses":
            await metering.record_statuses(items)
        elif topic == "sends":
            await metering.record_sends(items)
        else:
            await metering.record_inbound(items)

    for event in events:
        topic, record = event
        try:
            fact: Any = (status_fact(record) if topic == "statuses" else
                         send_fact(record) if topic == "sends" else inbound_record(record))
        except FactError as exc:
            if on_bad is None:
                raise
            await on_bad(event, exc)
            continue
        if fact is not None:
            pending[topic].append(fact)
            if len(pending[topic]) >= batch:
                await flush(topic)
    for topic in pending:
        if pending[topic]:
            await flush(topic)
