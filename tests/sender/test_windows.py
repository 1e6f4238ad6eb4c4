from datetime import UTC, datetime, timedelta

from parley_sender.domain.windows import (
    CUSTOMER_SERVICE,
    FREE_ENTRY_POINT,
    ConversationWindows,
    CustomerServiceWindow,
    FreeEntryPointWindow,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)


def test_no_inbound_means_window_closed() -> None:
    assert not CustomerServiceWindow().is_open(T0)


def test_customer_message_opens_window_for_24_hours_from_its_event_time() -> None:
    w = CustomerServiceWindow().observe(T0)
    assert w.is_open(T0 + 23 * H + timedelta(minutes=59))
    assert not w.is_open(T0 + 24 * H)
    assert w.closes_at() == T0 + 24 * H


def test_new_customer_message_resets_the_window() -> None:
    w = CustomerServiceWindow().observe(T0).observe(T0 + 20 * H)
    assert w.is_open(T0 + 30 * H)


def test_late_older_message_never_shortens_the_window() -> None:
    w = CustomerServiceWindow().observe(T0 + 20 * H).observe(T0)
    assert w.last_inbound_at == T0 + 20 * H


def test_fep_offered_by_referral_needs_a_reply_within_24_hours() -> None:
    fep = FreeEntryPointWindow().observe_referral(T0)
    assert fep.is_open(T0 + 23 * H)
    assert not fep.is_open(T0 + 25 * H)
    assert fep.on_send(T0 + 25 * H).started_at is None


def test_fep_lasts_72_hours_from_the_first_reply() -> None:
    fep = FreeEntryPointWindow().observe_referral(T0).on_send(T0 + 2 * H)
    assert fep.started_at == T0 + 2 * H
    assert fep.on_send(T0 + 3 * H).started_at == T0 + 2 * H  # later replies do not extend it
    assert fep.is_open(T0 + 2 * H + 71 * H)
    assert not fep.is_open(T0 + 2 * H + 72 * H)


def test_a_new_referral_after_an_expired_fep_offers_a_new_one() -> None:
    fep = FreeEntryPointWindow().observe_referral(T0).on_send(T0 + H)
    later = T0 + 100 * H
    fep = fep.observe_referral(later)
    assert fep.is_open(later + H)
    assert fep.on_send(later + H).started_at == later + H


def test_free_window_reported_to_billing() -> None:
    plain = ConversationWindows().observe_inbound(T0, from_referral=False)
    assert plain.free_window(T0 + H) == CUSTOMER_SERVICE
    assert plain.free_window(T0 + 25 * H) is None
    ad = ConversationWindows().observe_inbound(T0, from_referral=True)
    assert ad.free_window(T0 + H) == FREE_ENTRY_POINT
    started = ConversationWindows(ad.csw, ad.fep.on_send(T0 + H))
    # 48 h later the CSW is closed but the FEP still makes templates free.
    assert started.free_window(T0 + 49 * H) == FREE_ENTRY_POINT
    assert not started.csw.is_open(T0 + 49 * H)
