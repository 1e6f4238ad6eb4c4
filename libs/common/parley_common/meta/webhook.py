"""Normalise one Meta webhook POST into contract events: every entry, change, message and status.

``normalise_webhook(document, received_at=..., tenants=...)`` walks every ``entry[]``, every
``changes[]`` and, for the ``messages`` field, every ``messages[]``, ``statuses[]`` and
``errors[]`` (with ``contacts[]`` joined onto the messages they describe). Other fields
(template status/quality/category, ``user_preferences``, ``account_update``, phone-number
quality, business capability, and fields Meta adds later) become one ``AccountEvent`` per change
with ``kind`` = Meta's field name.

Unknown message types, statuses and fields are kept as they are. What cannot be understood at
all (a message without an id, an envelope that is not Meta's shape) becomes a ``ShapeProblem``
naming where it is and why; the rest of the batch is still normalised.

Event ids are deterministic (wamid, ``wamid:status``, a hash of the change otherwise), so a
duplicate delivery by Meta, or a replay of the raw archive, produces the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

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

    @property
    def event_count(self) -> int:
        return (len(self.messages) + len(self.statuses) + len(self.account_events) + len(self.payments)
                + len(self.carts))


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
                "$.object", f"object is {document.get('object')!r}, expected {WHATSAPP_OBJECT!r}", document
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

    def occurred_at(self, ts: Any) -> datetime:
        """Meta's unix-seconds timestamp; the receive time when Meta gave none."""
        if ts is None or ts == "":
            return self.received_at
        if isinstance(ts, bool) or not isinstance(ts, int | float | str):
            raise ValueError(f"timestamp {ts!r} is not unix seconds")
        return datetime.fromtimestamp(int(float(ts)), tz=UTC)


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
    tenant_id = ctx.tenant_id()
    contacts = _contacts_by_identity(value.get("contacts"))
    for k, msg in enumerate(messages if isinstance(messages, list) else []):
        where = f"{ctx.where}.value.messages[{k}]"
        try:
            out.messages.append(_inbound_message(ctx, msg, contacts, tenant_id, pnid))
        except (ValueError, TypeError, OverflowError, OSError, ValidationError) as exc:
            out.problems.append(ShapeProblem(where, _reason(exc), msg, key=pnid))
            continue
        if out.messages[-1].type == "order":
            _order_cart(ctx, msg, out, tenant_id, pnid, where)
    for k, st in enumerate(statuses if isinstance(statuses, list) else []):
        where = f"{ctx.where}.value.statuses[{k}]"
        try:
            if is_payment_status(st):
                out.payments.append(payment_update(
                    st, tenant_id=tenant_id, phone_number_id=pnid, waba_id=ctx.waba_id,
                    occurred_at=ctx.occurred_at(st.get("timestamp")), received_at=ctx.received_at))
                continue
            out.statuses.append(_message_status(ctx, st, tenant_id, pnid))
        except (ValueError, TypeError, OverflowError, OSError, ValidationError) as exc:
            out.problems.append(ShapeProblem(where, _reason(exc), st, key=pnid))
    if isinstance(errors, list) and errors:
        event_value = {"metadata": ctx.metadata, "errors": errors}
        out.account_events.append(
            AccountEvent(
                event_id=body_hash(MESSAGES_ERRORS_KIND, ctx.waba_id, event_value),
                tenant_id=tenant_id,
                phone_number_id=pnid,
                waba_id=ctx.waba_id,
                occurred_at=ctx.occurred_at(ctx.entry_time),
                received_at=ctx.received_at,
                kind=MESSAGES_ERRORS_KIND,
                value=event_value,
            )
        )


def _account_change(ctx: _ChangeContext, out: NormalisedWebhook) -> None:
    key = ctx.phone_number_id or ctx.waba_id
    if key is None:
        out.problems.append(
            ShapeProblem(
                ctx.where, f"{ctx.field} change names neither a phone number id nor a WABA id", ctx.value
            )
        )
        return
    ts = ctx.value.get("timestamp") or ctx.value.get("event_timestamp") or ctx.entry_time
    try:
        occurred_at = ctx.occurred_at(ts)
    except (ValueError, TypeError, OverflowError, OSError):
        occurred_at = ctx.received_at
    out.account_events.append(
        AccountEvent(
            event_id=body_hash(ctx.field, ctx.waba_id, ctx.value),
            tenant_id=ctx.tenant_id(),
            phone_number_id=key,
            waba_id=ctx.waba_id,
            occurred_at=occurred_at,
            received_at=ctx.received_at,
            kind=ctx.field,
            value=ctx.value,
        )
    )


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
    return InboundMessage(
        event_id=wamid,
        tenant_id=tenant_id,
        phone_number_id=pnid,
        waba_id=ctx.waba_id,
        display_phone_number=ctx.display_phone_number,
        occurred_at=ctx.occurred_at(msg.get("timestamp")),
        received_at=ctx.received_at,
        wamid=wamid,
        customer_wa_id=sender or _str_or_none(contact.get("wa_id")),
        customer_user_id=sender_user_id or _str_or_none(contact.get("user_id")),
        customer_parent_user_id=_str_or_none(msg.get("from_parent_user_id"))
        or _str_or_none(contact.get("parent_user_id")),
        customer_username=_str_or_none(profile.get("username")),
        profile_name=_str_or_none(profile.get("name")),
        type=mtype,
        text=text,
        interactive_reply_id=reply_id,
        button_payload=button_payload,
        context=MessageContext.model_validate(context) if isinstance(context, dict) else None,
        referral=Referral.model_validate(referral) if isinstance(referral, dict) else None,
        errors=[_meta_error(e) for e in _list(msg.get("errors"))],
        payload=payload,
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
    return MessageStatus(
        event_id=MessageStatus.make_event_id(wamid, status),
        tenant_id=tenant_id,
        phone_number_id=pnid,
        waba_id=ctx.waba_id,
        occurred_at=ctx.occurred_at(st.get("timestamp")),
        received_at=ctx.received_at,
        wamid=wamid,
        status=status,
        recipient_id=_str_or_none(st.get("recipient_id")),
        recipient_user_id=_str_or_none(st.get("recipient_user_id")),
        biz_opaque_callback_data=_str_or_none(st.get("biz_opaque_callback_data")),
        pricing=Pricing.model_validate(pricing) if isinstance(pricing, dict) else None,
        conversation=_conversation(st.get("conversation")),
        errors=[_meta_error(e) for e in _list(st.get("errors"))],
    )


def _conversation(raw: Any) -> Conversation | None:
    if not isinstance(raw, dict):
        return None
    origin = raw.get("origin")
    origin_type = origin.get("type") if isinstance(origin, dict) else None
    return Conversation.model_validate({**raw, "origin_type": _str_or_none(origin_type)})


def _meta_error(raw: Any) -> MetaError:
    """An error object; ``error_data.details`` is lifted to ``details``. A missing code becomes 0."""
    if not isinstance(raw, dict):
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
    return MetaError.model_validate(
        {**raw, "code": code_int, "details": details if isinstance(details, str) else None}
    )


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
