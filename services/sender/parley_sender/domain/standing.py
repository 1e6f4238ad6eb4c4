"""What Meta reports about a business number and a template, and what that changes about sending.

Pure rules (docs/adr/0121-quality-acts-on-sending.md):

- **Number quality.** ``phone_number_quality_update`` with ``event: FLAGGED`` (or a quality
  rating of RED / LOW, when the event carries one) holds the number's marketing: marketing
  templates are refused before any call with ``number_quality_low``; ``UNFLAGGED`` or a rating of
  YELLOW / GREEN lets them go again. Utility, authentication and replies are not affected.
- **Coexistence.** A number shared with the WhatsApp Business app is fixed at 20 messages per
  second by Meta, whatever its registry value or upgrade events say. A number is known to be one
  by its tenant's setting (``settings.sender.coexistence_numbers``) or because Meta sent a
  webhook only coexistence numbers get (``smb_message_echoes``, ``smb_app_state_sync``,
  ``history``).
- **Templates.** ``message_template_status_update`` events become the status the template now
  has (a FLAGGED, LOCKED or UNLOCKED template stays APPROVED and sendable; REINSTATED, UNPAUSED
  and UNARCHIVED ones are APPROVED again); ``message_template_quality_update`` changes its
  quality; ``template_category_update`` its category (``new_category`` is the category in force
  in both the impending and the completed notification).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Meta fixes the throughput of numbers shared with the WhatsApp Business app at 20 msg/s.
COEXISTENCE_MPS = 20
# Webhook fields Meta sends only for numbers onboarded from the WhatsApp Business app.
COEXISTENCE_KINDS = frozenset({"smb_message_echoes", "smb_app_state_sync", "history"})

FLAGGED = "FLAGGED"
UNFLAGGED = "UNFLAGGED"
# Quality ratings as Meta names them (GREEN/YELLOW/RED) and as WhatsApp Manager shows them.
_RATINGS = {"GREEN": "GREEN", "HIGH": "GREEN", "YELLOW": "YELLOW", "MEDIUM": "YELLOW", "RED": "RED", "LOW": "RED"}
HOLDS_MARKETING = frozenset({FLAGGED, "RED"})


@dataclass(frozen=True)
class NumberStanding:
    """A number's standing as Meta last reported it (``quality`` None until Meta reports one)."""

    quality: str | None = None  # FLAGGED | UNFLAGGED | GREEN | YELLOW | RED
    coexistence: bool = False

    @property
    def holds_marketing(self) -> bool:
        return self.quality in HOLDS_MARKETING


def reported_quality(kind: str, value: Mapping[str, Any]) -> str | None:
    """The number quality an account event reports, normalised; None when it reports none
    (a throughput upgrade or a messaging-limit change says nothing about quality)."""
    if kind != "phone_number_quality_update":
        return None
    event = str(value.get("event") or "").upper()
    if event in (FLAGGED, UNFLAGGED):
        return event
    for key in ("quality_rating", "quality_score", "new_quality_score"):
        rating = value.get(key)
        if isinstance(rating, Mapping):  # {"score": "RED"}, as the Graph API nests it
            rating = rating.get("score")
        if rating is not None and str(rating).upper() in _RATINGS:
            return _RATINGS[str(rating).upper()]
    return None


def reports_coexistence(kind: str) -> bool:
    return kind in COEXISTENCE_KINDS


def number_throughput(registry_mps: int, reported_mps: int | None, *, coexistence: bool) -> int:
    """Messages per second a number may send: what Meta reported over the registry's starting
    value, and never more than 20 for a number shared with the WhatsApp Business app."""
    mps = reported_mps if reported_mps is not None else registry_mps
    return min(mps, COEXISTENCE_MPS) if coexistence else mps


# message_template_status_update events after which the template is APPROVED (sendable) again,
# and those that leave its status as it was.
_APPROVED_AGAIN = frozenset({"APPROVED", "REINSTATED", "UNPAUSED", "UNARCHIVED"})
_STATUS_UNCHANGED = frozenset({"FLAGGED", "LOCKED", "UNLOCKED"})


def template_change(kind: str, value: Mapping[str, Any]) -> dict[str, str]:
    """What a template event changes in the catalogue: ``status``, ``quality``, ``category``."""
    changes: dict[str, str] = {}
    if kind == "message_template_status_update":
        event = str(value.get("event") or "").upper()
        if event in _APPROVED_AGAIN:
            changes["status"] = "APPROVED"
        elif event and event not in _STATUS_UNCHANGED:
            changes["status"] = event
        if value.get("message_template_category"):
            changes["category"] = str(value["message_template_category"]).upper()
    elif kind == "message_template_quality_update" and value.get("new_quality_score"):
        changes["quality"] = str(value["new_quality_score"]).upper()
    elif kind == "template_category_update" and value.get("new_category"):
        changes["category"] = str(value["new_category"]).upper()
    return changes


@dataclass(frozen=True)
class TenantSending:
    """A tenant's sending settings (``settings.sender`` in the tenant registry)."""

    marketing_messages_api: bool = False  # marketing templates through /marketing_messages
    coexistence_numbers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> TenantSending:
        raw = settings.get("sender")
        if not isinstance(raw, Mapping):
            return cls()
        numbers = raw.get("coexistence_numbers")
        return cls(
            marketing_messages_api=raw.get("marketing_messages_api") is True,
            coexistence_numbers=frozenset(str(n) for n in numbers) if isinstance(numbers, list) else frozenset(),
        )
