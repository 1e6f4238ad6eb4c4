"""The pricing engine's rules, with property-based tests at the boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parley_billing.domain.engine import (
    PMP_START,
    Business,
    InboundFact,
    OutboundFact,
    Timeline,
    apply_monthly_effects,
    month_of,
    price_timeline,
)
from parley_billing.domain.rates import RateBook, RateFileError, TierBook, parse_rate_card, parse_tiers

CARD = RateBook(parse_rate_card(resources.files("parley_billing.data").joinpath("example_rate_card.csv").read_text()))
INDIA = "919876543210"
T0 = datetime(2026, 2, 2, 9, tzinfo=UTC)
US_BUSINESS = Business("US", CARD)
IN_BUSINESS = Business("IN", CARD)


def price_one(msg: OutboundFact, inbound: tuple[InboundFact, ...] = (), business: Business = IN_BUSINESS,
              others: tuple[OutboundFact, ...] = ()):
    priced = price_timeline(Timeline(INDIA, inbound, (msg, *others)), business)
    return next(p for p in priced if p.wamid == msg.wamid)


offsets = st.integers(min_value=0, max_value=200 * 3600)


@given(seconds=offsets)
def test_utility_template_is_free_exactly_while_the_customer_service_window_is_open(seconds: int) -> None:
    delivered = T0 + timedelta(seconds=seconds)
    p = price_one(OutboundFact("u", delivered, True, "utility"), (InboundFact(T0),))
    in_window = seconds < 24 * 3600  # open for 24 h; at exactly 24 h it is closed
    assert p.billable is (not in_window)
    assert p.type == ("free_customer_service" if in_window else "regular")
    assert p.amount == (Decimal(0) if in_window else Decimal("0.0014"))


@given(seconds=offsets)
def test_marketing_is_charged_inside_the_service_window(seconds: int) -> None:
    p = price_one(OutboundFact("m", T0 + timedelta(seconds=seconds), True, "marketing"), (InboundFact(T0),))
    assert p.billable and p.amount == Decimal("0.0118")


@given(reply_after=st.integers(0, 30 * 3600), later=st.integers(0, 80 * 3600))
def test_free_entry_point_lasts_72_hours_from_a_reply_within_24_hours(reply_after: int, later: int) -> None:
    reply = OutboundFact("reply", T0 + timedelta(seconds=reply_after), False)
    msg = OutboundFact("mkt", reply.delivered_at + timedelta(seconds=later), True, "marketing")
    p = price_one(msg, (InboundFact(T0, referral=True),), others=(reply,))
    free = reply_after < 24 * 3600 and later < 72 * 3600
    assert p.type == ("free_entry_point" if free else "regular")
    assert p.billable is (not free)


def test_authentication_is_international_only_when_the_business_is_elsewhere_and_the_market_has_a_rate() -> None:
    msg = OutboundFact("a", T0, True, "authentication")
    assert price_one(msg, business=US_BUSINESS).category == "authentication-international"
    assert price_one(msg, business=US_BUSINESS).amount == Decimal("0.0304")
    assert price_one(msg, business=IN_BUSINESS).category == "authentication"
    brazil = price_timeline(Timeline("5511987654321", (), (msg,)), US_BUSINESS)[0]
    assert brazil.category == "authentication"  # Brazil has no international rate in the card


def test_meta_pricing_does_not_decide_the_price() -> None:
    from parley_billing.domain.engine import MetaPricing

    msg = OutboundFact("u", T0 + timedelta(hours=1), True, "utility", MetaPricing(True, "PMP", "regular", "utility"))
    p = price_one(msg, (InboundFact(T0),))
    assert not p.billable and p.meta == msg.meta


@given(seconds=st.integers(-48 * 3600, 48 * 3600))
def test_the_model_changes_at_2025_07_01_utc(seconds: int) -> None:
    t = PMP_START + timedelta(seconds=seconds)
    p = price_one(OutboundFact("x", t, False))
    assert p.pricing_model == ("PMP" if seconds >= 0 else "CBP")


def test_cbp_one_charge_per_24h_conversation_per_category() -> None:
    t = datetime(2024, 10, 5, 8, tzinfo=UTC)
    msgs = [OutboundFact(f"m{i}", t + timedelta(hours=h), True, "marketing") for i, h in enumerate((0, 5, 23.99, 24))]
    priced = {p.wamid: p for p in price_timeline(Timeline(INDIA, (), msgs), IN_BUSINESS)}
    assert [priced[f"m{i}"].amount for i in range(4)] == [Decimal("0.0107"), 0, 0, Decimal("0.0107")]
    assert priced["m1"].conversation_id == "m0" and priced["m3"].opens_conversation


def test_cbp_service_conversations_are_free_from_2024_11_01() -> None:
    before = datetime(2024, 10, 31, 12, tzinfo=UTC)
    after = datetime(2024, 11, 1, 0, tzinfo=UTC)
    for t, billable in ((before, True), (after, False)):
        p = price_timeline(Timeline("6281234567890", (InboundFact(t),), (OutboundFact("s", t, False),)),
                           IN_BUSINESS)[0]
        assert (p.category, p.billable) == ("service", billable)


def test_cbp_first_1000_service_conversations_of_a_month_are_free() -> None:
    t = datetime(2024, 10, 1, tzinfo=UTC)
    priced = []
    for c in range(1002):
        customer = f"62812{c:08d}"
        priced += price_timeline(Timeline(customer, (), (OutboundFact(f"s{c}", t + timedelta(minutes=c), False),),
                                          account="waba"), IN_BUSINESS)
    out = apply_monthly_effects(priced, tz=ZoneInfo("UTC"))
    assert sum(not p.billable for p in out) == 1000
    assert sum(p.amount for p in out) == 2 * Decimal("0.0190")
    assert {p.wamid for p in out if p.billable} == {"s1000", "s1001"}


@given(minutes=st.integers(-600, 600))
def test_month_ends_are_in_the_tenants_time_zone(minutes: int) -> None:
    tz = ZoneInfo("America/Sao_Paulo")  # UTC-3
    t = datetime(2026, 3, 1, 3, 0, tzinfo=UTC) + timedelta(minutes=minutes)  # 2026-03-01 00:00 local
    assert month_of(t, tz) == ("2026-03" if minutes >= 0 else "2026-02")


@settings(max_examples=30)
@given(n=st.integers(1, 300), seed=st.randoms(use_true_random=False))
def test_volume_tiers_by_rank_in_the_month_do_not_depend_on_input_order(n: int, seed) -> None:
    tiers = TierBook(parse_tiers("effective_from,market,category,from_volume,to_volume,rate\n"
                                 "2026-01-01,India,utility,1,100,0.0014\n"
                                 "2026-01-01,India,utility,101,,0.0010\n"))
    priced = [price_one(OutboundFact(f"u{i}", T0 + timedelta(minutes=i), True, "utility")) for i in range(n)]
    shuffled = list(priced)
    seed.shuffle(shuffled)
    a = apply_monthly_effects(priced, tz=ZoneInfo("Asia/Kolkata"), tiers=tiers)
    b = apply_monthly_effects(shuffled, tz=ZoneInfo("Asia/Kolkata"), tiers=tiers)
    assert a == b
    assert sum(p.amount for p in a) == Decimal("0.0014") * min(n, 100) + Decimal("0.0010") * max(0, n - 100)


@settings(max_examples=40)
@given(order=st.permutations(range(8)), hours=st.lists(st.integers(0, 120), min_size=8, max_size=8))
def test_a_timeline_prices_the_same_whatever_order_its_facts_came_in(order, hours) -> None:
    inbound = (InboundFact(T0, referral=True), InboundFact(T0 + timedelta(hours=50)))
    msgs = [OutboundFact(f"m{i}", T0 + timedelta(hours=h, minutes=i), i % 3 != 0,
                         ("marketing", "utility", "authentication")[i % 3]) for i, h in enumerate(hours)]
    a = price_timeline(Timeline(INDIA, inbound, msgs), US_BUSINESS)
    b = price_timeline(Timeline(INDIA, inbound[::-1], [msgs[i] for i in order]), US_BUSINESS)
    assert a == b


@pytest.mark.parametrize(("row", "reason"), [
    ("2026-13-01,India,USD,1,1,1,,", "not a date"),
    ("2026-01-01,,USD,1,1,1,,", "market is empty"),
    ("2026-01-01,India,US,1,1,1,,", "not an ISO 4217"),
    ("2026-01-01,India,USD,-1,1,1,,", "between 0 and"),
    ("2026-01-01,India,USD,1,1", "expected 8 columns"),
])
def test_a_bad_rate_card_row_names_its_line_and_reason(row: str, reason: str) -> None:
    text = "# comment\n" + ",".join(("effective_from", "market", "currency", "marketing", "utility",
                                     "authentication", "authentication_international", "service")) + \
        "\n2026-01-01,Brazil,USD,1,1,1,,\n" + row + "\n"
    with pytest.raises(RateFileError) as err:
        parse_rate_card(text)
    assert err.value.line == 4 and reason in err.value.reason


def test_overlapping_tiers_are_rejected() -> None:
    with pytest.raises(RateFileError, match=r"line 3: volume range 50\.\..*overlaps"):
        parse_tiers("effective_from,market,category,from_volume,to_volume,rate\n"
                    "2026-01-01,India,utility,1,100,0.0014\n2026-01-01,India,utility,50,,0.0010\n")
