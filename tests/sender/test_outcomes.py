"""The sender's delivery rules as tables (domain/outcomes.py, domain/storable.py), no infrastructure."""

from __future__ import annotations

import pytest
from parley_sender.cloudapi import describe_failure, error_code_of, parse_send_answer
from parley_sender.domain.errors import ERROR_ACTIONS, Action
from parley_sender.domain.outcomes import (
    FINAL,
    RESOLVABLE,
    SETTLED,
    Kind,
    MessageState,
    Redelivery,
    Throttle,
    backoff_s,
    interpret,
    on_redelivery,
    plan_retry,
    sql_states,
    stops_consent,
)
from parley_sender.domain.storable import unstorable_reason
from parley_sender.store import _NOT_SETTLED, _RESOLVABLE

S = MessageState

# --- one enum, its sets, and the SQL built from them -----------------------------------------


def test_every_state_is_either_final_or_waiting_and_only_restartable_finals_are_unsettled() -> None:
    assert FINAL == {S.ACCEPTED, S.REFUSED, S.FAILED, S.DEAD, S.UNRESOLVED}
    assert SETTLED == {S.ACCEPTED, S.REFUSED, S.FAILED}
    assert RESOLVABLE == {S.IN_DOUBT, S.UNRESOLVED}
    assert set(S) - FINAL == {S.SENDING, S.RETRYING, S.IN_DOUBT}


def test_the_sql_guards_are_built_from_the_sets() -> None:
    assert sql_states(SETTLED) == "'accepted', 'failed', 'refused'"
    assert f"NOT IN ({sql_states(SETTLED)})" in _NOT_SETTLED
    assert "'dead'" not in _NOT_SETTLED.split("AND")[0]  # a replay may send a dead request again
    assert _RESOLVABLE == "state IN ('in_doubt', 'unresolved')"


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        (S.ACCEPTED, "accepted"),
        (S.REFUSED, "refused"),
        (S.FAILED, "failed"),
        (S.DEAD, "failed"),
        (S.UNRESOLVED, "in_doubt"),
    ],
)
def test_published_outcome_of_each_final_state(state: MessageState, outcome: str) -> None:
    assert state.outcome == outcome


# --- a request read again ---------------------------------------------------------------------

REDELIVERY = [
    # (recorded state, recorded attempt, request attempt, replay, decision)
    (None, 0, 0, False, Redelivery.SEND),
    (S.ACCEPTED, 0, 0, False, Redelivery.REPUBLISH),
    (S.ACCEPTED, 0, 0, True, Redelivery.REPUBLISH),  # a replay never sends an accepted one again
    (S.REFUSED, 0, 0, False, Redelivery.REPUBLISH),
    (S.FAILED, 2, 2, False, Redelivery.REPUBLISH),
    (S.DEAD, 5, 5, False, Redelivery.REPUBLISH),
    (S.DEAD, 5, 0, True, Redelivery.SEND),  # the operator's replay of a dead letter
    (S.UNRESOLVED, 0, 0, False, Redelivery.REPUBLISH),
    (S.UNRESOLVED, 0, 0, True, Redelivery.SEND),  # the tenant's choice to resend
    (S.IN_DOUBT, 0, 0, False, Redelivery.SKIP),
    (S.IN_DOUBT, 0, 0, True, Redelivery.SKIP),
    (S.RETRYING, 2, 1, False, Redelivery.REQUEUE),  # the retry record may not have been published
    (S.RETRYING, 2, 2, False, Redelivery.SEND),  # the retry record itself, or a released request
    (S.SENDING, 1, 1, False, Redelivery.CUT_OFF),  # its process died during the call
    (S.SENDING, 1, 0, False, Redelivery.CUT_OFF),
    (S.SENDING, 1, 2, False, Redelivery.SEND),
]


@pytest.mark.parametrize(("state", "row_attempt", "attempt", "replay", "expected"), REDELIVERY)
def test_redelivery(
    state: MessageState | None, row_attempt: int, attempt: int, replay: bool, expected: Redelivery
) -> None:
    assert on_redelivery(state, row_attempt, attempt, replay=replay) is expected


# --- what an answer means -------------------------------------------------------------------

ANSWERS = [
    # (accepted, in_doubt, code, http, fallback) -> (kind, throttle, consent stop)
    ((True, False, None, 200, False), (Kind.ACCEPTED, Throttle.NONE, False)),
    ((False, True, None, None, False), (Kind.IN_DOUBT, Throttle.NONE, False)),
    ((False, False, None, None, False), (Kind.RETRY, Throttle.NONE, False)),  # could not connect
    ((False, False, 130429, 400, False), (Kind.RETRY, Throttle.NUMBER, False)),
    ((False, False, 131056, 400, False), (Kind.RETRY, Throttle.PAIR, False)),
    ((False, False, 131048, 400, False), (Kind.RETRY, Throttle.PAUSE, False)),
    ((False, False, 131057, 400, False), (Kind.RETRY, Throttle.NONE, False)),
    ((False, False, None, 503, False), (Kind.RETRY, Throttle.NONE, False)),
    # a gateway gave up waiting for the Cloud API, which may have sent the message: never re-sent blindly
    ((False, False, 2, 504, False), (Kind.IN_DOUBT, Throttle.NONE, False)),
    ((False, False, None, 504, False), (Kind.IN_DOUBT, Throttle.NONE, False)),
    ((False, False, None, 429, False), (Kind.RETRY, Throttle.NONE, False)),
    ((False, False, 131047, 400, True), (Kind.SWITCH_TO_TEMPLATE, Throttle.NONE, False)),
    ((False, False, 131047, 400, False), (Kind.FAILED, Throttle.NONE, False)),
    ((False, False, 131050, 400, False), (Kind.FAILED, Throttle.NONE, True)),
    ((False, False, 131026, 400, False), (Kind.FAILED, Throttle.NONE, False)),
    ((False, False, 132001, 400, False), (Kind.FAILED, Throttle.NONE, False)),
    ((False, False, 250, 403, False), (Kind.FAILED, Throttle.NONE, False)),
    ((False, False, None, 400, False), (Kind.FAILED, Throttle.NONE, False)),  # a code that was not a number
]


@pytest.mark.parametrize(("answer", "expected"), ANSWERS)
def test_answer_verdict(
    answer: tuple[bool, bool, int | None, int | None, bool], expected: tuple[Kind, Throttle, bool]
) -> None:
    accepted, in_doubt, code, http, fallback = answer
    v = interpret(
        accepted=accepted, in_doubt=in_doubt, error_code=code, http_status=http, has_fallback_template=fallback
    )
    assert (v.kind, v.throttle, v.consent_stop) == expected


def test_throttle_and_pause_keep_the_tables_least_delay() -> None:
    assert interpret(accepted=False, in_doubt=False, error_code=130429, http_status=400).delay_s == 1.0
    assert interpret(accepted=False, in_doubt=False, error_code=131048, http_status=400).delay_s == 300.0


def test_consent_stop_comes_from_the_error_table_only() -> None:
    suppressing = {r.code for r in ERROR_ACTIONS if r.action == Action.SUPPRESS_CONTACT}
    assert suppressing == {131050}
    assert stops_consent([131026, 131050]) and not stops_consent([131026, None]) and not stops_consent([])


# --- retries and backoff --------------------------------------------------------------------

RETRIES = [
    # (attempt, min delay, counts, jitter) -> (next attempt, delay, exhausted)
    ((0, 0.0, True, 0.0), (1, 1.0, False)),
    ((1, 0.0, True, 0.0), (2, 2.0, False)),
    ((3, 0.0, True, 0.5), (4, 8.5, False)),
    ((4, 0.0, True, 0.0), (5, 16.0, False)),
    ((1, 60.0, True, 0.0), (2, 60.0, False)),  # never sooner than Meta's error asks
    ((5, 0.0, True, 0.0), (6, 0.0, True)),  # max_attempts 6
    ((2, 30.0, False, 0.9), (2, 30.0, False)),  # a pair-rate wait: nothing was sent, same attempt
]


@pytest.mark.parametrize(("given", "expected"), RETRIES)
def test_retry_plan(given: tuple[int, float, bool, float], expected: tuple[int, float, bool]) -> None:
    attempt, min_delay, counts, jitter = given
    plan = plan_retry(
        attempt,
        min_delay_s=min_delay,
        max_attempts=6,
        initial_s=1.0,
        max_s=60.0,
        jitter=jitter,
        counts_as_attempt=counts,
    )
    assert (plan.attempt, plan.delay_s, plan.exhausted) == expected


def test_retry_delay_is_capped() -> None:
    plan = plan_retry(20, min_delay_s=0, max_attempts=100, initial_s=1.0, max_s=60.0, jitter=0.0)
    assert plan.delay_s == 60.0


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"), [(1, 0.0, 0.1), (1, 1.0, 0.2), (3, 0.0, 0.4), (30, 1.0, 10.0)]
)
def test_transient_backoff_grows_with_jitter_and_a_ceiling(failures: int, jitter: float, expected: float) -> None:
    assert backoff_s(failures, initial_s=0.2, max_s=10.0, jitter=jitter) == pytest.approx(expected)


# --- what PostgreSQL cannot store -------------------------------------------------------------

STORABLE = [
    (b'{"content": {"body": "hello"}}', None),
    (b'{"content": {"body": "a\\\\u0000b"}}', None),  # an escaped backslash: the text "\\u0000"
    (b'{"content": {"body": "a\\u0000b"}}', "content.body contains NUL (U+0000)"),
    (b'{"biz_opaque_callback_data": "x\\u0000"}', "biz_opaque_callback_data contains NUL (U+0000)"),
    (b'{"template": {"components": [{"parameters": [{"text": "\\ud800"}]}]}}',
     "template.components.0.parameters.0.text contains a lone UTF-16 surrogate"),
    (b'{"content": {"body": "\\ud83d\\ude00"}}', None),  # a pair is an emoji
    (b'{"a\\u0000": 1}', "<key> an object key contains NUL (U+0000)"),
]


@pytest.mark.parametrize(("raw", "reason"), STORABLE)
def test_unstorable_values_are_named_by_field(raw: bytes, reason: str | None) -> None:
    found = unstorable_reason(raw)
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason)


# --- reading Meta's answer --------------------------------------------------------------------

CODES = [
    (130429, 130429),
    ("131047", 131047),
    ("abc", None),
    (None, None),
    (True, None),
    (1e20, None),
    (2**40, None),
    ("99999999999999", None),
    ({"x": 1}, None),
]


@pytest.mark.parametrize(("raw", "code"), CODES)
def test_error_code_of_any_shape(raw: object, code: int | None) -> None:
    assert error_code_of(raw) == code


def test_a_non_numeric_error_code_is_an_answer_not_an_exception() -> None:
    resp = parse_send_answer(400, b'{"error": {"code": "abc", "message": "odd\\u0000"}}')
    assert resp.error_code is None and not resp.accepted and not resp.in_doubt
    assert resp.error_message == "odd (error code not a number: abc)"


def test_a_2xx_without_a_readable_message_id_is_in_doubt() -> None:
    assert parse_send_answer(200, b'{"messages": "x"}').in_doubt
    assert parse_send_answer(200, b'{"messages": [{"id": 5}]}').in_doubt
    ok = parse_send_answer(200, b'{"messages": [{"id": "wamid.A", "message_status": "accepted"}]}')
    assert ok.accepted and ok.wamid == "wamid.A"


def test_failures_are_named_by_what_happened_not_by_the_client_class() -> None:
    class ConnectTimeoutError(Exception):  # what pyreqwest raises for a read timeout too
        pass

    assert describe_failure(ConnectTimeoutError(), sent=True).startswith("no answer in time after the request was sent")
    assert describe_failure(ConnectTimeoutError(), sent=False).startswith("could not connect")
    assert describe_failure(ConnectionResetError(), sent=True).startswith("connection lost after the request was sent")
