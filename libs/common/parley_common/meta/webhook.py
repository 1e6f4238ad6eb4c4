"""Normalise one Meta webhook POST into contract events: every entry, change, message and status.

``normalise_webhook(document, received_at=..., tenants=...)`` walks every ``entry[]``, every
``changes[]`` and, for the ``messages`` field, every ``messages[]``, ``statuses[]`` and
``errors[]`` (with ``contacts[]`` joined onto the messages they describe). Other fields
(template status/quality/category, ``user_preferences``, ``account_update``, phone-number
quality, business capability, and fields Meta adds later) become one ``AccountEvent`` per change
with ``kind`` = Meta's field name.

Account fields whose value lists items (calls and call statuses, coexistence message echoes,
user preferences, app state sync) give one ``AccountEvent`` per item, with the item's own time
and an id made from what Meta sent (its id, else a hash of the item).

Unknown message types, statuses and fields are kept as they are. A sub-field of an odd type (an
integer ``conversation.expiration_timestamp``, a numeric referral ``source_id``) is normalised
when it can be and otherwise kept raw (``raw_<name>``); a missing or unreadable timestamp falls
back to the receive time. Either way the event is kept and says so in its ``notes``. What cannot
be understood at all (a message without an id, an envelope that is not Meta's shape, a string
no consumer could store) becomes a ``ShapeProblem`` naming where it is and why; the rest of the
batch is still normalised.

Event ids are deterministic (wamid, ``wamid:status``, Meta's item id, else a hash of what Meta
sent), so a duplicate delivery by Meta, or a replay of the raw archive, produces the same ids.
An id that occurs twice in one webhook is published once (the first; the repeat is listed in
``duplicates``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from parley_common.contracts import (
    AccountEvent,
    Conversation,
    InboundMessage,
    MessageContext,
    MessageStatus,
    MetaError,
    OrderCart,
    PaymentUpdate,
    Pricing,
    Referral,
    body_hash,
)
from parley_common.meta.commerce import is_payment_status, order_cart, payment_update
from parley_common.storable import unstorable_fields

WHATSAPP_OBJECT = "whatsapp_business_account"
MESSAGES_FIELD = "messages"
#: ``kind`` of the AccountEvent made from ``value.errors`` of a ``messages`` change (system,
#: app or account errors that are not about one message).
MESSAGES_ERRORS_KIND = "messages.errors"

# Keys every inbound message may carry besides its type object.
_MESSAGE_ENVELOPE_KEYS = frozenset(
    {
        "from",
        "from_user_id",
        "from_parent_user_id",
        "id",
        "timestamp",
        "type",
        "context",
        "referral",
        "errors",
        "identity",
    }
)
_MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})

#: Account fields whose value lists items, each its own event: field → the lists' keys.
ACCOUNT_ITEM_LISTS: dict[str, tuple[str, ...]] = {
    "calls": ("calls", "statuses"),
    "smb_message_echoes": ("message_echoes",),
    "user_preferences": ("user_preferences",),
    "smb_app_state_sync": ("state_sync",),
}

TIME_MISSING = "missing; occurred_at is the receive time"
TIME_UNREADABLE = "not unix seconds; occurred_at is the receive time"
NO_SENDER = "no sender (from, from_user_id or a contact): the message is its own customer"


class InvalidWebhookJson(ValueError):
    """The body is not JSON at all (HTTP 400), as opposed to JSON of an unexpected shape."""


class TenantResolver(Protocol):
    """Maps Meta's ids to a Parley tenant id (None when the number or WABA is not registered)."""

    def tenant_for(self, phone_number_id: str | None, waba_id: str | None) -> str | None: ...


class NoTenants:
    """A resolver that knows no tenant (offline tools, tests)."""

    def tenant_for(self, phone_number_id: str | None, waba_id: str | None) -> str | None:
        return None


@dataclass(frozen=True)
class MappingTenants:
    """A resolver from plain mappings: phone_number_id → tenant, WABA id → tenant."""

    numbers: Mapping[str, str] = field(default_factory=dict)
    wabas: Mapping[str, str] = field(default_factory=dict)

    def tenant_for(self, phone_number_id: str | None, waba_id: str | None) -> str | None:
        return self.numbers.get(phone_number_id or "") or self.wabas.get(waba_id or "")


@dataclass(frozen=True)
class ShapeProblem:
    """A part of a webhook that does not match Meta's shape (kept raw, reported, dead-lettered)."""

    where: str  # e.g. "entry[0].changes[1].value.messages[2]", or "$" for the whole document
    reason: str
    fragment: Any  # the offending JSON fragment
    key: str | None = None  # the phone_number_id or WABA id it concerns, when known

    def fragment_json(self) -> bytes:
        return orjson.dumps(self.fragment, default=str)


@dataclass
class NormalisedWebhook:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[MessageStatus] = field(default_factory=list)
    account_events: list[AccountEvent] = field(default_factory=list)
    problems: list[ShapeProblem] = field(default_factory=list)
    payments: list[PaymentUpdate] = field(default_factory=list)  # statuses[] of type payment
    carts: list[OrderCart] = field(default_factory=list)  # inbound order messages, typed
    #: (where, event id) of items whose id an earlier item of the same webhook already had
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    #: event id → where in the webhook it came from (``entry[0].changes[1].value.statuses[2]``)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def event_count(self) -> int:
        return (len(self.messages) + len(self.statuses) + len(self.account_events) + len(self.payments)
                + len(self.carts))

    def first_time(self, event_id: str, where: str) -> bool:
        """True the first time ``event_id`` is seen in this webhook; else records the repeat."""
        if event_id in self.sources:
            self.duplicates.append((where, event_id))
            return False
        self.sources[event_id] = where
        return True


def decode_webhook(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidWebhookJson(f"body is not valid JSON: {exc}") from exc


def normalise_raw_webhook(
    raw: bytes, *, received_at: datetime, tenants: TenantResolver | None = None
) -> NormalisedWebhook:
    """``normalise_webhook`` of raw bytes; raises ``InvalidWebhookJson`` if they are not JSON."""
    return normalise_webhook(decode_webhook(raw), received_at=received_at, tenants=tenants)


def normalise_webhook(
    document: Any, *, received_at: datetime, tenants: TenantResolver | None = None
) -> NormalisedWebhook:
    out = NormalisedWebhook()
    resolver: TenantResolver = tenants or NoTenants()
    if not isinstance(document, dict):
        out.problems.append(ShapeProblem("$", "webhook body is not a JSON object", document))
        return out
    if document.get("object") != WHATSAPP_OBJECT:
        out.problems.append(
            ShapeProblem(
                "$.object", f"object is not {WHATSAPP_OBJECT!r}", document
            )
        )
        return out
    entries = document.get("entry")
    if not isinstance(entries, list) or not entries:
        out.problems.append(ShapeProblem("$.entry", "entry is missing or not a non-empty list", document))
        return out
    for i, entry in enumerate(entries):
        where = f"entry[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            out.problems.append(ShapeProblem(where, "entry is not an object with a changes list", entry))
            continue
        waba_id = _str_or_none(entry.get("id"))
        entry_time = entry.get("time")
        for j, change in enumerate(entry["changes"]):
            cwhere = f"{where}.changes[{j}]"
            if (
                not isinstance(change, dict)
                or not isinstance(change.get("field"), str)
                or not isinstance(change.get("value"), dict)
            ):
                out.problems.append(
                    ShapeProblem(cwhere, "change is not an object with field and value", change, key=waba_id)
                )
                continue
            ctx = _ChangeContext(
                waba_id, change["field"], change["value"], received_at, entry_time, resolver, cwhere
            )
            if change["field"] == MESSAGES_FIELD:
                _messages_change(ctx, out)
            else:
                _account_change(ctx, out)
    return out


# --- one change ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChangeContext:
    waba_id: str | None
    field: str
    value: dict[str, Any]
    received_at: datetime
    entry_time: Any
    tenants: TenantResolver
    where: str

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.value.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def phone_number_id(self) -> str | None:
        return _str_or_none(self.metadata.get("phone_number_id")) or _str_or_none(
            self.value.get("phone_number_id")
        )

    @property
    def display_phone_number(self) -> str | None:
        return _str_or_none(self.metadata.get("display_phone_number"))

    def tenant_id(self) -> str | None:
        return self.tenants.tenant_for(self.phone_number_id, self.waba_id)

    def occurred_at(self, ts: Any, notes: list[str], label: str = "timestamp") -> datetime:
        """Meta's unix-seconds timestamp; the receive time (and a note saying so) when Meta gave
        none or one that is not unix seconds."""
        if ts is None or ts == "":
            notes.append(f"{label}: {TIME_MISSING}")
            return self.received_at
        parsed = unix_seconds(ts)
        if parsed is None:
            notes.append(f"{label}: {TIME_UNREADABLE}")
            return self.received_at
        return parsed


def unix_seconds(ts: Any) -> datetime | None:
    """A datetime from Meta's unix seconds (an integer, or a string of one); None when it is not."""
    if isinstance(ts, bool) or not isinstance(ts, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(int(float(ts)), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _messages_change(ctx: _ChangeContext, out: NormalisedWebhook) -> None:
    value = ctx.value
    pnid = ctx.phone_number_id
    messages, statuses, errors = value.get("messages"), value.get("statuses"), value.get("errors")
    if pnid is None:
        out.problems.append(
            ShapeProblem(
                f"{ctx.where}.value.metadata",
                "messages change without metadata.phone_number_id",
                value,
                key=ctx.waba_id,
            )
        )
        return
    if not any(isinstance(x, list) and x for x in (messages, statuses, errors)):
        out.problems.append(
            ShapeProblem(
                f"{ctx.where}.value", "messages change without messages, statuses or errors", value, key=pnid
            )
        )
        return
    if _unstorable(f"{ctx.where}.value.metadata", ctx.metadata, out, pnid):
        return
    tenant_id = ctx.tenant_id()
    contacts = _contacts_by_identity(value.get("contacts"))
    for k, msg in enumerate(messages if isinstance(messages, list) else []):
        where = f"{ctx.where}.value.messages[{k}]"
        if _unstorable(where, msg, out, pnid):
            continue
        try:
            m = _inbound_message(ctx, msg, contacts, tenant_id, pnid)
        except (ValueError, TypeError, OverflowError, OSError, ValidationError) as exc:
            out.problems.append(ShapeProblem(where, _reason(exc), msg, key=pnid))
            continue
        if out.first_time(m.event_id, where):
            out.messages.append(m)
            if m.type == "order":
                _order_cart(ctx, msg, out, tenant_id, pnid, where)
    for k, st in enumerate(statuses if isinstance(statuses, list) else []):
        where = f"{ctx.where}.value.statuses[{k}]"
        if _unstorable(where, st, out, pnid):
            continue
        try:
            if is_payment_status(st):
                payment = payment_update(
                    st, tenant_id=tenant_id, phone_number_id=pnid, waba_id=ctx.waba_id,
                    occurred_at=ctx.occurred_at(st.get("timestamp"), []), received_at=ctx.received_at)
                if out.first_time(payment.event_id, where):
                    out.payments.append(payment)
                continue
            s = _message_status(ctx, st, tenant_id, pnid)
        except (ValueError, TypeError, OverflowError, OSError, ValidationError) as exc:
            out.problems.append(ShapeProblem(where, _reason(exc), st, key=pnid))
            continue
        if out.first_time(s.event_id, where):
            out.statuses.append(s)
    if isinstance(errors, list) and errors:
        where = f"{ctx.where}.value.errors"
        if _unstorable(where, errors, out, pnid):
            return
        event_value = {"metadata": ctx.metadata, "errors": errors}
        notes: list[str] = []
        event = AccountEvent(
            event_id=body_hash(MESSAGES_ERRORS_KIND, ctx.waba_id, event_value),
            tenant_id=tenant_id,
            phone_number_id=pnid,
            waba_id=ctx.waba_id,
            occurred_at=ctx.occurred_at(ctx.entry_time, notes, "entry.time"),
            received_at=ctx.received_at,
            kind=MESSAGES_ERRORS_KIND,
            value=event_value,
            notes=notes,
        )
        if out.first_time(event.event_id, where):
            out.account_events.append(event)


def _account_change(ctx: _ChangeContext, out: NormalisedWebhook) -> None:
    key = ctx.phone_number_id or ctx.waba_id
    if key is None:
        out.problems.append(
            ShapeProblem(
                ctx.where, f"{ctx.field} change names neither a phone number id nor a WABA id", ctx.value
            )
        )
        return
    list_keys = [k for k in ACCOUNT_ITEM_LISTS.get(ctx.field, ()) if isinstance(ctx.value.get(k), list)]
    items = [(k, i, item) for k in list_keys for i, item in enumerate(ctx.value[k])]
    if not items:
        where = f"{ctx.where}.value"
        if _unstorable(where, ctx.value, out, key):
            return
        notes: list[str] = []
        ts = ctx.value.get("timestamp") or ctx.value.get("event_timestamp")
        label = "value.timestamp" if ts is not None and ts != "" else "entry.time"
        event = AccountEvent(
            event_id=body_hash(ctx.field, ctx.waba_id, ctx.value),
            tenant_id=ctx.tenant_id(),
            phone_number_id=key,
            waba_id=ctx.waba_id,
            occurred_at=ctx.occurred_at(ts if label == "value.timestamp" else ctx.entry_time, notes, label),
            received_at=ctx.received_at,
            kind=ctx.field,
            value=ctx.value,
            notes=notes,
        )
        if out.first_time(event.event_id, where):
            out.account_events.append(event)
        return
    # One event per item: its value is the change's value with that item alone in its list, so a
    # consumer reads it as it would read Meta's change, and redelivery in another batch gives
    # the same id.
    shared = {k: v for k, v in ctx.value.items() if k not in list_keys}
    if _unstorable(f"{ctx.where}.value", shared, out, key):
        return
    tenant_id = ctx.tenant_id()
    for list_key, i, item in items:
        where = f"{ctx.where}.value.{list_key}[{i}]"
        if not isinstance(item, dict):
            out.problems.append(ShapeProblem(where, f"{list_key} item is not an object", item, key=key))
            continue
        if _unstorable(where, item, out, key):
            continue
        notes = []
        event = AccountEvent(
            event_id=_item_event_id(ctx, key, list_key, item),
            tenant_id=tenant_id,
            phone_number_id=key,
            waba_id=ctx.waba_id,
            occurred_at=ctx.occurred_at(_item_time(item, ctx.entry_time), notes),
            received_at=ctx.received_at,
            kind=ctx.field,
            value={**shared, list_key: [item]},
            notes=notes,
        )
        if out.first_time(event.event_id, where):
            out.account_events.append(event)


def _item_time(item: dict[str, Any], entry_time: Any) -> Any:
    """An item's own time (``timestamp``, or ``metadata.timestamp`` as app state sync has it)."""
    ts = item.get("timestamp")
    if ts is None or ts == "":
        meta = item.get("metadata")
        ts = meta.get("timestamp") if isinstance(meta, dict) else None
    return entry_time if ts is None or ts == "" else ts


def _item_event_id(ctx: _ChangeContext, key: str, list_key: str, item: dict[str, Any]) -> str:
    """Meta's id of the item (with its event or status: a call connects, rings, ends), else a
    hash of the item as Meta sent it (user preferences carry no id, but their own timestamp)."""
    ident = _str_or_none(item.get("id"))
    if ident is None:
        return body_hash(ctx.field, list_key, ctx.waba_id, key, item)
    qualifier = _str_or_none(item.get("event")) or _str_or_none(item.get("status"))
    return ":".join([ctx.field, list_key, ident, *([qualifier] if qualifier else [])])


def _unstorable(where: str, fragment: Any, out: NormalisedWebhook, key: str | None) -> bool:
    """Report a fragment holding a string no consumer could store (NUL); True when it does."""
    found = next(unstorable_fields(fragment), None)
    if found is None:
        return False
    path, reason = found
    out.problems.append(ShapeProblem(f"{where}.{path}" if path != "$" else where, reason, fragment, key=key))
    return True


# --- messages ------------------------------------------------------------------------------


def _contacts_by_identity(contacts: Any) -> dict[str, dict[str, Any]]:
    """contacts[] indexed by wa_id and by user_id (either may be absent for username users)."""
    found: dict[str, dict[str, Any]] = {}
    if not isinstance(contacts, list):
        return found
    for c in contacts:
        if not isinstance(c, dict):
            continue
        for ident in (c.get("wa_id"), c.get("user_id")):
            if isinstance(ident, str) and ident:
                found.setdefault(ident, c)
    if len(contacts) == 1 and isinstance(contacts[0], dict):
        found.setdefault("", contacts[0])  # a lone contact describes every message of the change
    return found


def _inbound_message(
    ctx: _ChangeContext, msg: Any, contacts: dict[str, dict[str, Any]], tenant_id: str | None, pnid: str
) -> InboundMessage:
    if not isinstance(msg, dict):
        raise ValueError("message is not an object")
    wamid = _str_or_none(msg.get("id"))
    if not wamid:
        raise ValueError("message has no id (wamid)")
    notes: list[str] = []
    mtype = _str_or_none(msg.get("type")) or "unknown"
    sender = _str_or_none(msg.get("from"))
    sender_user_id = _str_or_none(msg.get("from_user_id"))
    contact = contacts.get(sender or "\x00") or contacts.get(sender_user_id or "\x00") or contacts.get("", {})
    raw_profile = contact.get("profile")
    profile: dict[str, Any] = raw_profile if isinstance(raw_profile, dict) else {}
    type_object = msg.get(mtype)
    payload: dict[str, Any]
    if isinstance(type_object, dict):
        payload = type_object
    elif type_object is not None:
        payload = {mtype: type_object}  # contacts[] is a list
    else:
        payload = {k: v for k, v in msg.items() if k not in _MESSAGE_ENVELOPE_KEYS}
    text, reply_id, button_payload = _readable_parts(mtype, payload)
    context = msg.get("context")
    referral = msg.get("referral")
    customer_wa_id = sender or _str_or_none(contact.get("wa_id"))
    customer_user_id = sender_user_id or _str_or_none(contact.get("user_id"))
    if not customer_wa_id and not customer_user_id:
        notes.append(NO_SENDER)
    occurred_at = ctx.occurred_at(msg.get("timestamp"), notes)
    return InboundMessage(
        event_id=wamid,
        tenant_id=tenant_id,
        phone_number_id=pnid,
        waba_id=ctx.waba_id,
        display_phone_number=ctx.display_phone_number,
        occurred_at=occurred_at,
        received_at=ctx.received_at,
        wamid=wamid,
        customer_wa_id=customer_wa_id,
        customer_user_id=customer_user_id,
        customer_parent_user_id=_str_or_none(msg.get("from_parent_user_id"))
        or _str_or_none(contact.get("parent_user_id")),
        customer_username=_str_or_none(profile.get("username")),
        profile_name=_str_or_none(profile.get("name")),
        type=mtype,
        text=text,
        interactive_reply_id=reply_id,
        button_payload=button_payload,
        context=_lenient(MessageContext, context, "context", notes) if isinstance(context, dict) else None,
        referral=_lenient(Referral, referral, "referral", notes) if isinstance(referral, dict) else None,
        errors=[_meta_error(e, f"errors[{i}]", notes) for i, e in enumerate(_list(msg.get("errors")))],
        payload=payload,
        notes=notes,
    )


def _readable_parts(mtype: str, payload: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(text, interactive reply id, template button payload) of a message's type object."""
    if mtype == "text":
        return _str_or_none(payload.get("body")), None, None
    if mtype in _MEDIA_TYPES:
        return _str_or_none(payload.get("caption")), None, None
    if mtype == "button":
        return _str_or_none(payload.get("text")), None, _str_or_none(payload.get("payload"))
    if mtype == "interactive":
        for reply_kind in ("button_reply", "list_reply"):
            reply = payload.get(reply_kind)
            if isinstance(reply, dict):
                return _str_or_none(reply.get("title")), _str_or_none(reply.get("id")), None
        nfm = payload.get("nfm_reply")
        if isinstance(nfm, dict):
            return _str_or_none(nfm.get("body")), _str_or_none(nfm.get("name")), None
        return None, None, None
    if mtype == "reaction":
        return _str_or_none(payload.get("emoji")), None, None
    if mtype in ("order", "system"):
        return _str_or_none(payload.get("text") or payload.get("body")), None, None
    return None, None, None


def _order_cart(
    ctx: _ChangeContext, msg: dict[str, Any], out: NormalisedWebhook, tenant_id: str | None, pnid: str,
    where: str,
) -> None:
    """The typed cart of an inbound order message (the message itself is already kept)."""
    message = out.messages[-1]
    try:
        out.carts.append(order_cart(
            msg, tenant_id=tenant_id, phone_number_id=pnid, waba_id=ctx.waba_id,
            customer_wa_id=message.customer_wa_id, customer_user_id=message.customer_user_id,
            occurred_at=message.occurred_at, received_at=ctx.received_at))
    except (ValueError, TypeError, ValidationError) as exc:
        out.problems.append(ShapeProblem(f"{where}.order", _reason(exc), msg.get("order"), key=pnid))


# --- statuses ------------------------------------------------------------------------------


def _message_status(ctx: _ChangeContext, st: Any, tenant_id: str | None, pnid: str) -> MessageStatus:
    if not isinstance(st, dict):
        raise ValueError("status is not an object")
    wamid = _str_or_none(st.get("id"))
    status = _str_or_none(st.get("status"))
    if not wamid or not status:
        raise ValueError("status has no id (wamid) or no status")
    pricing = st.get("pricing")
    notes: list[str] = []
    occurred_at = ctx.occurred_at(st.get("timestamp"), notes)
    return MessageStatus(
        event_id=MessageStatus.make_event_id(wamid, status),
        tenant_id=tenant_id,
        phone_number_id=pnid,
        waba_id=ctx.waba_id,
        occurred_at=occurred_at,
        received_at=ctx.received_at,
        wamid=wamid,
        status=status,
        recipient_id=_str_or_none(st.get("recipient_id")),
        recipient_user_id=_str_or_none(st.get("recipient_user_id")),
        recipient_parent_user_id=_str_or_none(st.get("recipient_parent_user_id")),
        biz_opaque_callback_data=_str_or_none(st.get("biz_opaque_callback_data")),
        pricing=_lenient(Pricing, pricing, "pricing", notes) if isinstance(pricing, dict) else None,
        conversation=_conversation(st.get("conversation"), notes),
        errors=[_meta_error(e, f"errors[{i}]", notes) for i, e in enumerate(_list(st.get("errors")))],
        notes=notes,
    )


def _conversation(raw: Any, notes: list[str]) -> Conversation | None:
    if not isinstance(raw, dict):
        return None
    origin = raw.get("origin")
    origin_type = origin.get("type") if isinstance(origin, dict) else None
    return _lenient(Conversation, {**raw, "origin_type": _str_or_none(origin_type)}, "conversation", notes)


def _meta_error(raw: Any, label: str, notes: list[str]) -> MetaError:
    """An error object; ``error_data.details`` is lifted to ``details``. A missing code becomes 0."""
    if not isinstance(raw, dict):
        notes.append(f"{label}: not an object; kept as its text")
        return MetaError(code=0, message=str(raw))
    code = raw.get("code")
    try:
        code_int = int(code) if code is not None and not isinstance(code, bool) else 0
    except (TypeError, ValueError):
        code_int = 0
    error_data = raw.get("error_data")
    details = raw.get("details")
    if details is None and isinstance(error_data, dict):
        details = error_data.get("details")
    return _lenient(
        MetaError, {**raw, "code": code_int, "details": details if isinstance(details, str) else None},
        label, notes,
    )


M = TypeVar("M", bound=BaseModel)


def _lenient(model: type[M], raw: dict[str, Any], label: str, notes: list[str]) -> M:
    """``model`` from Meta's sub-object, never failing on one odd field: an integer where text is
    expected becomes its text (Meta's unix times and ids are digit strings, sometimes numbers);
    any other field that does not validate is kept raw as ``raw_<name>`` and noted."""
    data = dict(raw)
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = [e for e in exc.errors() if e["loc"] and str(e["loc"][0]) in data]
            if not errors:
                raise
            for e in errors:
                name = str(e["loc"][0])
                if name not in data:
                    continue  # a second error about the same field
                value = data.pop(name)
                if e["type"] == "string_type" and isinstance(value, int) and not isinstance(value, bool):
                    data[name] = str(value)
                else:
                    data[f"raw_{name}"] = value
                    notes.append(f"{label}.{name}: {e['msg']}; kept raw as raw_{name}")


# --- small helpers -------------------------------------------------------------------------


def _str_or_none(v: Any) -> str | None:
    if isinstance(v, str):
        return v or None
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(exc)
