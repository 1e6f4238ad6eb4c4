"""Order events and ad conversions (billing's pure core, ADR 0113): for any arrival order of an
order's facts, with duplicates, the events told are exactly the changes, the last one is the
order's final state, ids are stable, and a paid ad order converts once."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parley_billing.domain.facts import inbound_record
from parley_billing.domain.order_events import (
    CONVERSIONS_ENDPOINT,
    ORDERS_ENDPOINT,
    OrderMark,
    TenantOrderSettings,
    calls_for,
    change_of,
    conversion_event,
    event_id,
    order_event,
)
from parley_billing.domain.orders import Money, OrderFact, fold_order, refund_fact
from parley_billing.order_store import view_json
from parley_common.contracts import OrderEvent
from parley_common.meta import normalise_webhook
from pydantic import ValidationError

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REF, TENANT = "bus-ev-1", "shop"


def requested(clid: str | None = None) -> OrderFact:
    body = {"currency": "INR", "total": {"value": 45000, "offset": 100}, "customer": "919900000001",
            "phone_number_id": "100", "items": [], "ctwa_clid": clid}
    return OrderFact("requested:m1", "requested", T0, body)


def payment(fid: str, status: str, at: int) -> OrderFact:
    return OrderFact(fid, "payment", T0 + timedelta(seconds=at),
                     {"status": status, "amount": {"value": 45000, "offset": 100}, "currency": "INR"})


def fulfilment(fid: str, status: str, at: int) -> OrderFact:
    return OrderFact(fid, "fulfilment", T0 + timedelta(seconds=at), {"status": status})


def refund(n: int, value: int) -> OrderFact:
    return refund_fact(f"r{n}", Money(Decimal(value) / 100, "INR"), T0 + timedelta(seconds=100 + n), None, n)


FACTS = [requested("clid-1"), payment("p1", "pending", 10), payment("p2", "failed", 20),
         payment("p3", "captured", 30), fulfilment("f1", "shipped", 40), fulfilment("f2", "completed", 50),
         refund(0, 10000), refund(1, 5000)]


def told(arrivals: list[OrderFact]) -> list[dict[str, object]]:
    """The events billing writes while the facts arrive one by one (as the store re-folds)."""
    seen: list[OrderFact] = []
    before: OrderMark | None = None
    events = []
    for f in arrivals:
        if any(f.fact_id == s.fact_id for s in seen):
            continue  # a duplicate is not stored, not re-folded
        seen.append(f)
        view = fold_order(REF, seen)
        event = order_event(TENANT, view, view_json(view), T0, before)
        if event is not None:
            events.append(event)
        before = OrderMark.of(view)
    return events


@settings(max_examples=300, deadline=None)
@given(st.permutations(FACTS), st.lists(st.sampled_from(FACTS), max_size=4))
def test_any_arrival_order_tells_each_change_once_and_ends_with_the_final_state(
        order: list[OrderFact], duplicates: list[OrderFact]) -> None:
    arrivals = [*order, *duplicates]
    events = told(arrivals)
    final = fold_order(REF, FACTS)
    assert events, "the order became the business's at some point"
    assert events[-1]["state"] == final.state == "refunded_partly"
    assert events[-1]["event_id"] == event_id(TENANT, final)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)), "no change told twice"
    for a, b in itertools.pairwise(events):
        assert (a["state"], a["order"]["refunded"]) != (b["state"], b["order"]["refunded"])
    refunded = [Decimal(e["order"]["refunded"]["value"]) for e in events if e["type"] == "order.refunded"]
    assert refunded == sorted(refunded), "each refund event refunds more"
    assert all(e["type"] != "order.unknown" and e["state"] != "unknown" for e in events)
    for e in events:
        OrderEvent.model_validate(e)  # the record on wa.orders parses as the contract


def test_the_same_change_found_again_is_no_event_and_has_the_same_id() -> None:
    view = fold_order(REF, FACTS[:4])
    first = order_event(TENANT, view, view_json(view), T0, OrderMark("requested"))
    assert first is not None and first["type"] == "order.payment_captured"
    assert order_event(TENANT, view, view_json(view), T0 + timedelta(hours=1), OrderMark.of(view)) is None
    again = order_event(TENANT, view, view_json(view), T0 + timedelta(hours=1), OrderMark("payment_pending"))
    assert again is not None and again["event_id"] == first["event_id"]
    assert change_of(None, fold_order(REF, [payment("p", "captured", 1)])) is None, "unknown is not told"


def test_a_paid_order_from_an_ad_converts_once_and_only_to_configured_endpoints() -> None:
    settings_both = TenantOrderSettings.from_tenant_settings({"orders": {
        "endpoint": {"url": "https://shop.example/orders", "secret_ref": "env:S"},
        "conversions": {"url": "https://ads.example/capi", "secret_ref": "env:C"}}})
    paid = fold_order(REF, FACTS[:4])
    shipped = fold_order(REF, FACTS[:5])
    e_paid = order_event(TENANT, paid, view_json(paid), T0, OrderMark("requested"))
    e_shipped = order_event(TENANT, shipped, view_json(shipped), T0, OrderMark.of(paid))
    assert e_paid is not None and e_shipped is not None
    c_paid, c_shipped = conversion_event(e_paid), conversion_event(e_shipped)
    assert c_paid is not None and c_shipped is not None
    assert c_paid["event_id"] == c_shipped["event_id"], "one conversion per order and ad click"
    [data] = c_paid["data"]
    assert data["user_data"] == {"ctwa_clid": "clid-1"} and data["custom_data"]["value"] == 450.0
    assert [c[0] for c in calls_for(e_paid, settings_both)] == [ORDERS_ENDPOINT, CONVERSIONS_ENDPOINT]
    # not paid, or no ad: no conversion; no endpoints configured: no calls
    requested_only = fold_order(REF, FACTS[:1])
    e_req = order_event(TENANT, requested_only, view_json(requested_only), T0, None)
    assert e_req is not None and conversion_event(e_req) is None
    no_ad = fold_order(REF, [requested(None), payment("p", "captured", 1)])
    e_no_ad = order_event(TENANT, no_ad, view_json(no_ad), T0, None)
    assert e_no_ad is not None and conversion_event(e_no_ad) is None
    assert calls_for(e_paid, TenantOrderSettings()) == []


def test_order_endpoint_settings_refuse_inline_secrets() -> None:
    with pytest.raises(ValidationError, match="secret"):
        TenantOrderSettings.from_tenant_settings({"orders": {"endpoint": {"url": "https://x.example",
                                                                          "secret_ref": "hunter2"}}})


def test_meta_documented_ad_referral_keeps_its_click_id_into_billing() -> None:
    """Meta's click-to-WhatsApp example (the ingest corpus): the first message's referral gives
    billing the ``ctwa_clid`` an order is attributed to; a Status-placement ad carries none."""
    doc = json.loads((Path(__file__).parents[1] / "fixtures" / "webhooks" / "message_ad_referral.json").read_text())
    messages = normalise_webhook(doc["webhook"], received_at=T0).messages
    records = [inbound_record(m.model_dump(mode="json")) for m in messages]
    assert (records[0].wamid, records[0].referral, records[0].ctwa_clid) == (
        "wamid.CTWA1", True, "Aff-n8ZTODiE79d22KtAwQKj9e_mIEOO")
    assert all(r.ctwa_clid is None for r in records[1:]), [(r.wamid, r.ctwa_clid) for r in records]
