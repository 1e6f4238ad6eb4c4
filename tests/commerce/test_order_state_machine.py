"""The order state machine (billing's pure core): any order of facts, duplicates, refunds capped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from parley_billing.domain.orders import (
    Money,
    OrderFact,
    decide_refund,
    fold_order,
    refund_fact,
    requested_fact,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REF = "bus-ord-1"


def requested(total: int = 45000, at: int = 0) -> OrderFact:
    return OrderFact("requested:m1", "requested", T0 + timedelta(seconds=at),
                     {"currency": "INR", "total": {"value": total, "offset": 100}, "customer": "919900000001",
                      "phone_number_id": "100", "items": []})


def payment(fid: str, status: str, at: int, value: int = 45000, currency: str = "INR") -> OrderFact:
    return OrderFact(fid, "payment", T0 + timedelta(seconds=at),
                     {"status": status, "amount": {"value": value, "offset": 100}, "currency": currency})


def fulfilment(fid: str, status: str, at: int) -> OrderFact:
    return OrderFact(fid, "fulfilment", T0 + timedelta(seconds=at), {"status": status})


def refund(fid: str, value: int, at: int, seq: int | None = None) -> OrderFact:
    """A refund recorded through Parley; by default recorded in the order of its id (r1 before r2)."""
    order = seq if seq is not None else int(fid.lstrip("r")) if fid.lstrip("r").isdigit() else 0
    return refund_fact(fid, Money(Decimal(value) / 100, "INR"), T0 + timedelta(seconds=at), None, order)


def test_requested_then_captured_then_partly_and_fully_refunded() -> None:
    facts = [requested(), payment("p1", "pending", 10), payment("p2", "captured", 20)]
    order = fold_order(REF, facts)
    assert (order.state, order.payment_status) == ("captured", "captured")
    assert order.captured == Money(Decimal("450"), "INR")
    order = fold_order(REF, [*facts, refund("r1", 15000, 30)])
    assert order.state == "refunded_partly" and order.refunded == Money(Decimal("150"), "INR")
    order = fold_order(REF, [*facts, refund("r1", 15000, 30), refund("r2", 30000, 40)])
    assert order.state == "refunded_fully" and order.refundable == 0


def test_a_refund_recorded_later_never_displaces_an_earlier_one_whatever_the_clocks() -> None:
    facts = [requested(), payment("p", "captured", 5), refund("r1", 40000, 100, seq=0)]
    # the second refund's clock says it came first; it was recorded second: r1 stays counted
    order = fold_order(REF, [*facts, refund("r2", 5000, 50, seq=1)])
    assert order.refunded == Money(Decimal("450"), "INR")
    order = fold_order(REF, [*facts, refund("r2", 5001, 50, seq=1)])
    assert [(h.fact_id, h.status) for h in order.history if h.kind == "refund"] == [
        ("refund:r2", "refused"), ("refund:r1", "recorded")]


def test_a_refund_beyond_what_was_captured_is_refused_and_not_counted() -> None:
    facts = [requested(), payment("p", "captured", 5), refund("r1", 40000, 10), refund("r2", 10000, 11)]
    order = fold_order(REF, facts)
    assert order.refunded == Money(Decimal("400"), "INR")
    assert [(h.fact_id, h.status) for h in order.history if h.kind == "refund"] == [
        ("refund:r1", "recorded"), ("refund:r2", "refused")]
    assert decide_refund(order, Money(Decimal("50.01"), "INR")).accepted is False
    assert decide_refund(order, Money(Decimal("50.00"), "INR")).accepted is True
    assert decide_refund(order, None).amount == Money(Decimal("50"), "INR")


def test_nothing_captured_means_no_refund() -> None:
    order = fold_order(REF, [requested(), payment("p", "failed", 5)])
    assert order.state == "payment_failed"
    assert not decide_refund(order, Money(Decimal(1), "INR")).accepted


def test_a_payment_for_an_unknown_order_is_kept_as_unknown() -> None:
    order = fold_order(REF, [payment("p", "captured", 5)])
    assert order.state == "unknown"
    assert order.captured == Money(Decimal("450"), "INR")  # what Meta reported, for the report
    assert [h.status for h in order.history] == ["captured"]
    assert not decide_refund(order, None).accepted
    # and the order_details arriving later folds it in
    assert fold_order(REF, [payment("p", "captured", 5), requested(at=0)]).state == "captured"


def test_a_capture_wins_over_a_later_failed_retry_and_fulfilment_moves_the_state() -> None:
    facts = [requested(), payment("p1", "captured", 10), payment("p2", "failed", 20)]
    assert fold_order(REF, facts).state == "captured"
    assert fold_order(REF, [*facts, fulfilment("f1", "shipped", 30)]).state == "shipped"
    assert fold_order(REF, [*facts, fulfilment("f1", "shipped", 30), fulfilment("f2", "completed", 40)]
                      ).state == "completed"


def test_a_payment_in_another_currency_is_a_problem_not_money() -> None:
    order = fold_order(REF, [requested(), payment("p", "captured", 5, currency="USD")])
    assert order.captured is None and order.problems


def test_amounts_stay_exact_with_any_offset() -> None:
    assert Money.from_meta({"value": 12345, "offset": 1000}, "BRL", where="x").amount == Decimal("12.345")
    assert Money(Decimal("12.345"), "BRL").as_meta() == {"value": 12345, "offset": 1000, "currency": "BRL"}
    assert Money(Decimal("450"), "INR").as_meta() == {"value": 45000, "offset": 100, "currency": "INR"}


def test_order_details_message_becomes_a_requested_fact() -> None:
    message = {
        "message_id": "pm_1", "type": "interactive", "to": "919900000001", "phone_number_id": "100",
        "occurred_at": T0.isoformat(), "reply_to_wamid": "wamid.CART1",
        "content": {"type": "order_details", "body": {"text": "Your tickets"}, "action": {
            "name": "review_and_pay", "parameters": {
                "reference_id": REF, "type": "digital-goods", "currency": "INR",
                "total_amount": {"value": 90100, "offset": 100},
                "order": {"status": "pending", "items": [
                    {"retailer_id": "seat-3A", "name": "Seat 3A", "quantity": 2,
                     "amount": {"value": 45050, "offset": 100}}]}}}},
    }
    got = requested_fact(message)
    assert got is not None
    ref, fact = got
    assert ref == REF and fact.kind == "requested"
    order = fold_order(ref, [fact])
    assert order.state == "requested" and order.total == Money(Decimal("901"), "INR")
    assert order.customer == "919900000001" and order.conversation_wamid == "wamid.CART1"
    assert order.items[0]["amount"] == {"value": 45050, "offset": 100, "currency": "INR"}


# --- properties ----------------------------------------------------------------------------

payments = st.builds(
    payment, fid=st.sampled_from(["p1", "p2", "p3", "p4"]),
    status=st.sampled_from(["pending", "captured", "failed"]), at=st.integers(0, 50),
    value=st.sampled_from([45000, 30000]))
fulfilments = st.builds(fulfilment, fid=st.sampled_from(["f1", "f2", "f3"]),
                        status=st.sampled_from(["processing", "shipped", "completed", "canceled"]),
                        at=st.integers(0, 50))
refunds = st.builds(refund, fid=st.sampled_from(["r1", "r2", "r3", "r4", "r5"]),
                    value=st.integers(1, 50000), at=st.integers(-20, 60))
fact_lists = st.lists(st.one_of(payments, fulfilments, refunds), max_size=12).flatmap(
    lambda fs: st.sampled_from([fs, [requested(), *fs]]))


def _distinct_ids(facts: list[OrderFact]) -> list[OrderFact]:
    """Facts with one id are one fact: keep the first of each id (as the store does)."""
    seen: dict[str, OrderFact] = {}
    for f in facts:
        seen.setdefault(f.fact_id, f)
    return list(seen.values())


@settings(max_examples=300, deadline=None)
@given(facts=fact_lists, data=st.data())
def test_any_arrival_order_and_any_duplicates_give_the_same_order(facts: list[OrderFact], data: st.DataObject
                                                                    ) -> None:
    facts = _distinct_ids(facts)
    shuffled = data.draw(st.permutations(facts))
    duplicated = shuffled + data.draw(st.lists(st.sampled_from(facts), max_size=5)) if facts else shuffled
    assert fold_order(REF, duplicated) == fold_order(REF, facts)


@settings(max_examples=300, deadline=None)
@given(facts=fact_lists)
def test_refunds_never_exceed_what_was_captured(facts: list[OrderFact]) -> None:
    order = fold_order(REF, _distinct_ids(facts))
    refunded = order.refunded.amount if order.refunded else Decimal(0)
    captured = order.captured.amount if order.captured else Decimal(0)
    assert Decimal(0) <= refunded <= captured
    assert order.state in ("refunded_partly", "refunded_fully") or refunded == 0 or order.state == "unknown"


@settings(max_examples=300, deadline=None)
@given(facts=fact_lists, value=st.integers(1, 60000))
def test_an_accepted_refund_is_counted_exactly_and_a_refused_one_never(facts: list[OrderFact], value: int
                                                                       ) -> None:
    facts = _distinct_ids(facts)
    before = fold_order(REF, facts)
    amount = Money(Decimal(value) / 100, "INR")
    decision = decide_refund(before, amount)
    # recorded after every refund before it, at any clock time (a replica's clock may be behind)
    after = fold_order(REF, [*facts, refund("new", value, -30, seq=100)])
    gained = (after.refunded.amount if after.refunded else 0) - (before.refunded.amount if before.refunded else 0)
    assert gained == (amount.amount if decision.accepted else 0)
