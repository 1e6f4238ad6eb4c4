"""What the simulator posts and answers, built as Meta shapes them: status objects, the statuses
planned for an accepted message, user-preference and template-status webhooks, template pages.

Pure functions of their arguments; :class:`~parley_simulator.simulator.CloudApiSimulator` decides
when to post them."""

from __future__ import annotations

import base64
import random
import re
from typing import Any

from .config import Behaviour, PhoneNumberConfig, WabaConfig
from .errors import GraphError
from .pricing import PricedMessage
from .sent import SentMessage
from .templates import StoredTemplate

_BSUID = re.compile(r"[A-Z]{2}\..+")
WABA_OBJECT = "whatsapp_business_account"


def status_object(msg: SentMessage, status: str, offset_s: float, **extra: Any) -> dict[str, Any]:
    """One entry of ``statuses[]`` for ``msg``, ``offset_s`` after it was accepted."""
    obj: dict[str, Any] = {
        "id": msg.wamid,
        "status": status,
        "timestamp": str(int(msg.accepted_at + offset_s)),
    }
    if msg.recipient_phone or msg.recipient_user_id:  # as Meta knows the user (usernames, 2026)
        if msg.recipient_phone:
            obj["recipient_id"] = msg.recipient_phone
        if msg.recipient_user_id:
            obj["recipient_user_id"] = msg.recipient_user_id
    elif _BSUID.fullmatch(msg.wa_id):
        obj["recipient_user_id"] = msg.wa_id
    else:
        obj["recipient_id"] = msg.wa_id
    if msg.biz_opaque_callback_data is not None:
        obj["biz_opaque_callback_data"] = msg.biz_opaque_callback_data
    obj.update({k: v for k, v in extra.items() if v is not None})
    return obj


def planned_statuses(msg: SentMessage, priced: PricedMessage, b: Behaviour,
                     rng: random.Random) -> list[tuple[float, dict[str, Any]]]:
    """The statuses an accepted message gets, with their delays: sent, then (by the behaviour's
    ratios) delivered and read; Meta's pricing rides on the first of delivered or read."""
    sent_s = b.sent_delay_ms / 1000
    planned = [(sent_s, status_object(msg, "sent", sent_s, conversation=priced.conversation_for("sent"),
                                      pricing=priced.pricing))]
    if rng.random() >= b.delivered_ratio:
        return planned
    read = rng.random() < b.read_ratio
    skip_delivered = read and rng.random() < b.skip_delivered_ratio
    priced_on = "read" if skip_delivered else "delivered"
    if not skip_delivered:
        d = max(sent_s, b.delivered_delay_ms / 1000)
        planned.append((d, status_object(msg, "delivered", d, conversation=priced.conversation_for("delivered"),
                                         pricing=priced.pricing if priced_on == "delivered" else None)))
    if read:
        r = max(sent_s, b.delivered_delay_ms / 1000, b.read_delay_ms / 1000)
        planned.append((r, status_object(
            msg, "read", r,
            conversation=priced.conversation_for("read") if priced_on == "read" else None,
            pricing=priced.pricing if priced_on == "read" else None)))
    return planned


def user_preferences_webhook(number: PhoneNumberConfig, waba: WabaConfig, wa_id: str, value: str,
                             now: float) -> dict[str, Any]:
    """The ``user_preferences`` webhook of a customer stopping or resuming marketing messages."""
    value_obj = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": number.display_phone_number, "phone_number_id": number.id},
        "contacts": [{"wa_id": wa_id}],
        "user_preferences": [
            {
                "wa_id": wa_id,
                "category": "marketing_messages",
                "value": value,
                "timestamp": str(int(now)),
                "detail": "User requested to stop marketing messages"
                if value == "stop"
                else "User requested to resume marketing messages",
            }
        ],
    }
    return {"object": WABA_OBJECT,
            "entry": [{"id": waba.id, "changes": [{"value": value_obj, "field": "user_preferences"}]}]}


def user_id_update_webhook(number: PhoneNumberConfig, waba: WabaConfig, old: str, new: str,
                           phone: str | None, now: float) -> dict[str, Any]:
    """The ``user_id_update`` webhook of a user whose BSUID changed (a new phone number gives a new
    BSUID). The item names the previous and the current BSUID, and the number when Meta shares it."""
    item: dict[str, Any] = {"user_id": {"previous": old, "current": new}, "timestamp": str(int(now))}
    if phone:
        item["wa_id"] = phone
    value_obj = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": number.display_phone_number, "phone_number_id": number.id},
        "user_id_update": [item],
    }
    return {"object": WABA_OBJECT,
            "entry": [{"id": waba.id, "changes": [{"value": value_obj, "field": "user_id_update"}]}]}


def template_status_webhook(stored: StoredTemplate, waba: WabaConfig, status: str, *, reason: str | None,
                            title: str | None, now: float) -> dict[str, Any]:
    """The ``message_template_status_update`` webhook of a template's new status."""
    value: dict[str, Any] = {
        "event": status,
        "message_template_id": int(stored.id),
        "message_template_name": stored.template.name,
        "message_template_language": stored.template.language,
        "message_template_category": stored.template.category,
        "reason": reason if reason is not None else "NONE",
    }
    if status == "PAUSED":
        value["other_info"] = {
            "title": title or "FIRST_PAUSE",
            "description": "Your message template has been paused because of low quality.",
        }
    elif status == "DISABLED":
        value["other_info"] = {
            "title": title or "DISABLED",
            "description": "Your message template has been disabled because of continued low quality.",
        }
    return {
        "object": WABA_OBJECT,
        "entry": [{"id": waba.id, "time": int(now),
                   "changes": [{"value": value, "field": "message_template_status_update"}]}],
    }


def template_quality_webhook(stored: StoredTemplate, waba: WabaConfig, previous: str, new: str,
                             now: float) -> dict[str, Any]:
    """The ``message_template_quality_update`` webhook of a template's new quality score."""
    value = {
        "previous_quality_score": previous,
        "new_quality_score": new,
        "message_template_id": int(stored.id),
        "message_template_name": stored.template.name,
        "message_template_language": stored.template.language,
    }
    return {
        "object": WABA_OBJECT,
        "entry": [{"id": waba.id, "time": int(now),
                   "changes": [{"value": value, "field": "message_template_quality_update"}]}],
    }


def templates_page(items: list[StoredTemplate], waba_id: str, query: dict[str, str]) -> dict[str, Any]:
    """One page of ``GET /{waba_id}/message_templates`` with Meta's cursors."""
    limit = max(1, min(int(query.get("limit", "25")), 1000))
    after = query.get("after")
    start = _decode_cursor(after) if after else 0
    page = items[start : start + limit]
    out: dict[str, Any] = {"data": [t.listing() for t in page]}
    if items:
        paging: dict[str, Any] = {
            "cursors": {"before": _encode_cursor(start), "after": _encode_cursor(start + len(page))}
        }
        if start + len(page) < len(items):
            paging["next"] = f"/{waba_id}/message_templates?limit={limit}&after={_encode_cursor(start + len(page))}"
        out["paging"] = paging
    return out


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except ValueError as exc:
        raise GraphError(100, "Invalid paging cursor") from exc
