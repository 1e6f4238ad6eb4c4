"""Who an event is about, as the contact rules (``domain.contacts``) take it: a sighting of an
inbound message or a status, a BSUID change, the customers a ``user_preferences`` event names.

``user_id_update`` is read leniently: each item of ``value.user_id_update`` (or the value itself)
names the old and the new BSUID either as ``user_id: {previous, current}`` or as
``previous_user_id`` / ``user_id``, and the phone number as ``wa_id`` when Meta shares it.

An identifier no person can have is no sighting (:func:`identifier`): one that is empty, longer
than ``IDENTIFIER_MAX`` or holds a control character (a NUL, which PostgreSQL cannot store). The
event then goes on without a contact, as for a customer Meta did not name, and is judged by its
consumers; the webhook is never refused for it (a refusal would be retried by Meta for days).
"""

from __future__ import annotations

from typing import Any

from parley_common.contracts import AccountEvent, InboundMessage, MessageStatus

from parley_ingest.domain.contacts import BsuidChange, Sighting

IDENTIFIER_MAX = 256  # Meta's ids are far shorter; a btree index entry holds about 2,700 bytes


def identifier(v: Any) -> str | None:
    """``v`` when it can be an id of a person or a webhook item (a non-empty printable string of
    at most IDENTIFIER_MAX characters), else None."""
    return v if isinstance(v, str) and 0 < len(v) <= IDENTIFIER_MAX and v.isprintable() else None


def sighting_of_message(m: InboundMessage) -> Sighting | None:
    seen = Sighting(identifier(m.customer_wa_id), identifier(m.customer_user_id),
                    identifier(m.customer_parent_user_id), identifier(m.customer_username))
    return seen if seen.identifiers() else None


def sighting_of_status(s: MessageStatus) -> Sighting | None:
    seen = Sighting(identifier(s.recipient_id), identifier(s.recipient_user_id),
                    identifier(s.recipient_parent_user_id))
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
    old, new = identifier(old), identifier(new)
    if old is None or new is None or old == new:
        return None
    return BsuidChange(old, new, identifier(item.get("wa_id")))


def preference_sightings(ev: AccountEvent) -> list[Sighting]:
    """The customers a ``user_preferences`` event speaks for."""
    if ev.kind != "user_preferences":
        return []
    out = []
    for pref in ev.value.get("user_preferences") or []:
        if isinstance(pref, dict):
            seen = Sighting(identifier(pref.get("wa_id")), identifier(pref.get("user_id")),
                            identifier(pref.get("parent_user_id")))
            if seen.identifiers():
                out.append(seen)
    return out
