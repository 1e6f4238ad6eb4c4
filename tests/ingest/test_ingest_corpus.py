"""The webhook corpus through the pure normaliser: each file's payload gives exactly its events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from parley_common.meta import normalise_webhook

from .ingest_support import CORPUS_TENANTS, assert_subset, corpus_cases

RECEIVED = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
CASES = corpus_cases()


def test_corpus_covers_what_the_issue_lists() -> None:
    names = {name for name, _ in CASES}
    types = {m.get("type") for _, c in CASES for m in _messages(c["webhook"])}
    assert {
        "text",
        "image",
        "video",
        "audio",
        "document",
        "sticker",
        "location",
        "contacts",
        "reaction",
        "interactive",
        "button",
        "order",
        "system",
        "unsupported",
    } <= types
    statuses = {s.get("status") for _, c in CASES for s in _statuses(c["webhook"])}
    assert {"sent", "delivered", "read", "failed", "played"} <= statuses
    models = {
        (s.get("pricing") or {}).get("pricing_model") for _, c in CASES for s in _statuses(c["webhook"])
    }
    assert {"PMP", "CBP"} <= models
    assert {
        "batched_entries",
        "message_ad_referral",
        "message_username_without_phone",
        "template_updates",
        "user_preferences",
        "unknown_values_kept",
    } <= names


@pytest.mark.parametrize(("name", "case"), CASES, ids=[n for n, _ in CASES])
def test_corpus_payload_normalises_to_its_expected_events(name: str, case: dict) -> None:
    out = normalise_webhook(case["webhook"], received_at=RECEIVED, tenants=CORPUS_TENANTS)
    expect = case["expect"]
    assert_subset(expect["messages_in"], [m.model_dump(mode="json") for m in out.messages], "messages_in")
    assert_subset(expect["statuses"], [s.model_dump(mode="json") for s in out.statuses], "statuses")
    assert_subset(
        expect["account_events"], [a.model_dump(mode="json") for a in out.account_events], "account_events"
    )
    assert_subset(
        expect["problems"], [{"where": p.where, "reason": p.reason} for p in out.problems], "problems"
    )


@pytest.mark.parametrize(("name", "case"), CASES, ids=[n for n, _ in CASES])
def test_normalising_twice_gives_the_same_event_ids(name: str, case: dict) -> None:
    first = normalise_webhook(case["webhook"], received_at=RECEIVED, tenants=CORPUS_TENANTS)
    later = normalise_webhook(case["webhook"], received_at=datetime.now(UTC), tenants=CORPUS_TENANTS)
    ids = [e.event_id for e in (*first.messages, *first.statuses, *first.account_events)]
    assert ids == [e.event_id for e in (*later.messages, *later.statuses, *later.account_events)]
    assert len(ids) == len(set(ids)), "event ids within one webhook are distinct"


def _changes(webhook: dict) -> list[dict]:
    entries = webhook.get("entry") if isinstance(webhook.get("entry"), list) else []
    return [c for e in entries if isinstance(e, dict) for c in e.get("changes", []) if isinstance(c, dict)]


def _messages(webhook: dict) -> list[dict]:
    return [
        m
        for c in _changes(webhook)
        for m in (c.get("value") or {}).get("messages", [])
        if isinstance(m, dict)
    ]


def _statuses(webhook: dict) -> list[dict]:
    return [
        s
        for c in _changes(webhook)
        for s in (c.get("value") or {}).get("statuses", [])
        if isinstance(s, dict)
    ]
