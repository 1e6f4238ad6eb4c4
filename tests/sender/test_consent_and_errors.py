from datetime import UTC, datetime, timedelta

import pytest
from parley_sender.domain.consent import ConsentBook, marketing_undeliverable_to, region_of
from parley_sender.domain.errors import ERROR_ACTIONS, Action, action_for

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_stop_suppresses_marketing_until_resume() -> None:
    book = ConsentBook()
    book.apply("447700900123", "stop", T0, "user_preferences")
    assert not book.marketing_allowed("447700900123")
    book.apply("447700900123", "resume", T0 + timedelta(days=1), "router_keyword")
    assert book.marketing_allowed("447700900123")


def test_late_older_consent_change_is_ignored() -> None:
    book = ConsentBook()
    book.apply("c1", "stop", T0 + timedelta(hours=2), "error_131050")
    book.apply("c1", "resume", T0, "router_keyword")
    assert not book.marketing_allowed("c1")


@pytest.mark.parametrize(
    ("recipient", "region"),
    [
        ("16505551234", "US"),
        ("+12125551234", "US"),
        ("14165551234", "CA"),
        ("442071234567", "GB"),
        ("US.abc123", "US"),
        ("", None),
    ],
)
def test_region_of_recipient(recipient: str, region: str | None) -> None:
    assert region_of(recipient) == region


def test_us_numbers_do_not_get_marketing_but_canada_does() -> None:
    assert marketing_undeliverable_to("16505551234")
    assert not marketing_undeliverable_to("14165551234")


# One test per row of the error table: the expected action is restated here on purpose, so a
# change to the table is a visible, reviewed change to this list too.
EXPECTED = {
    0: Action.FAIL,
    190: Action.FAIL,
    3: Action.FAIL,
    10: Action.FAIL,
    200: Action.FAIL,
    4: Action.RETRY,
    80007: Action.RETRY,
    130429: Action.THROTTLE_NUMBER,
    131056: Action.THROTTLE_PAIR,
    131048: Action.PAUSE_NUMBER,
    131057: Action.RETRY,
    131047: Action.SWITCH_TO_TEMPLATE,
    131026: Action.FAIL,
    131049: Action.FAIL,
    131050: Action.SUPPRESS_CONTACT,
    130472: Action.FAIL,
    131062: Action.FAIL,
    131051: Action.FAIL,
    131052: Action.FAIL,
    131053: Action.FAIL,
    131042: Action.PAUSE_NUMBER,
    131031: Action.PAUSE_NUMBER,
    368: Action.PAUSE_NUMBER,
    100: Action.FAIL,
    132000: Action.FAIL,
    132001: Action.FAIL,
    132005: Action.FAIL,
    132007: Action.FAIL,
    132012: Action.FAIL,
    132015: Action.FAIL,
    132016: Action.FAIL,
}


@pytest.mark.parametrize("rule", ERROR_ACTIONS, ids=lambda r: str(r.code))
def test_error_table_row(rule) -> None:  # type: ignore[no-untyped-def]
    assert action_for(rule.code, 400) is rule
    assert rule.action == EXPECTED[rule.code]
    if rule.action in (Action.RETRY, Action.PAUSE_NUMBER):
        assert rule.delay_s > 0


def test_every_expected_code_is_in_the_table() -> None:
    assert {r.code for r in ERROR_ACTIONS} == set(EXPECTED)


def test_unknown_permission_code_fails() -> None:
    assert action_for(250, 403).action == Action.FAIL


def test_server_errors_and_transport_failures_retry_other_4xx_fail() -> None:
    assert action_for(None, 503).action == Action.RETRY
    assert action_for(None, None).action == Action.RETRY
    assert action_for(999999, 500).action == Action.RETRY
    assert action_for(999999, 400).action == Action.FAIL


def test_131062_a_bsuid_recipient_not_supported_for_the_message_fails_it() -> None:
    rule = action_for(131062, 400)
    assert rule.code == 131062 and rule.action == Action.FAIL and "phone number" in rule.meaning
