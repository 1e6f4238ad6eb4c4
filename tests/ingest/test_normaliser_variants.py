"""Webhook shapes peers have seen from Meta that Parley used to lose or mis-key (issue 12, 13).

Each test names the defect it reproduces; none needs infrastructure.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from parley_common.meta import normalise_webhook

from .ingest_support import CORPUS_TENANTS

RECEIVED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
PNID, WABA = "880000000001", "880000000101"


def _webhook(value: dict[str, Any], field: str = "messages", **entry: Any) -> dict[str, Any]:
    metadata = {"display_phone_number": "15550100001", "phone_number_id": PNID}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA, **entry, "changes": [{"field": field, "value": {
            "messaging_product": "whatsapp", "metadata": metadata, **value}}]}],
    }


def _text(wamid: str, **fields: Any) -> dict[str, Any]:
    return {"from": "16505550101", "id": wamid, "timestamp": "1762000000", "type": "text",
            "text": {"body": "hello"}, **fields}


def test_integer_conversation_expiry_keeps_the_status_and_its_pricing() -> None:
    status = {"id": "wamid.OUT.INT", "status": "sent", "timestamp": "1762000000", "recipient_id": "16505550101",
              "conversation": {"id": "conv-1", "expiration_timestamp": 1762086400, "origin": {"type": "utility"}},
              "pricing": {"billable": True, "pricing_model": "CBP", "category": "utility"}}
    out = normalise_webhook(_webhook({"statuses": [status]}), received_at=RECEIVED, tenants=CORPUS_TENANTS)
    assert out.problems == []
    [st] = out.statuses
    assert st.conversation is not None and st.conversation.expiration_timestamp == "1762086400"
    assert st.pricing is not None and st.pricing.category == "utility" and st.pricing.pricing_model == "CBP"


def test_an_odd_sub_field_is_kept_raw_and_reported_never_dropping_the_status() -> None:
    status = {"id": "wamid.OUT.ODD", "status": "delivered", "timestamp": "1762000000",
              "recipient_id": "16505550101",
              "conversation": {"id": {"nested": "object"}, "origin": {"type": "marketing"}},
              "pricing": {"billable": "sometimes", "pricing_model": "PMP", "type": "regular",
                          "category": "marketing"}}
    out = normalise_webhook(_webhook({"statuses": [status]}), received_at=RECEIVED, tenants=CORPUS_TENANTS)
    assert out.problems == []
    [st] = out.statuses
    assert st.pricing is not None and st.pricing.category == "marketing" and st.pricing.billable is None
    assert st.pricing.model_dump()["raw_billable"] == "sometimes"
    assert st.conversation is not None and st.conversation.origin_type == "marketing"
    assert st.conversation.model_dump()["raw_id"] == {"nested": "object"}
    assert any(n.startswith("pricing.billable:") for n in st.notes)
    assert any(n.startswith("conversation.id:") for n in st.notes)
    assert all("sometimes" not in n for n in st.notes), "notes name fields, never values"


def test_numeric_referral_ids_and_odd_context_keep_the_message() -> None:
    msg = _text("wamid.IN.REF", referral={"source_id": 120226305854810726, "source_type": "ad",
                                          "headline": ["not", "text"]},
                context={"id": "wamid.OUT.PREV", "forwarded": "maybe"})
    out = normalise_webhook(_webhook({"messages": [msg]}), received_at=RECEIVED, tenants=CORPUS_TENANTS)
    assert out.problems == []
    [m] = out.messages
    assert m.referral is not None and m.referral.source_id == "120226305854810726"
    assert m.referral.headline is None and m.referral.model_dump()["raw_headline"] == ["not", "text"]
    assert m.context is not None and m.context.message_id == "wamid.OUT.PREV"
    assert sorted(n.split(":")[0] for n in m.notes) == ["context.forwarded", "referral.headline"]


def test_non_numeric_and_missing_timestamps_are_treated_alike_and_said_so() -> None:
    words = _text("wamid.IN.WORDS", timestamp="yesterday")
    missing = _text("wamid.IN.NONE")
    del missing["timestamp"]
    huge = _text("wamid.IN.HUGE", timestamp=1e20)
    out = normalise_webhook(_webhook({"messages": [words, missing, huge]}), received_at=RECEIVED,
                            tenants=CORPUS_TENANTS)
    assert out.problems == []
    by_id = {m.wamid: m for m in out.messages}
    assert set(by_id) == {"wamid.IN.WORDS", "wamid.IN.NONE", "wamid.IN.HUGE"}
    for m in by_id.values():
        assert m.occurred_at == RECEIVED
    assert by_id["wamid.IN.WORDS"].notes == ["timestamp: not unix seconds; occurred_at is the receive time"]
    assert by_id["wamid.IN.HUGE"].notes == ["timestamp: not unix seconds; occurred_at is the receive time"]
    assert by_id["wamid.IN.NONE"].notes == ["timestamp: missing; occurred_at is the receive time"]


def test_a_bad_status_timestamp_keeps_the_status() -> None:
    status = {"id": "wamid.OUT.T", "status": "read", "timestamp": "soon", "recipient_id": "16505550101"}
    out = normalise_webhook(_webhook({"statuses": [status]}), received_at=RECEIVED, tenants=CORPUS_TENANTS)
    [st] = out.statuses
    assert st.occurred_at == RECEIVED and st.notes == ["timestamp: not unix seconds; occurred_at is the receive time"]


def _calls_webhook(*calls: dict[str, Any]) -> dict[str, Any]:
    return _webhook({"contacts": [{"profile": {"name": "Caller"}, "wa_id": "16505550101"}], "calls": list(calls)},
                    field="calls")


CONNECT = {"id": "wacid.CALL1", "from": "16505550101", "to": "15550100001", "event": "connect",
           "timestamp": "1762000100", "direction": "USER_INITIATED",
           "session": {"sdp_type": "offer", "sdp": "v=0"}}
TERMINATE = {"id": "wacid.CALL1", "from": "16505550101", "to": "15550100001", "event": "terminate",
             "timestamp": "1762000160", "direction": "USER_INITIATED", "status": "COMPLETED",
             "duration": 60}


def test_account_events_take_time_and_ids_from_what_meta_sent() -> None:
    first = normalise_webhook(_calls_webhook(CONNECT, TERMINATE), received_at=RECEIVED, tenants=CORPUS_TENANTS)
    again = normalise_webhook(_calls_webhook(TERMINATE), received_at=LATER, tenants=CORPUS_TENANTS)
    assert [(e.kind, e.event_id) for e in first.account_events] == [
        ("calls", "calls:calls:wacid.CALL1:connect"), ("calls", "calls:calls:wacid.CALL1:terminate")]
    assert [e.occurred_at for e in first.account_events] == [
        datetime.fromtimestamp(1762000100, tz=UTC), datetime.fromtimestamp(1762000160, tz=UTC)]
    # Meta redelivers the terminate on its own, a day later: the same id and event time.
    [redelivered] = again.account_events
    assert redelivered.event_id == first.account_events[1].event_id
    assert redelivered.occurred_at == first.account_events[1].occurred_at
    assert redelivered.value["calls"] == [TERMINATE]
    assert redelivered.value["contacts"][0]["wa_id"] == "16505550101"
    assert redelivered.tenant_id == "ingest-acme" and redelivered.notes == []


def test_user_preferences_and_echoes_are_one_event_per_item_at_the_item_time() -> None:
    prefs = [{"wa_id": "16505550101", "category": "marketing_messages", "value": "stop",
              "timestamp": 1762000200},
             {"wa_id": "16505550102", "category": "marketing_messages", "value": "resume",
              "timestamp": 1762000300}]
    out = normalise_webhook(_webhook({"user_preferences": prefs}, field="user_preferences"),
                            received_at=RECEIVED, tenants=CORPUS_TENANTS)
    later = normalise_webhook(_webhook({"user_preferences": prefs[1:]}, field="user_preferences"),
                              received_at=LATER, tenants=CORPUS_TENANTS)
    assert [e.occurred_at.timestamp() for e in out.account_events] == [1762000200, 1762000300]
    assert [e.value["user_preferences"] for e in out.account_events] == [[prefs[0]], [prefs[1]]]
    assert later.account_events[0].event_id == out.account_events[1].event_id
    echo = {"from": "15550100001", "to": "16505550101", "id": "wamid.ECHO1", "timestamp": "1762000400",
            "type": "text", "text": {"body": "sent from the app"}}
    echoes = normalise_webhook(_webhook({"message_echoes": [echo]}, field="smb_message_echoes"),
                               received_at=RECEIVED, tenants=CORPUS_TENANTS)
    [ev] = echoes.account_events
    assert ev.event_id == "smb_message_echoes:message_echoes:wamid.ECHO1"
    assert ev.occurred_at.timestamp() == 1762000400


def test_bad_entry_time_on_change_level_errors_is_kept_not_raised() -> None:
    errors = {"errors": [{"code": 131000, "title": "Something went wrong"}]}
    for bad in ("abc", 1e20, -1e300, True):
        out = normalise_webhook(_webhook(errors, time=bad), received_at=RECEIVED, tenants=CORPUS_TENANTS)
        [ev] = out.account_events
        assert ev.kind == "messages.errors" and ev.occurred_at == RECEIVED
        assert ev.notes == ["entry.time: not unix seconds; occurred_at is the receive time"]
    good = normalise_webhook(_webhook(errors, time=1762000500), received_at=RECEIVED, tenants=CORPUS_TENANTS)
    assert good.account_events[0].occurred_at.timestamp() == 1762000500 and good.account_events[0].notes == []


def test_two_items_with_one_id_in_one_webhook_are_published_once() -> None:
    msg = _text("wamid.IN.TWICE")
    status = {"id": "wamid.OUT.TWICE", "status": "sent", "timestamp": "1762000000", "recipient_id": "1650555"}
    doc = _webhook({"messages": [msg, copy.deepcopy(msg)], "statuses": [status, copy.deepcopy(status)]})
    doc["entry"].append(copy.deepcopy(doc["entry"][0]))  # and Meta batched the same change twice
    out = normalise_webhook(doc, received_at=RECEIVED, tenants=CORPUS_TENANTS)
    assert [m.event_id for m in out.messages] == ["wamid.IN.TWICE"]
    assert [s.event_id for s in out.statuses] == ["wamid.OUT.TWICE:sent"]
    assert len(out.duplicates) == 6
    assert out.sources == {"wamid.IN.TWICE": "entry[0].changes[0].value.messages[0]",
                           "wamid.OUT.TWICE:sent": "entry[0].changes[0].value.statuses[0]"}


def test_a_message_without_a_sender_is_kept_reported_and_never_keyed_on_a_shared_value() -> None:
    a, b = _text("wamid.IN.NOBODY1"), _text("wamid.IN.NOBODY2")
    del a["from"], b["from"]
    doc = _webhook({"contacts": [{"profile": {"name": "No number"}}, {"profile": {"name": "Nor this"}}],
                    "messages": [a, b]})
    out = normalise_webhook(doc, received_at=RECEIVED, tenants=CORPUS_TENANTS)
    assert out.problems == []
    m1, m2 = out.messages
    assert not m1.has_sender and m1.customer_id != m2.customer_id
    assert "unknown" not in (m1.customer_id, m2.customer_id)
    assert m1.notes and m1.notes[0].startswith("no sender")


def test_nul_in_a_message_id_is_refused_alone_naming_the_field() -> None:
    bad = _text("wamid.IN.\x00NUL")
    fine = _text("wamid.IN.FINE")
    nul_text = _text("wamid.IN.NULTEXT", text={"body": "a\x00b"})
    out = normalise_webhook(_webhook({"messages": [bad, fine, nul_text]}), received_at=RECEIVED,
                            tenants=CORPUS_TENANTS)
    assert [m.wamid for m in out.messages] == ["wamid.IN.FINE"]
    assert [(p.where, p.reason) for p in out.problems] == [
        ("entry[0].changes[0].value.messages[0].id", "contains NUL (U+0000), which PostgreSQL cannot store"),
        ("entry[0].changes[0].value.messages[2].text.body",
         "contains NUL (U+0000), which PostgreSQL cannot store"),
    ]


def test_nul_deep_inside_a_nested_value_is_found_without_recursion() -> None:
    """Hostile nesting (hundreds of levels, as the fuzz run sends) is walked, and the dead letter
    of such a fragment is written without copying it (orjson stops at 255 levels)."""
    from parley_ingest.domain.records import webhook_records

    deep: Any = "a\x00b"
    for _ in range(900):
        deep = [deep]
    msg = _text("wamid.IN.DEEP", x_unknown=deep)
    doc = _webhook({"messages": [msg, _text("wamid.IN.SHALLOW")]})
    out = normalise_webhook(doc, received_at=RECEIVED, tenants=CORPUS_TENANTS)
    assert [m.wamid for m in out.messages] == ["wamid.IN.SHALLOW"]
    [problem] = out.problems
    assert problem.where == "entry[0].changes[0].value.messages[0].x_unknown" + ".0" * 900
    records = webhook_records(b"{}", out, app_id="app", received_at=RECEIVED)
    [letter] = [r for r in records if r.topic.endswith("wa.deadletter")]
    assert b"nested too deep" in letter.value
    assert b"the item's id is wamid.IN.DEEP" in letter.value  # the letter names what it stands for
