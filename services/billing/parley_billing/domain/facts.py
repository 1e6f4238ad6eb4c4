"""Facts extracted from the three consumed topics, in the shape the store keeps them.

Decoding is done from the records' JSON dicts (the contract models' field names) without building
a pydantic model per record: billing meters tens of thousands of statuses per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from parley_billing.domain.engine import MetaPricing

# Which status Meta's pricing object is taken from when several carry one (lower wins): Meta puts
# it on "sent" and on one of delivered/read; the delivered/read one is the charging event.
META_RANK = {"delivered": 1, "read": 2, "played": 3, "sent": 4}
DELIVERED = frozenset({"delivered", "read", "played"})


class FactError(ValueError):
    """A record that cannot be a billing fact (missing ids, bad timestamp)."""


def _customer(value: object) -> str:
    return str(value).lstrip("+") if value else ""


def _time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise FactError(f"timestamp {value!r} is not ISO 8601")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise FactError(f"timestamp {value!r} is not ISO 8601") from None
    if t.tzinfo is None:
        raise FactError("timestamp has no time zone")
    return t


def _require(d: Mapping[str, Any], key: str) -> str:
    v = d.get(key)
    if not v:
        raise FactError(f"{key} is missing")
    return str(v)


class StatusFact(NamedTuple):
    """One status as the store keeps it. A tuple in the column order of the store's COPY, because
    billing decodes tens of thousands of these per second."""

    wamid: str
    tenant_id: str | None
    phone_number_id: str
    waba_id: str | None
    customer: str
    delivered_at: datetime | None
    meta_rank: int | None
    meta_billable: bool | None = None
    meta_pricing_model: str | None = None
    meta_type: str | None = None
    meta_category: str | None = None
    # The recipient's BSUID (or BSUID contact key) when the status also names the number, and
    # that number (kept in billing.contacts: the BSUID timeline is priced in the number's market).
    user_id: str | None = None
    phone: str | None = None

    @property
    def meta(self) -> MetaPricing | None:
        if self.meta_rank is None:
            return None
        return MetaPricing(self.meta_billable, self.meta_pricing_model, self.meta_type, self.meta_category)


@dataclass(frozen=True, slots=True)
class SendFact:
    wamid: str
    tenant_id: str | None
    phone_number_id: str
    customer: str
    is_template: bool
    category: str | None
    free_window: str | None
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class InboundRecord:
    wamid: str
    tenant_id: str | None
    phone_number_id: str
    customer: str
    at: datetime
    referral: bool
    user_id: str | None = None  # the BSUID (or BSUID contact key), when the message also names the number
    phone: str | None = None  # that number
    ctwa_clid: str | None = None  # the click-to-WhatsApp ad's click id (orders' ad referral)


_new = tuple.__new__


def status_fact(d: Mapping[str, Any]) -> StatusFact | None:
    """A ``MessageStatus`` record as a fact; None when it has no billing effect (failed, unknown)."""
    status = d.get("status")
    rank = META_RANK.get(status)  # type: ignore[arg-type]
    if rank is None:
        return None
    wamid = d.get("wamid")
    pnid = d.get("phone_number_id")
    if not wamid or not pnid:
        raise FactError(("wamid" if not wamid else "phone_number_id") + " is missing")
    phone = d.get("recipient_id")
    user_id = d.get("recipient_user_id")
    # The contact (ADR 0117) when ingest decided it: billing's windows are the person's.
    customer = d.get("contact_id") or phone or user_id
    user_id = (customer if customer != phone else user_id) if phone else None
    phone = phone if user_id else None
    delivered_at = _time(d.get("occurred_at")) if rank < 4 else None  # delivered, read, played
    pricing = d.get("pricing")
    # tuple.__new__ directly: a NamedTuple's own __new__ is one more Python call per status.
    if pricing is not None and (type(pricing) is dict or isinstance(pricing, Mapping)):
        return _new(StatusFact, (str(wamid), d.get("tenant_id"), str(pnid), d.get("waba_id"),
                                 str(customer).lstrip("+") if customer else "", delivered_at, rank,
                                 pricing.get("billable"), pricing.get("pricing_model"), pricing.get("type"),
                                 pricing.get("category"), user_id, phone))
    return _new(StatusFact, (str(wamid), d.get("tenant_id"), str(pnid), d.get("waba_id"),
                             str(customer).lstrip("+") if customer else "", delivered_at, None, None, None,
                             None, None, user_id, phone))


def send_fact(d: Mapping[str, Any]) -> SendFact | None:
    """A ``SendResult`` record as a fact; None unless Meta accepted it (only then is there a wamid)."""
    if d.get("outcome") != "accepted" or not d.get("wamid"):
        return None
    return SendFact(
        wamid=str(d["wamid"]), tenant_id=d.get("tenant_id"), phone_number_id=_require(d, "phone_number_id"),
        customer=_customer(d.get("recipient")), is_template=bool(d.get("is_template")),
        category=d.get("category"), free_window=d.get("free_window"), sent_at=_time(d.get("occurred_at")))


def inbound_record(d: Mapping[str, Any]) -> InboundRecord:
    phone, user_id = d.get("customer_wa_id"), d.get("customer_user_id")
    customer = _customer(d.get("contact_id") or phone or user_id)  # the contact when known (ADR 0117)
    if not customer:
        raise FactError("inbound message names no customer")
    known_by = (customer if customer != _customer(phone) else user_id) if phone else None
    return InboundRecord(
        wamid=_require(d, "wamid"), tenant_id=d.get("tenant_id"), phone_number_id=_require(d, "phone_number_id"),
        customer=customer, at=_time(d.get("occurred_at")), referral=bool(d.get("referral")),
        user_id=str(known_by) if known_by else None, phone=_customer(phone) if known_by else None,
        ctwa_clid=_ctwa_clid(d.get("referral")))


def _ctwa_clid(referral: Any) -> str | None:
    clid = referral.get("ctwa_clid") if isinstance(referral, Mapping) else None
    return clid if isinstance(clid, str) and clid else None


def collapse_statuses(facts: Iterable[StatusFact]) -> list[StatusFact]:
    """One fact per wamid: the earliest delivery and the best-ranked pricing of the batch."""
    best: dict[str, StatusFact] = {}
    for f in facts:
        prev = best.get(f.wamid)
        if prev is None:
            best[f.wamid] = f
            continue
        delivered = prev.delivered_at
        if delivered is None or (f.delivered_at is not None and f.delivered_at < delivered):
            delivered = f.delivered_at
        meta = f if f.meta_rank is not None and (prev.meta_rank is None or f.meta_rank < prev.meta_rank) \
            else prev
        if delivered is prev.delivered_at and meta is prev and (prev.tenant_id or not f.tenant_id) \
                and (prev.waba_id or not f.waba_id) and (prev.customer or not f.customer) \
                and (prev.user_id or not f.user_id) and (prev.phone or not f.phone):
            continue  # nothing new (the common case: a duplicate, or "read" after "delivered")
        best[f.wamid] = StatusFact(prev.wamid, prev.tenant_id or f.tenant_id, prev.phone_number_id,
                                   prev.waba_id or f.waba_id, prev.customer or f.customer, delivered,
                                   *meta[6:11], prev.user_id or f.user_id, prev.phone or f.phone)
    return list(best.values())


def contact_merge(d: Mapping[str, Any]) -> tuple[str, str, list[str]] | None:
    """(tenant, kept contact, absorbed contacts) of a ``ContactMerged`` record (ADR 0117): billing's
    timelines are the person's, so the absorbed ones fold into the kept contact. None for others."""
    if d.get("kind") != "contact_merged":
        return None
    tenant, kept, absorbed = d.get("tenant_id"), d.get("contact_id"), d.get("absorbed")
    if not isinstance(tenant, str) or not isinstance(kept, str) or not isinstance(absorbed, list):
        raise FactError("a contact merge names its tenant, contact_id and absorbed contacts")
    return tenant, kept, [a for a in absorbed if isinstance(a, str) and a != kept]
