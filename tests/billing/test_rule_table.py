"""The dated rule table (ADR 0080), property-tested where it matters: the change at exactly
2026-10-01T00:00Z, windows that straddle it, re-rating either side, free entry points across it,
Meta Business Agent messages, unpriced lines, and customers known only by a BSUID."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources

from hypothesis import given, settings
from hypothesis import strategies as st
from parley_billing.domain.engine import (
    BUSINESS_AGENT,
    Business,
    InboundFact,
    MetaPricing,
    OutboundFact,
    Timeline,
    price_timeline,
    summarize,
)
from parley_billing.domain.markets import market_for_customer
from parley_billing.domain.rates import RateBook, parse_rate_card
from parley_billing.domain.rules import RULES, rules_at

CARD = RateBook(parse_rate_card(resources.files("parley_billing.data").joinpath("example_rate_card.csv").read_text()))
IN_BUSINESS = Business("IN", CARD)
INDIA = "919876543210"
CHANGE = datetime(2026, 10, 1, tzinfo=UTC)
DAY = 24 * 3600
INDIA_SERVICE = Decimal("0.0014")  # the example card's 2026-10-01 India service (= utility) rate


def _one(customer: str, inbound: tuple[InboundFact, ...], msg: OutboundFact, *others: OutboundFact,
         business: Business = IN_BUSINESS):
    return next(p for p in price_timeline(Timeline(customer, inbound, (msg, *others)), business)
                if p.wamid == msg.wamid)


def test_the_table_is_in_effective_order_and_names_each_change_once() -> None:
    starts = [r.effective_from for r in RULES]
    assert starts == sorted(starts) and len({r.name for r in RULES}) == len(RULES)
    assert [r.name for r in RULES if r.effective_from.year > 2000] == [
        "CBP-2023-06", "CBP-2024-11", "PMP-2025-07", "PMP-2026-08", "PMP-2026-10"]
    assert all(r.free_entry_point for r in RULES)


@given(seconds=st.integers(-3 * DAY, 3 * DAY))
def test_rules_change_at_exactly_2026_10_01_utc(seconds: int) -> None:
    t = CHANGE + timedelta(seconds=seconds)
    assert rules_at(t).name == ("PMP-2026-10" if seconds >= 0 else "PMP-2026-08")
    assert rules_at(t).service_charged is (seconds >= 0)
    assert rules_at(t).utility_in_window_charged is (seconds >= 0)


@given(seconds=st.integers(-3 * DAY, 3 * DAY), micro=st.integers(0, 999_999))
def test_a_service_reply_is_charged_from_the_first_microsecond_of_october(seconds: int, micro: int) -> None:
    t = CHANGE + timedelta(seconds=seconds, microseconds=micro)
    p = _one(INDIA, (InboundFact(t - timedelta(minutes=5)),), OutboundFact("reply", t, False))
    charged = t >= CHANGE
    assert (p.category, p.billable) == ("service", charged)
    assert p.type == ("regular" if charged else "free_customer_service")
    assert p.amount == (INDIA_SERVICE if charged else Decimal(0))
    assert p.rules == rules_at(t).name


@given(opened_before=st.integers(1, DAY - 1), delivered_after=st.integers(-DAY + 1, DAY - 1))
def test_a_window_opened_before_the_change_prices_each_message_by_its_own_delivery(
        opened_before: int, delivered_after: int) -> None:
    """The customer wrote before midnight; the window is open across it. Messages in it before
    midnight are free, after midnight charged: the rule is the delivery's, not the window's."""
    inbound = InboundFact(CHANGE - timedelta(seconds=opened_before))
    t = CHANGE + timedelta(seconds=delivered_after)
    in_window = inbound.at <= t < inbound.at + timedelta(hours=24)
    utility = _one(INDIA, (inbound,), OutboundFact("u", t, True, "utility"))
    if in_window:
        assert utility.billable is (t >= CHANGE)
        assert utility.type == ("regular" if t >= CHANGE else "free_customer_service")
    else:
        assert utility.billable and utility.type == "regular"  # outside a window, always charged
    reply = _one(INDIA, (inbound,), OutboundFact("r", t, False))
    assert reply.billable is (t >= CHANGE)


@settings(max_examples=60)
@given(referral_before=st.integers(0, 2 * DAY), reply_after=st.integers(0, DAY - 1),
       later=st.lists(st.integers(0, 80 * 3600), min_size=1, max_size=6),
       kinds=st.lists(st.sampled_from(["marketing", "utility", "authentication", None]), min_size=6, max_size=6))
def test_free_entry_points_stay_free_across_the_change(referral_before: int, reply_after: int, later: list[int],
                                                       kinds: list[str | None]) -> None:
    referral = InboundFact(CHANGE - timedelta(seconds=referral_before), referral=True)
    reply = OutboundFact("reply", referral.at + timedelta(seconds=reply_after), False)
    msgs = [OutboundFact(f"m{i}", reply.delivered_at + timedelta(seconds=s), kinds[i] is not None, kinds[i])
            for i, s in enumerate(later)]
    priced = {p.wamid: p for p in price_timeline(Timeline(INDIA, (referral,), (reply, *msgs)), IN_BUSINESS)}
    assert priced["reply"].type == "free_entry_point" and not priced["reply"].billable
    for m, s in zip(msgs, later, strict=False):
        p = priced[m.wamid]
        if s < 72 * 3600:
            assert p.type == "free_entry_point" and not p.billable and p.amount == 0, (m, p)
        else:
            assert p.type != "free_entry_point"


def _month(start: datetime, seed: int) -> list[Timeline]:
    """A month of conversations: customers write, the business answers with replies and templates."""
    import random

    rnd = random.Random(seed)
    out = []
    for c in range(30):
        t = start + timedelta(minutes=rnd.randrange(60 * 24 * 25))
        inbound, outbound = [], []
        for m in range(6):
            if rnd.random() < 0.5:
                inbound.append(InboundFact(t, referral=rnd.random() < 0.1))
            kind = rnd.choice(["marketing", "utility", "authentication", None, None])
            outbound.append(OutboundFact(f"c{c}m{m}", t + timedelta(minutes=rnd.randrange(1, 300)),
                                         kind is not None, kind))
            t += timedelta(hours=rnd.randrange(1, 40))
        out.append(Timeline(f"9198{c:08d}", inbound, outbound))
    return out


def _priced(timelines: list[Timeline], month: str) -> list:
    return [p for tl in timelines for p in price_timeline(tl, IN_BUSINESS)
            if p.delivered_at.strftime("%Y-%m") == month]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_re_rating_september_keeps_free_replies_and_november_charges_them(seed: int) -> None:
    sept, nov = _month(datetime(2026, 9, 1, tzinfo=UTC), seed), _month(datetime(2026, 11, 1, tzinfo=UTC), seed)
    for _ in range(2):  # rating again, with everything else known by now, gives the same month
        s, n = _priced(sept, "2026-09"), _priced(nov, "2026-11")
        assert all(not p.billable for p in s if p.category == "service")
        assert all(p.rules == "PMP-2026-08" for p in s)
        assert all(p.billable or p.type == "free_entry_point" for p in n if p.category == "service")
        assert all(p.rules == "PMP-2026-10" for p in n)
    # The same conversations, shifted into November, cost exactly their service replies and
    # in-window utility templates more (both months use the same 2026 rates).
    totals = {m: summarize(_priced(tl, m), "currency")[("USD",)].amount for m, tl in
              (("2026-09", sept), ("2026-11", nov))}
    newly_charged = [p for p in _priced(nov, "2026-11") if p.billable and
                     (p.category == "service" or (p.category == "utility" and p.type == "regular"))]
    sept_charged_utility = [p for p in _priced(sept, "2026-09") if p.billable and p.category == "utility"]
    assert totals["2026-11"] - totals["2026-09"] == sum(p.amount for p in newly_charged) - \
        sum(p.amount for p in sept_charged_utility)


def test_a_charged_message_without_a_rate_is_unpriced_never_zero() -> None:
    card = RateBook(parse_rate_card(
        "effective_from,market,currency,marketing,utility,authentication,authentication_international,service\n"
        "2026-10-01,India,USD,0.0118,0.0014,0.0014,,\n"))  # no service rate
    t = datetime(2026, 11, 3, 10, tzinfo=UTC)
    p = _one(INDIA, (InboundFact(t - timedelta(hours=1)),), OutboundFact("r", t, False), business=Business("IN", card))
    assert p.billable and p.amount is None and p.unpriced
    line = summarize([p], "category")[("service",)]
    assert (line.billable, line.unpriced, line.amount) == (1, 1, 0)


@given(days=st.integers(-40, 120))
def test_meta_business_agent_messages_are_their_own_category_charged_per_token_from_august(days: int) -> None:
    t = datetime(2026, 8, 1, tzinfo=UTC) + timedelta(days=days, hours=3)
    for msg in (OutboundFact("a", t, None, None, MetaPricing(True, "PMP", "regular", "business_agent")),
                OutboundFact("b", t, False, "business_agent")):
        p = _one(INDIA, (InboundFact(t - timedelta(hours=1)),), msg)
        assert p.category == BUSINESS_AGENT
        assert p.billable is (days >= 0) and p.per_token is (days >= 0)
        assert not p.unpriced  # charged by Meta per token, not "no rate in the card"


def test_a_bsuid_customer_is_priced_in_its_numbers_market_when_known_else_by_its_prefix() -> None:
    t = datetime(2026, 11, 3, 10, tzinfo=UTC)
    msg = OutboundFact("m", t, True, "marketing")
    by_prefix = price_timeline(Timeline("GB.13491208655302741918", (), (msg,)), IN_BUSINESS)[0]
    assert (by_prefix.market, by_prefix.market_source) == ("United Kingdom", "bsuid_prefix")
    by_contact = price_timeline(Timeline("GB.13491208655302741918", (), (msg,), phone=INDIA), IN_BUSINESS)[0]
    assert (by_contact.market, by_contact.market_source) == ("India", "contact_phone")
    assert market_for_customer(INDIA)[1] == "phone"
    assert market_for_customer("US.ENT.99887766")[0].country == "US"
    assert market_for_customer("ZZ.123")[1] == "unknown"
