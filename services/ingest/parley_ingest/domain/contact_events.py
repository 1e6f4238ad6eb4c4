"""Who an event is about, as the contact rules (``domain.contacts``) take it: a sighting of an
inbound message or a status, a BSUID change, the customers a ``user_preferences`` event names.

``user_id_update`` is read leniently: each item of ``value.user_id_update`` (or the value itself)
names the old and the new BSUID either as ``user_id: {previous, current}`` or as
``previous_user_id`` / ``user_id``, and the phone number as ``wa_id`` when Meta shares it.
"""

from __future__ import annotations

from typing import Any

from parley_common.contracts import AccountEvent, InboundMessage, MessageStatus

from parley_ingest.domain.contacts import BsuidChange, Sighting


def sighting_of_message(m: InboundMessage) -> Sighting | None:
    seen = Sighting(m.customer_wa_id, m.customer_user_id, m.customer_parent_user_id, m.customer_username)
    return seen if seen.identifiers() else None


def sighting_of_status(s: MessageStatus) -> Sighting | None:
    seen = Sighting(s.recipient_id, s.recipient_user_id, s.recipient_parent_user_id)
    return seen if seen.identifiers() else None


def bsuid_changes(ev: AccountEvent) -> list[BsuidChange]:
    if ev.kind != "user_id_update":
        return []
    items = ev.value.get("user_id_update")
    out = []
    for item in items if isinstance(items, list) else [ev.value]:
        change = _change(item) if isinstance(item, dict) else None
        if change is not None:
            out.append(change)
    return out


def _change(item: dict[str, Any]) -> BsuidChange | None:
    ids = item.get("user_id")
    if isinstance(ids, dict):
        old, new = ids.get("previous"), ids.get("current")
    else:
        old, new = item.get("previous_user_id"), ids
    phone = item.get("wa_id")
    if not isinstance(old, str) or not isinstance(new, str) or not old or not new or old == new:
        return None
    return BsuidChange(old, new, phone if isinstance(phone, str) and phone else None)


def preference_sightings(ev: AccountEvent) -> list[Sighting]:
    """The customers a ``user_preferences`` event speaks for."""
    if ev.kind != "user_preferences":
        return []
    out = []
    for pref in ev.value.get("user_preferences") or []:
        if isinstance(pref, dict):
            seen = Sighting(_text(pref.get("wa_id")), _text(pref.get("user_id")), _text(pref.get("parent_user_id")))
            if seen.identifiers():
                out.append(seen)
    return out


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None
