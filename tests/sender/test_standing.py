"""What Meta's quality, coexistence and template reports change about sending (pure rules,
docs/adr/0121-quality-acts-on-sending.md): tables of events and of sends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from parley_common.contracts import OutboundMessage
from parley_sender.domain.policy import Refusal, SendContext, SendPlan, decide
from parley_sender.domain.standing import (
    COEXISTENCE_MPS,
    NumberStanding,
    TenantSending,
    number_throughput,
    reported_quality,
    reports_coexistence,
    template_change,
)
from parley_sender.domain.templates import Template, TemplateCatalogue, TemplateProblem, check_sendable

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
Q = "phone_number_quality_update"


@pytest.mark.parametrize(
    ("kind", "value", "quality"),
    [
        (Q, {"event": "FLAGGED", "display_phone_number": "15550001"}, "FLAGGED"),
        (Q, {"event": "UNFLAGGED"}, "UNFLAGGED"),
        (Q, {"event": "flagged"}, "FLAGGED"),
        (Q, {"event": "THROUGHPUT_UPGRADE"}, None),  # says nothing about quality
        (Q, {"event": "UPGRADE", "max_daily_conversations_per_business": 2000}, None),
        (Q, {"quality_rating": "RED"}, "RED"),
        (Q, {"quality_rating": "LOW"}, "RED"),
        (Q, {"quality_score": {"score": "YELLOW"}}, "YELLOW"),
        (Q, {"new_quality_score": "GREEN"}, "GREEN"),
        (Q, {"quality_rating": "UNKNOWN"}, None),
        ("account_update", {"event": "FLAGGED"}, None),  # only the number's quality event
        ("message_template_quality_update", {"new_quality_score": "RED"}, None),  # a template's, not a number's
    ],
)
def test_number_quality_from_meta_events(kind: str, value: dict[str, Any], quality: str | None) -> None:
    assert reported_quality(kind, value) == quality


@pytest.mark.parametrize(
    ("quality", "held"),
    [(None, False), ("FLAGGED", True), ("RED", True), ("UNFLAGGED", False), ("YELLOW", False), ("GREEN", False)],
)
def test_a_flagged_or_low_quality_number_holds_marketing(quality: str | None, held: bool) -> None:
    assert NumberStanding(quality).holds_marketing is held


@pytest.mark.parametrize(
    ("kind", "coexistence"),
    [("smb_message_echoes", True), ("smb_app_state_sync", True), ("history", True),
     ("messages", False), ("phone_number_quality_update", False), ("account_update", False)],
)
def test_coexistence_is_known_from_the_webhooks_only_shared_numbers_get(kind: str, coexistence: bool) -> None:
    assert reports_coexistence(kind) is coexistence


@pytest.mark.parametrize(
    ("registry", "reported", "coexistence", "mps"),
    [
        (80, None, False, 80),
        (80, 1000, False, 1000),  # Meta's upgrade over the registry value
        (80, None, True, COEXISTENCE_MPS),
        (1000, None, True, COEXISTENCE_MPS),
        (80, 1000, True, COEXISTENCE_MPS),  # an upgrade does not lift a shared number past 20
        (10, None, True, 10),  # the operator may hold it lower
    ],
)
def test_a_number_shared_with_the_business_app_is_held_at_20_mps(
    registry: int, reported: int | None, coexistence: bool, mps: int
) -> None:
    assert number_throughput(registry, reported, coexistence=coexistence) == mps


@pytest.mark.parametrize(
    ("kind", "value", "changes"),
    [
        ("message_template_status_update", {"event": "PAUSED"}, {"status": "PAUSED"}),
        ("message_template_status_update", {"event": "DISABLED"}, {"status": "DISABLED"}),
        ("message_template_status_update", {"event": "REJECTED"}, {"status": "REJECTED"}),
        ("message_template_status_update", {"event": "APPROVED"}, {"status": "APPROVED"}),
        # a paused template that recovers, or one reinstated or unarchived, is APPROVED again
        ("message_template_status_update", {"event": "REINSTATED"}, {"status": "APPROVED"}),
        ("message_template_status_update", {"event": "UNPAUSED"}, {"status": "APPROVED"}),
        ("message_template_status_update", {"event": "UNARCHIVED"}, {"status": "APPROVED"}),
        # FLAGGED: quality fell, the template stays APPROVED (it was once stored as unsendable)
        ("message_template_status_update", {"event": "FLAGGED"}, {}),
        ("message_template_status_update", {"event": "LOCKED"}, {}),
        ("message_template_status_update", {"event": "PAUSED", "message_template_category": "MARKETING"},
         {"status": "PAUSED", "category": "MARKETING"}),
        ("message_template_quality_update", {"new_quality_score": "red"}, {"quality": "RED"}),
        ("template_category_update", {"previous_category": "UTILITY", "new_category": "MARKETING"},
         {"category": "MARKETING"}),
        # an impending change: new_category is still the category in force
        ("template_category_update", {"correct_category": "MARKETING", "new_category": "UTILITY",
                                      "category_update_timestamp": 1767225600}, {"category": "UTILITY"}),
        ("template_category_update", {}, {}),
    ],
)
def test_template_events_change_the_catalogue(kind: str, value: dict[str, Any], changes: dict[str, str]) -> None:
    assert template_change(kind, value) == changes


def _template(status: str, category: str = "MARKETING") -> Template:
    return Template("promo", "en", category, status, ({"type": "BODY", "text": "Sale for {{1}}"},))


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [("PAUSED", "template_paused", 132015), ("DISABLED", "template_disabled", 132016),
     ("REJECTED", "template_not_approved", 132001), ("APPROVED", None, None)],
)
def test_a_paused_or_disabled_template_is_refused_before_sending(
    status: str, reason: str | None, code: int | None
) -> None:
    if reason is None:
        check_sendable(_template(status))
        return
    with pytest.raises(TemplateProblem) as problem:
        check_sendable(_template(status))
    assert (problem.value.reason, problem.value.code) == (reason, code)


def test_tenant_sending_settings() -> None:
    assert TenantSending.of({}) == TenantSending()
    assert TenantSending.of({"sender": {"marketing_messages_api": True, "coexistence_numbers": ["1", 2]}}) == \
        TenantSending(True, frozenset({"1", "2"}))
    assert TenantSending.of({"sender": {"marketing_messages_api": "yes", "coexistence_numbers": "1"}}) == \
        TenantSending()


def _template_send(name: str) -> OutboundMessage:
    return OutboundMessage(
        event_id="m1", message_id="m1", phone_number_id="pn1", occurred_at=NOW, to="442071234567",
        type="template",
        template={"name": name, "language": "en",
                  "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ann"}]}]},
    )


CATALOGUE = TemplateCatalogue.of([_template("APPROVED"), Template(
    "shipping", "en", "UTILITY", "APPROVED", ({"type": "BODY", "text": "Parcel {{1}}"},))])


@pytest.mark.parametrize(
    ("template", "quality", "mm_api", "outcome"),
    [
        ("promo", None, False, "messages"),
        ("promo", "FLAGGED", False, "number_quality_low"),
        ("promo", "RED", True, "number_quality_low"),  # the Marketing Messages API checks the same
        ("promo", "UNFLAGGED", False, "messages"),  # recovered: marketing goes again
        ("promo", "YELLOW", True, "marketing_messages"),
        ("shipping", "FLAGGED", False, "messages"),  # utility is not held
        ("shipping", None, True, "messages"),  # only marketing goes through /marketing_messages
    ],
)
def test_marketing_from_a_held_number_is_refused_and_marketing_may_go_through_the_mm_api(
    template: str, quality: str | None, mm_api: bool, outcome: str
) -> None:
    ctx = SendContext(now=NOW, catalogue=CATALOGUE, number=NumberStanding(quality), marketing_messages_api=mm_api)
    decision = decide(_template_send(template), ctx)
    if isinstance(decision, Refusal):
        assert decision.reason == outcome
        assert quality is not None and quality in decision.detail
    else:
        assert isinstance(decision, SendPlan)
        assert decision.endpoint == outcome
        assert decision.body["type"] == "template"
