"""The shortcuts the metering hot path takes give exactly the answers of the long way round."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from parley_billing.domain.engine import PMP_START, Business, InboundFact, OutboundFact, Timeline, price_timeline
from parley_billing.domain.markets import country_of

from .test_pricing_rules import CARD


def _country_by_full_parse(number: str) -> str | None:
    try:
        parsed = phonenumbers.parse("+" + number, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(parsed) or phonenumbers.region_code_for_country_code(
        parsed.country_code)
    return region if region and region != "ZZ" else None


CODES = sorted(str(c) for c in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@settings(max_examples=3000)
@given(code=st.sampled_from([*CODES, "0", "42", "99", "801"]),
       rest=st.text(alphabet="0123456789", min_size=0, max_size=14))
def test_the_calling_code_shortcut_names_the_same_country_as_a_full_parse(code: str, rest: str) -> None:
    number = code + rest
    assert country_of.__wrapped__(number) == _country_by_full_parse(number)


def test_shared_calling_codes_still_tell_their_countries_apart() -> None:
    assert country_of("447400123456") == "GB" and country_of("447911123456") == "GG"
    assert country_of("12125550123") == "US" and country_of("16135550123") == "CA"
    assert country_of("77012345678") == "KZ" and country_of("79123456789") == "RU"


T0 = PMP_START - timedelta(days=3)
moments = st.integers(min_value=0, max_value=14 * 24 * 3600).map(lambda s: T0 + timedelta(seconds=s))


@settings(max_examples=300)
@given(inbound=st.lists(st.tuples(moments, st.booleans()), max_size=6),
       outbound=st.lists(st.tuples(moments, st.sampled_from([None, "marketing", "utility", "authentication"])),
                         min_size=1, max_size=10),
       since=moments, country=st.sampled_from(["IN", "US", None]))
def test_pricing_from_a_moment_on_equals_pricing_everything_and_keeping_what_follows(
        inbound: list[tuple[datetime, bool]], outbound: list[tuple[datetime, str | None]], since: datetime,
        country: str | None) -> None:
    timeline = Timeline("919876543210", [InboundFact(t, ref) for t, ref in inbound],
                        [OutboundFact(f"w{i}", t, cat is not None, cat) for i, (t, cat) in enumerate(outbound)],
                        "waba")
    business = Business(country, CARD)
    everything = [p for p in price_timeline(timeline, business) if p.delivered_at >= since]
    assert price_timeline(timeline, business, since=since) == everything
    assert all(p.delivered_at.tzinfo is UTC for p in everything)
