"""The webhook corpus through the pure normaliser: each file's payload gives exactly its events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from parley_common.meta import normalise_webhook
from parley_common.meta.webhook import ACCOUNT_ITEM_LISTS

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


@pytest.mark.parametrize(("name", "case"), CASES, ids=[n for n, _ in CASES])
def test_every_entry_change_message_and_status_comes_out_exactly_once_under_a_stable_id(
    name: str, case: dict
) -> None:
    """Walk the payload on its own: every item (message, status, account item, change-level
    errors, or a change, entry or envelope that is not Meta's shape) must come out exactly once:
    as one event, as the repeat of an id already published, or as one reported problem."""
    doc = case["webhook"]
    out = normalise_webhook(doc, received_at=RECEIVED, tenants=CORPUS_TENANTS)
    redelivered = normalise_webhook(doc, received_at=datetime.now(UTC), tenants=CORPUS_TENANTS)
    assert out.sources == redelivered.sources, "the same payload gives the same ids from the same items"
    leaves = dict(_leaves(doc))
    seen: Counter[str] = Counter()
    for event_id, where in out.sources.items():
        assert where in leaves, f"{event_id} came from {where}, which is not an item of the payload"
        seen[where] += 1
        expected = _meta_id(*leaves[where], where)
        if expected is not None:
            assert event_id == expected, f"{where}: event id {event_id!r}, Meta's id is {expected!r}"
    for where, event_id in out.duplicates:
        assert where in leaves and event_id in out.sources
        seen[where] += 1
    for p in out.problems:
        owners = [leaf for leaf in leaves if _within(p.where, leaf)]
        assert len(owners) == 1, f"problem at {p.where} belongs to {owners}"
        seen[owners[0]] += 1
    assert {w: n for w, n in seen.items() if n != 1} == {}, "items that came out more than once"
    assert sorted(set(leaves) - set(seen)) == [], "items that did not come out at all"
    events = [*out.messages, *out.statuses, *out.account_events]
    assert sorted(e.event_id for e in events) == sorted(out.sources)


def test_corpus_size() -> None:
    """The corpus grows, never shrinks (issue 12 asked for peers' and Meta's shapes)."""
    leaves = [leaf for _, c in CASES for leaf in _leaves(c["webhook"])]
    assert len(CASES) >= 37 and len(leaves) >= 98


def _within(problem_where: str, leaf: str) -> bool:
    if leaf == "$":
        return problem_where.startswith("$")
    return problem_where == leaf or problem_where.startswith((leaf + ".", leaf + "["))


def _meta_id(field: str, item: Any, where: str) -> str | None:
    """The id Meta gave a message or status, as its event must carry it (None: no such id)."""
    if field != "messages" or not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return None
    if ".value.messages[" in where:
        return item["id"]
    if ".value.statuses[" in where and isinstance(item.get("status"), str) and item.get("type") != "payment":
        return f"{item['id']}:{item['status']}"
    return None


def _leaves(doc: Any) -> Iterator[tuple[str, tuple[str, Any]]]:
    """(where, (field, item)) of every unit of the payload that must come out on its own."""
    for where, field, item in _units(doc):
        yield where, (field, item)


def _units(doc: Any) -> Iterator[tuple[str, str, Any]]:
    entries = doc.get("entry") if isinstance(doc, dict) else None
    if (not isinstance(doc, dict) or doc.get("object") != "whatsapp_business_account"
            or not isinstance(entries, list) or not entries):
        yield "$", "", doc
        return
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("changes"), list):
            yield f"entry[{i}]", "", entry
            continue
        for j, change in enumerate(entry["changes"]):
            cwhere = f"entry[{i}].changes[{j}]"
            if (not isinstance(change, dict) or not isinstance(change.get("field"), str)
                    or not isinstance(change.get("value"), dict)):
                yield cwhere, "", change
                continue
            value = change["value"]
            meta = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
            pnid = meta.get("phone_number_id") or value.get("phone_number_id")
            if change["field"] == "messages":
                lists = {k: value.get(k) for k in ("messages", "statuses", "errors")}
                if not pnid:
                    yield f"{cwhere}.value.metadata", "messages", value
                elif not any(isinstance(v, list) and v for v in lists.values()):
                    yield f"{cwhere}.value", "messages", value
                else:
                    for k in ("messages", "statuses"):
                        for n, item in enumerate(lists[k] if isinstance(lists[k], list) else []):
                            yield f"{cwhere}.value.{k}[{n}]", "messages", item
                    if isinstance(lists["errors"], list) and lists["errors"]:
                        yield f"{cwhere}.value.errors", "messages", lists["errors"]
                continue
            if not pnid and not entry.get("id"):
                yield cwhere, change["field"], change
                continue
            items = [(k, n, item) for k in ACCOUNT_ITEM_LISTS.get(change["field"], ())
                     if isinstance(value.get(k), list) for n, item in enumerate(value[k])]
            if not items:
                yield f"{cwhere}.value", change["field"], value
            for k, n, item in items:
                yield f"{cwhere}.value.{k}[{n}]", change["field"], item


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
