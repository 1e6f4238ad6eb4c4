"""Pricing objects on status webhooks: per-message pricing, and conversation-based pricing
when the simulated clock is before 2025-07-01."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parley_simulator.pricing import PricingEngine
from parley_simulator.windows import CustomerWindows

from .conftest import CUSTOMER, PN, Receiver, SimFactory, template, text

PMP_DAY = datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp()
CBP_DAY = datetime(2025, 3, 3, 12, tzinfo=UTC).timestamp()
HOUR = 3600.0


def price(
    engine: PricingEngine,
    category: str,
    *,
    now: float = PMP_DAY,
    window: bool = False,
    fep: bool = False,
    version: int = 24,
    customer: str = CUSTOMER,
) -> dict:
    return engine.price(
        phone_number_id=PN,
        customer=customer,
        now=now,
        category=category,
        in_service_window=window,
        free_entry_point=fep,
        api_version=version,
    ).pricing


@pytest.mark.parametrize(
    ("category", "window", "fep", "expected_type", "billable", "expected_category"),
    [
        ("service", True, False, "free_customer_service", False, "service"),
        ("utility", True, False, "free_customer_service", False, "utility"),
        ("utility", False, False, "regular", True, "utility"),
        ("marketing", True, False, "regular", True, "marketing"),
        ("marketing", False, False, "regular", True, "marketing"),
        ("authentication", True, False, "regular", True, "authentication"),
        ("marketing", True, True, "free_entry_point", False, "referral_conversion"),
        ("authentication", False, True, "free_entry_point", False, "referral_conversion"),
        ("utility", False, True, "free_entry_point", False, "referral_conversion"),
    ],
)
def test_per_message_pricing_rules(
    category: str, window: bool, fep: bool, expected_type: str, billable: bool, expected_category: str
) -> None:
    p = price(PricingEngine(), category, window=window, fep=fep)
    assert p == {
        "billable": billable,
        "pricing_model": "PMP",
        "type": expected_type,
        "category": expected_category,
    }


def test_pmp_conversation_object_only_up_to_v23_or_in_an_entry_point() -> None:
    engine = PricingEngine()
    v23 = engine.price(
        phone_number_id=PN,
        customer=CUSTOMER,
        now=PMP_DAY,
        category="utility",
        in_service_window=False,
        free_entry_point=False,
        api_version=23,
    )
    v24 = engine.price(
        phone_number_id=PN,
        customer=CUSTOMER,
        now=PMP_DAY,
        category="utility",
        in_service_window=False,
        free_entry_point=False,
        api_version=24,
    )
    v24_fep = engine.price(
        phone_number_id=PN,
        customer=CUSTOMER,
        now=PMP_DAY,
        category="utility",
        in_service_window=False,
        free_entry_point=True,
        api_version=24,
    )
    assert v23.conversation is not None and v23.conversation["origin"] == {"type": "utility"}
    assert v24.conversation is None
    assert v24_fep.conversation is not None and v24_fep.conversation["origin"] == {
        "type": "referral_conversion"
    }
    assert "expiration_timestamp" in v24_fep.conversation_for("sent")
    assert "expiration_timestamp" not in v24_fep.conversation_for("delivered")


def test_cbp_conversations_open_per_category_and_are_reused_for_24_hours() -> None:
    engine = PricingEngine()

    def conv(category: str, at: float) -> tuple[str, dict]:
        priced = engine.price(
            phone_number_id=PN,
            customer=CUSTOMER,
            now=at,
            category=category,
            in_service_window=False,
            free_entry_point=False,
            api_version=23,
        )
        assert priced.conversation is not None
        return priced.conversation["id"], priced.pricing

    first_id, first = conv("utility", CBP_DAY)
    assert first == {"billable": True, "pricing_model": "CBP", "category": "utility"}
    assert conv("utility", CBP_DAY + HOUR)[0] == first_id
    marketing_id, marketing = conv("marketing", CBP_DAY + 2 * HOUR)
    assert marketing_id != first_id and marketing["category"] == "marketing"
    # free-form rides an open conversation rather than opening a service one
    assert conv("service", CBP_DAY + 3 * HOUR)[0] in (first_id, marketing_id)
    assert conv("utility", CBP_DAY + 25 * HOUR)[0] != first_id


def test_cbp_service_is_free_from_november_2024_and_charged_before() -> None:
    engine = PricingEngine()
    after = price(engine, "service", now=CBP_DAY, window=True)
    before = price(
        engine, "service", now=datetime(2024, 6, 3, tzinfo=UTC).timestamp(), window=True, customer="15550001"
    )
    assert after == {"billable": False, "pricing_model": "CBP", "category": "service"}
    assert before["billable"] is True


def test_cbp_free_entry_point_is_a_72_hour_referral_conversation_closing_others() -> None:
    engine = PricingEngine()
    price(engine, "marketing", now=CBP_DAY)
    fep = price(engine, "marketing", now=CBP_DAY + HOUR, fep=True)
    assert fep == {"billable": False, "pricing_model": "CBP", "category": "referral_conversion"}
    later = price(engine, "utility", now=CBP_DAY + 60 * HOUR)
    assert later["category"] == "referral_conversion" and later["billable"] is False
    assert price(engine, "utility", now=CBP_DAY + 74 * HOUR)["category"] == "utility"


def test_free_entry_point_opens_on_a_reply_within_24_hours_of_the_ad_and_lasts_72() -> None:
    windows = CustomerWindows()
    windows.record_inbound(PN, CUSTOMER, CBP_DAY, referral=True)
    assert windows.entry_point_open_for_send(PN, CUSTOMER, CBP_DAY + 2 * HOUR)
    assert windows.entry_point_open_for_send(PN, CUSTOMER, CBP_DAY + 70 * HOUR)
    assert not windows.entry_point_open_for_send(PN, CUSTOMER, CBP_DAY + 75 * HOUR)
    late = CustomerWindows()
    late.record_inbound(PN, CUSTOMER, CBP_DAY, referral=True)
    assert not late.entry_point_open_for_send(PN, CUSTOMER, CBP_DAY + 25 * HOUR)
    plain = CustomerWindows()
    plain.record_inbound(PN, CUSTOMER, CBP_DAY)
    assert not plain.entry_point_open_for_send(PN, CUSTOMER, CBP_DAY + HOUR)


# --- over HTTP ----------------------------------------------------------------------------


def _priced(receiver: Receiver, wamid: str) -> dict[str, dict]:
    return {s["status"]: s for s in receiver.statuses() if s["id"] == wamid}


@pytest.mark.parametrize(
    ("clock", "in_window_utility", "free_form"),
    [
        # Until 2026-09-30 free-form replies and utility templates in the window are free...
        (
            "2026-09-15T12:00:00Z",
            {"billable": False, "pricing_model": "PMP", "type": "free_customer_service", "category": "utility"},
            {"billable": False, "pricing_model": "PMP", "type": "free_customer_service", "category": "service"},
        ),
        # ...from 2026-10-01 both are charged.
        (
            "2026-11-10T12:00:00Z",
            {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"},
            {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "service"},
        ),
    ],
)
async def test_pmp_pricing_on_sent_and_exactly_one_of_delivered_or_read(
    make_sim: SimFactory, receiver: Receiver, clock: str, in_window_utility: dict, free_form: dict
) -> None:
    h = await make_sim(read_ratio=1.0)
    assert (await h.http.post(f"{h.url}/_sim/clock", json={"now": clock})).status_code == 200
    await h.open_window()
    utility = (await h.send(template("ticket_confirmation", ["A", "B"]))).json()["messages"][0]["id"]
    marketing = (await h.send(template("plain_offer", ["Ann"]))).json()["messages"][0]["id"]
    reply = (await h.send(text())).json()["messages"][0]["id"]
    await h.drain()
    expectations = {
        utility: in_window_utility,
        marketing: {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "marketing"},
        reply: free_form,
    }
    for wamid, pricing in expectations.items():
        statuses = _priced(receiver, wamid)
        assert statuses["sent"]["pricing"] == pricing
        assert statuses["delivered"]["pricing"] == pricing
        assert "pricing" not in statuses["read"]
        assert "conversation" not in statuses["sent"]  # v24: omitted outside an entry point


async def test_ad_referral_makes_the_reply_a_free_entry_point(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    await h.open_window(referral=True)
    wamid = (await h.send(template("plain_offer", ["Ann"]))).json()["messages"][0]["id"]
    await h.drain()
    sent = _priced(receiver, wamid)["sent"]
    assert sent["pricing"] == {
        "billable": False,
        "pricing_model": "PMP",
        "type": "free_entry_point",
        "category": "referral_conversion",
    }
    assert sent["conversation"]["origin"] == {"type": "referral_conversion"}
    msg = (await h.http.get(f"{h.url}/_sim/messages", params={"wamid": wamid})).json()["data"][0]
    assert msg["free_entry_point"] is True


async def test_clock_before_july_2025_gives_conversation_based_pricing(
    make_sim: SimFactory, receiver: Receiver
) -> None:
    h = await make_sim()
    r = await h.http.post(f"{h.url}/_sim/clock", json={"now": "2025-03-03T12:00:00Z"})
    assert r.json()["iso"].startswith("2025-03-03T12:00")
    first = (await h.send(template("ticket_confirmation", ["A", "B"]), version="v21.0")).json()["messages"][
        0
    ]["id"]
    second = (await h.send(template("ticket_confirmation", ["C", "D"]), version="v21.0")).json()["messages"][
        0
    ]["id"]
    await h.drain()
    a, b = _priced(receiver, first), _priced(receiver, second)
    assert a["sent"]["pricing"] == {"billable": True, "pricing_model": "CBP", "category": "utility"}
    assert a["sent"]["conversation"]["id"] == b["sent"]["conversation"]["id"]
    assert a["sent"]["conversation"]["origin"] == {"type": "utility"}
    assert int(a["sent"]["conversation"]["expiration_timestamp"]) > int(a["sent"]["timestamp"])
    assert "expiration_timestamp" not in a["delivered"]["conversation"]
    assert abs(int(a["sent"]["timestamp"]) - datetime(2025, 3, 3, 12, tzinfo=UTC).timestamp()) < 60


# --- the simulator and billing apply the same dated rules --------------------------------------

PMP_FROM = datetime(2025, 7, 1, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.integers(0, int((datetime(2027, 7, 1, tzinfo=UTC) - PMP_FROM).total_seconds())),
    category=st.sampled_from(["marketing", "utility", "authentication", "service"]),
    window=st.booleans(),
    fep=st.booleans(),
)
def test_simulator_pricing_objects_agree_with_billings_rule_table(
    seconds: int, category: str, window: bool, fep: bool
) -> None:
    """Whatever the date, the pricing object the simulator sends is what billing decides for the
    same message (billable, type, category), so the demo and the tests see Meta's rules of the day."""
    from parley_billing.domain.engine import Business, InboundFact, OutboundFact, Timeline, price_timeline
    from parley_billing.domain.rates import RateBook

    at = PMP_FROM + timedelta(seconds=seconds)
    window = window or fep or category == "service"  # a reply needs the window; a referral opens it
    sim = price(PricingEngine(), category, now=at.timestamp(), window=window, fep=fep)
    inbound = (InboundFact(at - timedelta(hours=1), referral=fep),) if window else ()
    template = category != "service"
    ours = price_timeline(
        Timeline("919876543210", inbound, (OutboundFact("m", at, template, category if template else None),)),
        Business("IN", RateBook([])),
    )[0]
    assert (ours.billable, ours.type) == (sim["billable"], sim["type"])
    assert sim["category"] == ("referral_conversion" if fep else ours.category)
