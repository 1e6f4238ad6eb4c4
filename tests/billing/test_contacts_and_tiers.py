"""Customers known only by a BSUID (their market, whatever order the records came in) and Meta's
volume-tier account events (parsed, kept once, compared with Parley's own count)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from parley_billing.domain.engine import PricedMessage
from parley_billing.domain.facts import FactError
from parley_billing.domain.tiers import compare_tiers, tier_update
from parley_billing.store import Metering

from .traffic import feed

T = datetime(2026, 11, 12, 12, tzinfo=UTC)
BSUID = "BR.55120000000000000009"
PHONE = "919812345678"  # the same customer's number (India), shared on one inbound message


def _events() -> dict[str, tuple[str, dict]]:
    base = {"tenant_id": "acme", "phone_number_id": "pn-1"}
    return {
        "send": ("sends", {**base, "event_id": "w1:accepted", "message_id": "m1", "outcome": "accepted",
                           "wamid": "w1", "recipient": BSUID, "is_template": True, "category": "marketing",
                           "occurred_at": (T - timedelta(seconds=5)).isoformat()}),
        "status": ("statuses", {**base, "event_id": "w1:delivered", "wamid": "w1", "waba_id": "waba-1",
                                "status": "delivered", "recipient_user_id": BSUID, "occurred_at": T.isoformat()}),
        "inbound": ("inbound", {**base, "event_id": "in1", "wamid": "in1", "customer_wa_id": PHONE,
                                "customer_user_id": BSUID, "type": "text",
                                "occurred_at": (T + timedelta(days=2)).isoformat()}),
    }


@pytest.mark.infra
@pytest.mark.parametrize("order", [("send", "status", "inbound"), ("inbound", "status", "send"),
                                   ("status", "send", "inbound")])
async def test_a_bsuid_customer_is_priced_in_the_market_of_a_number_any_record_carried(
        metering: Metering, order: tuple[str, ...]) -> None:
    events = _events()
    await feed(metering, [events["send"], events["status"]] if order[-1] == "inbound" else
               [events[k] for k in order])
    row = await metering.pool.fetchrow("SELECT market, market_source, amount FROM billing.ledger WHERE wamid = 'w1'")
    if order[-1] == "inbound":  # no number known yet: the BSUID's prefix (Brazil)
        assert (row["market"], row["market_source"]) == ("Brazil", "bsuid_prefix")
        await feed(metering, [events["inbound"]])  # the number comes later: re-priced
        row = await metering.pool.fetchrow("SELECT market, market_source FROM billing.ledger WHERE wamid = 'w1'")
    assert (row["market"], row["market_source"]) == ("India", "contact_phone")


def _account(value: dict, **extra: object) -> dict:
    return {"event_id": "e1", "tenant_id": "acme", "waba_id": "waba-1", "phone_number_id": "waba-1",
            "kind": "account_update", "occurred_at": T.isoformat(), "value": value, **extra}


def test_tier_updates_are_read_from_metas_and_relayed_shapes_and_other_events_are_skipped() -> None:
    snake = tier_update(_account({"event": "VOLUME_BASED_PRICING_TIER_UPDATE", "volume_tier_info": {
        "tier_update_time": 1762331373, "pricing_category": "UTILITY", "tier": "25000001:50000000",
        "effective_month": "2025-11", "region": "INDIA"}}))
    camel = tier_update(_account({"event": "VOLUME_BASED_PRICING_TIER_UPDATE", "volumeTierInfo": {
        "tierUpdateTime": 1762331373, "pricingCategory": "AUTHENTICATION_INTERNATIONAL", "tier": "100001:",
        "effectiveMonth": "2025-11", "region": "Saudi Arabia"}}))
    assert snake is not None and (snake.month, snake.region, snake.category, snake.tier_from, snake.tier_to) == (
        "2025-11", "INDIA", "utility", 25000001, 50000000)
    assert camel is not None and (camel.category, camel.tier_from, camel.tier_to) == (
        "authentication-international", 100001, None)
    assert tier_update(_account({"event": "ACCOUNT_VIOLATION"})) is None
    assert tier_update({"kind": "template_status_update", "value": {}}) is None
    with pytest.raises(FactError, match="FROM:TO"):
        tier_update(_account({"event": "VOLUME_BASED_PRICING_TIER_UPDATE", "volume_tier_info": {
            "tier_update_time": 1, "pricing_category": "UTILITY", "tier": "lots", "effective_month": "2025-11",
            "region": "INDIA"}}))


def test_parleys_count_is_compared_with_metas_tier_at_the_time_of_the_update() -> None:
    update = tier_update(_account({"event": "VOLUME_BASED_PRICING_TIER_UPDATE", "volume_tier_info": {
        "tier_update_time": int((T + timedelta(hours=1)).timestamp()), "pricing_category": "UTILITY",
        "tier": "3:10", "effective_month": "2026-11", "region": "INDIA"}}))
    assert update is not None

    def msg(i: int, hours: float, market: str = "India", category: str = "utility") -> PricedMessage:
        return PricedMessage(f"w{i}", T + timedelta(hours=hours), "PMP", category, "regular", True, market, "IN",
                             "USD", None)

    three = [msg(1, 0), msg(2, 0.5), msg(3, 1), msg(4, 2), msg(5, 0, "Brazil"), msg(6, 0, category="marketing")]
    [row] = compare_tiers([update], three)
    assert (row["parley_count_at_update"], row["parley_count_month"], row["agrees"]) == (3, 4, True)
    [row] = compare_tiers([update], three[:2])
    assert not row["agrees"] and "fewer" in row["reason"]
