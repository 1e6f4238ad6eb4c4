"""The send contract (``parley_common.contracts``, docs/adr/0007) is the one home of what Parley
sends: message types, text and button limits, priorities. Ingest (at the door) and the sender
(for requests that did not come through ingest) judge a request alike because both read it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from parley_common.contracts import (
    FREE_FORM_TYPES,
    REPLY_BUTTONS_MAX,
    SEND_PRIORITIES,
    SEND_TYPES,
    TEXT_BODY_MAX,
    OutboundMessage,
)
from parley_ingest.domain.send_requests import SendMessageRequest
from parley_sender.domain.governor import priority_rank
from parley_sender.domain.policy import Refusal, SendContext, SendPlan, decide
from parley_sender.domain.windows import ConversationWindows
from pydantic import ValidationError

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
OPEN = SendContext(now=NOW, windows=ConversationWindows().observe_inbound(NOW, from_referral=False))


def ingest_accepts(type_: str, obj: Any) -> bool:
    try:
        req = SendMessageRequest.model_validate({"from": "880000000001", "to": "+16505551234", "type": type_,
                                                 type_: obj})
    except ValidationError:
        return False
    return req.problems() == []


def sender_accepts(type_: str, obj: Any) -> bool:
    msg = OutboundMessage(event_id="m1", message_id="m1", phone_number_id="pn1", occurred_at=NOW, received_at=NOW,
                          to="16505551234", type=type_, content=obj)
    outcome = decide(msg, OPEN)
    assert isinstance(outcome, SendPlan | Refusal)
    return isinstance(outcome, SendPlan)


def buttons(n: int) -> dict[str, Any]:
    return {"type": "button", "body": {"text": "Pick"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": f"b{i}", "title": f"B{i}"}} for i in range(n)]}}


@pytest.mark.parametrize(
    ("type_", "obj", "allowed"),
    [
        ("text", {"body": "x" * TEXT_BODY_MAX}, True),
        ("text", {"body": "x" * (TEXT_BODY_MAX + 1)}, False),
        ("interactive", buttons(REPLY_BUTTONS_MAX), True),
        ("interactive", buttons(REPLY_BUTTONS_MAX + 1), False),
        ("interactive", buttons(0), False),
    ],
)
def test_ingest_and_sender_judge_limits_alike(type_: str, obj: Any, allowed: bool) -> None:
    assert ingest_accepts(type_, obj) is allowed
    assert sender_accepts(type_, obj) is allowed


def test_every_free_form_type_of_the_contract_is_sendable_by_the_sender_and_no_other() -> None:
    assert FREE_FORM_TYPES == set(SEND_TYPES) - {"template"}
    for t in SEND_TYPES:
        msg = OutboundMessage(event_id="m1", message_id="m1", phone_number_id="pn1", occurred_at=NOW,
                              received_at=NOW, to="16505551234", type=t, content={"body": "hi"})
        outcome = decide(msg, OPEN)
        assert not (isinstance(outcome, Refusal) and outcome.reason == "unsupported_type"), t
    other = OutboundMessage(event_id="m1", message_id="m1", phone_number_id="pn1", occurred_at=NOW,
                            received_at=NOW, to="16505551234", type="hologram", content={})
    assert decide(other, OPEN) == Refusal("unsupported_type", "message type 'hologram' is not supported", 131051)


def test_ingest_takes_exactly_the_contracts_types_and_priorities() -> None:
    assert set(SendMessageRequest.model_fields["type"].annotation.__args__) == set(SEND_TYPES)  # type: ignore[union-attr]
    for p in SEND_PRIORITIES:
        assert SendMessageRequest.model_validate(
            {"from": "880000000001", "to": "+16505551234", "type": "text", "text": {"body": "hi"}, "priority": p}
        ).priority == p
    with pytest.raises(ValidationError):
        SendMessageRequest.model_validate(
            {"from": "880000000001", "to": "+16505551234", "type": "text", "text": {"body": "hi"}, "priority": "vip"}
        )


def test_the_sender_serves_priorities_in_the_contracts_order() -> None:
    assert sorted(SEND_PRIORITIES, key=priority_rank) == list(SEND_PRIORITIES)
    assert priority_rank(SEND_PRIORITIES[0]) < priority_rank(SEND_PRIORITIES[-1])
    assert priority_rank("unknown") == priority_rank("marketing")  # an unknown one waits last
