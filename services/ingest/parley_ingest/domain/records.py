"""The Kafka records of one accepted webhook POST (pure: the same for live intake and replay)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from parley_common.broker import MAX_RECORD_BYTES, record_size
from parley_common.contracts import ContactMerged, DeadLetter, Event, body_hash
from parley_common.meta import NormalisedWebhook, ShapeProblem
from parley_common.topics import (
    ACCOUNT_EVENTS,
    COMMERCE,
    DEAD_LETTERS,
    MESSAGES_IN,
    STATUSES,
    WEBHOOKS_RAW,
)

from parley_ingest.domain.contact_events import identifier

JSON = "application/json"
H_APP_ID = "x-parley-app-id"
H_RECEIVED_AT = "x-parley-received-at"
H_SIGNATURE_VALID = "x-parley-signature-valid"
H_BODY_SHA256 = "x-parley-body-sha256"
H_EVENT_ID = "x-parley-event-id"
H_TENANT = "x-parley-tenant"


@dataclass(frozen=True)
class OutRecord:
    topic: str
    value: bytes
    key: bytes
    headers: dict[str, str] = field(default_factory=dict)


def raw_archive_record(raw: bytes, *, app_id: str, received_at: datetime) -> OutRecord:
    """The exact bytes of the POST, keyed by the verified app."""
    return OutRecord(
        WEBHOOKS_RAW.name,
        raw,
        app_id.encode(),
        {
            "content-type": JSON,
            H_APP_ID: app_id,
            H_RECEIVED_AT: received_at.isoformat(),
            H_SIGNATURE_VALID: "true",
            H_BODY_SHA256: hashlib.sha256(raw).hexdigest(),
        },
    )


def _event_record(topic: str, event: Event) -> OutRecord:
    headers = {"content-type": JSON, H_EVENT_ID: event.event_id}
    if event.tenant_id:
        headers[H_TENANT] = event.tenant_id
    return OutRecord(topic, event.model_dump_json().encode(), event.phone_number_id.encode(), headers)


def merge_records(merges: Sequence[ContactMerged]) -> list[OutRecord]:
    """Contacts found to be one person (docs/adr/0117-contacts.md), for every service to fold."""
    return [_event_record(ACCOUNT_EVENTS.name, m) for m in merges]


UNBOUND_ERROR = "UnboundTenant"
UNBOUND_REASON = "no tenant of the verifying Meta app owns this phone number (or WABA); not acted on"


def unbound_record(topic: str, event: Event, *, app_id: str) -> OutRecord:
    """An event of a verified webhook that no tenant of the verifying app owns, for
    wa.deadletter: kept with the reason, never published where a consumer would act on it.
    Once the registry is right, ``parley-ingest replay-raw`` re-reads it from the raw archive."""
    letter = DeadLetter(
        event_id="ingest:unbound:" + event.event_id,
        service="ingest",
        source_topic=topic,
        key=event.phone_number_id,
        reason=UNBOUND_REASON,
        error_type=UNBOUND_ERROR,
        payload=event.model_dump_json(),
        payload_encoding="utf-8",
        headers={H_APP_ID: app_id, H_RECEIVED_AT: event.received_at.isoformat()},
        failed_at=event.received_at,
    )
    return OutRecord(
        DEAD_LETTERS.name,
        letter.model_dump_json().encode(),
        event.phone_number_id.encode(),
        {"content-type": JSON, "x-parley-service": "ingest", "x-parley-source-topic": topic,
         H_EVENT_ID: letter.event_id},
    )


def event_records(normalised: NormalisedWebhook, *, app_id: str) -> list[OutRecord]:
    """Every message, status, account and commerce event, each on its topic, keyed by
    phone_number_id, stamped with the app that verified it; an event with no tenant goes to
    wa.deadletter instead (ADR 0100)."""
    # each topic name once per webhook (it reads the namespace from the environment)
    source = f"meta_app:{app_id}"
    records: list[OutRecord] = []
    by_topic: list[tuple[str, Sequence[Event]]] = [
        (MESSAGES_IN.name, normalised.messages), (STATUSES.name, normalised.statuses),
        (ACCOUNT_EVENTS.name, normalised.account_events)]
    if normalised.payments or normalised.carts:  # payment updates and carts (ADR 0110)
        by_topic += [(COMMERCE.name, normalised.payments), (COMMERCE.name, normalised.carts)]
    for topic, events in by_topic:
        for e in events:
            if e.tenant_id is None:
                records.append(unbound_record(topic, e, app_id=app_id))
            else:
                records.append(_event_record(topic, e.model_copy(update={"tenant_source": source})))
    return records


#: A dead letter copies at most this much of the offending fragment; a larger one is left to the raw
#: archive (which the letter points at), so a letter never outgrows a Kafka record.
MAX_FRAGMENT_BYTES = 64 * 1024


def problem_event_id(raw: bytes, problem: ShapeProblem) -> str:
    """Deterministic, so Meta's retries of one bad webhook give one dead-letter id."""
    return "ingest:" + body_hash(hashlib.sha256(raw).hexdigest(), problem.where)


def problem_record(raw: bytes, problem: ShapeProblem, *, app_id: str, received_at: datetime) -> OutRecord:
    """A webhook part that does not match Meta's shape, for wa.deadletter (the raw archive has
    the whole body; the record points at it by app id, receive time and body hash)."""
    body_sha = hashlib.sha256(raw).hexdigest()
    reason = f"{problem.where}: {problem.reason}"
    try:
        fragment = problem.fragment_json()
    except TypeError:  # nested deeper than JSON serialisers go (orjson: 255 levels)
        reason += "; the fragment (nested too deep to copy) is not copied: the raw archive holds it"
        fragment = b""
    if len(fragment) > MAX_FRAGMENT_BYTES:
        reason += f"; the fragment ({len(fragment)} bytes) is not copied: the raw archive holds it"
        fragment = b""
    item_id = problem.fragment.get("id") if isinstance(problem.fragment, dict) else None
    if not fragment and identifier(item_id):
        reason += f"; the item's id is {item_id}"  # the letter still names what it stands for
    letter = DeadLetter(
        event_id=problem_event_id(raw, problem),
        service="ingest",
        source_topic=WEBHOOKS_RAW.name,
        key=problem.key or app_id,
        reason=reason,
        error_type="WebhookShapeError",
        payload=fragment.decode("utf-8"),
        payload_encoding="utf-8",
        headers={H_APP_ID: app_id, H_RECEIVED_AT: received_at.isoformat(), H_BODY_SHA256: body_sha},
        failed_at=received_at,
    )
    return OutRecord(
        DEAD_LETTERS.name,
        letter.model_dump_json().encode(),
        (problem.key or app_id).encode(),
        {
            "content-type": JSON,
            "x-parley-service": "ingest",
            "x-parley-source-topic": WEBHOOKS_RAW.name,
            H_EVENT_ID: letter.event_id,
        },
    )


def webhook_records(
    raw: bytes, normalised: NormalisedWebhook, *, app_id: str, received_at: datetime
) -> list[OutRecord]:
    """Everything one accepted POST writes: raw bytes, every event, a dead letter per problem.

    An event too large for one Kafka record (a 3 MB body can hold a text that, as body and as
    payload, makes a 6 MB event) is a problem like any other: dead-lettered, pointing at the
    raw archive. So every record written fits, and a hostile body cannot look like an outage.
    """
    records = [raw_archive_record(raw, app_id=app_id, received_at=received_at)]
    problems = list(normalised.problems)
    wamids = {e.event_id: e.wamid for e in normalised.messages} | {e.event_id: e.wamid for e in normalised.statuses}
    for record in event_records(normalised, app_id=app_id):
        size = record_size(record.key, record.value, record.headers)
        if size <= MAX_RECORD_BYTES:
            records.append(record)
            continue
        event_id = record.headers[H_EVENT_ID]
        problems.append(ShapeProblem(
            normalised.sources.get(event_id, "$"),
            f"the event would be a {size}-byte Kafka record; the limit is {MAX_RECORD_BYTES}",
            {"id": wamids.get(event_id)}, key=record.key.decode("utf-8", "replace")))
    records += [problem_record(raw, p, app_id=app_id, received_at=received_at) for p in problems]
    return records
