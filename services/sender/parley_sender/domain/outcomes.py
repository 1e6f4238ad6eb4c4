"""What a send request's state is, what to do with it when it comes again, and what an answer of
the Cloud API means: the sender's delivery rules, pure (docs/adr/0030-sender-exactly-once.md).

- :class:`MessageState` is the one list of states; its sets (:data:`FINAL`, :data:`SETTLED`,
  :data:`RESOLVABLE`) drive the orchestrator *and* the SQL guards of ``store.py``
  (:func:`sql_states`), so the two cannot drift apart.
- :func:`on_redelivery`: a request read again (redelivery after a crash or a rebalance, a replay)
  is sent, re-published, re-queued, skipped or declared in doubt, from its recorded row alone.
- :func:`interpret`: an answer (accepted, in doubt, or an error code with its HTTP status) becomes
  a :class:`Verdict`: the outcome, whether and when to retry, what to throttle, and whether the
  customer stopped marketing (from the error table in :mod:`.errors`, the only place that says so).
- :func:`plan_retry`: the next attempt and its delay (exponential, jittered, capped), or
  exhaustion.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from parley_sender.domain.errors import Action, action_for


class MessageState(StrEnum):
    SENDING = "sending"  # its own Cloud API call may be in flight (and only then)
    RETRYING = "retrying"  # waiting on the retry topic for its next attempt
    IN_DOUBT = "in_doubt"  # the call ended without an answer: maybe sent; waiting for a status
    ACCEPTED = "accepted"
    REFUSED = "refused"  # the policy refused it: never sent
    FAILED = "failed"  # the Cloud API refused it
    DEAD = "dead"  # attempts exhausted or unprocessable: on the dead-letter topic
    UNRESOLVED = "unresolved"  # in doubt past the deadline: reported, the tenant may resend

    @property
    def outcome(self) -> str:
        """The outcome published on wa.sends (and shown to the tenant) for this state."""
        return _OUTCOME.get(self, self.value)


_OUTCOME = {MessageState.DEAD: "failed", MessageState.UNRESOLVED: "in_doubt"}

S = MessageState
# Nothing more will be tried on its own; its result is published.
FINAL: frozenset[MessageState] = frozenset({S.ACCEPTED, S.REFUSED, S.FAILED, S.DEAD, S.UNRESOLVED})
# Final states a replay (origin "replay") may send again: the tenant's or operator's choice.
RESTARTABLE: frozenset[MessageState] = frozenset({S.DEAD, S.UNRESOLVED})
# No write may change these (the guard of every upsert of sender.messages).
SETTLED: frozenset[MessageState] = FINAL - RESTARTABLE
# A status webhook carrying the request's identifier turns these into ``accepted``.
RESOLVABLE: frozenset[MessageState] = frozenset({S.IN_DOUBT, S.UNRESOLVED})
# Certainly not sent (this attempt): a place it held in the messaging limit is given back.
NOT_SENT: frozenset[MessageState] = frozenset({S.RETRYING, S.REFUSED, S.FAILED, S.DEAD})


def sql_states(states: frozenset[MessageState]) -> str:
    """``'a', 'b'`` for an SQL ``IN (...)`` list (constants of this module only, never input)."""
    return ", ".join(f"'{s.value}'" for s in sorted(states))


# --- a request read again -------------------------------------------------------------------
class Redelivery(StrEnum):
    SEND = "send"  # nothing recorded that forbids a call: send (again)
    REPUBLISH = "republish"  # final: publish its result and effects again (idempotent)
    REQUEUE = "requeue"  # a newer attempt was recorded: put that attempt back on the retry topic
    SKIP = "skip"  # in doubt: a status or the deadline resolves it; never re-sent blindly
    CUT_OFF = "cut_off"  # recorded as being sent by a process that died: maybe sent -> in doubt


def on_redelivery(
    state: MessageState | str | None, row_attempt: int, attempt: int, *, replay: bool = False
) -> Redelivery:
    """What to do with a request (``attempt``) given its recorded state (None: nothing recorded)."""
    if state is None:
        return Redelivery.SEND
    st = MessageState(state)
    if st in FINAL:
        return Redelivery.SEND if replay and st in RESTARTABLE else Redelivery.REPUBLISH
    if st is S.IN_DOUBT:
        return Redelivery.SKIP
    if st is S.RETRYING:
        # The recorded retry is newer: its record may not have reached the retry topic before the
        # crash that brought this one back. Re-queueing it is harmless (a copy finds the row).
        return Redelivery.REQUEUE if attempt < row_attempt else Redelivery.SEND
    # SENDING: the row says a call of this attempt started and no outcome followed.
    return Redelivery.CUT_OFF if attempt <= row_attempt else Redelivery.SEND


# --- an answer of the Cloud API -------------------------------------------------------------
class Throttle(StrEnum):
    NONE = "none"
    NUMBER = "number"  # 130429: halve the number's rate for a while
    PAIR = "pair"  # 131056: block this customer for 4^x s (the delay comes from the governor)
    PAUSE = "pause"  # stop sending from the number for ``delay_s``


class Kind(StrEnum):
    ACCEPTED = "accepted"
    IN_DOUBT = "in_doubt"
    RETRY = "retry"
    SWITCH_TO_TEMPLATE = "switch_to_template"
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    meaning: str = ""
    delay_s: float = 0.0  # the least delay before the retry (or the pause length)
    throttle: Throttle = Throttle.NONE
    consent_stop: bool = False  # the customer stopped marketing: record it


_THROTTLE = {
    Action.THROTTLE_NUMBER: Throttle.NUMBER,
    Action.THROTTLE_PAIR: Throttle.PAIR,
    Action.PAUSE_NUMBER: Throttle.PAUSE,
}


def interpret(
    *,
    accepted: bool,
    in_doubt: bool,
    error_code: int | None,
    http_status: int | None,
    has_fallback_template: bool = False,
) -> Verdict:
    """What one answer means. ``in_doubt``: no answer although the request may have left. An HTTP
    504 is no answer either: a gateway gave up waiting for the Cloud API, which may have sent the
    message (whatever error body the gateway adds), so it is in doubt, never retried blindly."""
    if accepted:
        return Verdict(Kind.ACCEPTED)
    if in_doubt:
        return Verdict(Kind.IN_DOUBT, "no answer from the Cloud API; the request may have been processed")
    if http_status == 504:
        return Verdict(Kind.IN_DOUBT, "gateway timeout from the Cloud API; the request may have been processed")
    rule = action_for(error_code, http_status)
    if rule.action in _THROTTLE or rule.action == Action.RETRY:
        return Verdict(Kind.RETRY, rule.meaning, rule.delay_s, _THROTTLE.get(rule.action, Throttle.NONE))
    if rule.action == Action.SWITCH_TO_TEMPLATE and has_fallback_template:
        return Verdict(Kind.SWITCH_TO_TEMPLATE, rule.meaning)
    return Verdict(Kind.FAILED, rule.meaning, consent_stop=rule.action == Action.SUPPRESS_CONTACT)


def stops_consent(error_codes: list[int | None]) -> int | None:
    """The first of these error codes (of a send answer or a failed status) that means the
    customer stopped marketing from the business, or None. The error table decides (131050 today)."""
    return next((c for c in error_codes if c is not None and action_for(c).action == Action.SUPPRESS_CONTACT), None)


# --- retries --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPlan:
    attempt: int  # the attempt number of the retry
    delay_s: float
    exhausted: bool = False  # no attempts left: the request is dead


def plan_retry(
    attempt: int,
    *,
    min_delay_s: float,
    max_attempts: int,
    initial_s: float,
    max_s: float,
    jitter: float,
    counts_as_attempt: bool = True,
) -> RetryPlan:
    """The retry of a request that was at ``attempt``. ``jitter`` in [0, 1) spreads retries (the
    caller draws it); waits the governor imposes (``counts_as_attempt=False``: a pair-rate wait,
    nothing was sent) keep the attempt and take exactly ``min_delay_s``."""
    if not counts_as_attempt:
        return RetryPlan(attempt, min_delay_s)
    nxt = attempt + 1
    if nxt >= max_attempts:
        return RetryPlan(nxt, 0.0, exhausted=True)
    backoff = min(max_s, initial_s * 2.0 ** (nxt - 1)) + jitter * initial_s
    return RetryPlan(nxt, max(min_delay_s, backoff))


def backoff_s(failures: int, *, initial_s: float, max_s: float, jitter: float) -> float:
    """How long a consumer waits after ``failures`` consecutive transient failures (>= 1):
    exponential, capped, with "equal jitter" so replicas do not retry in step."""
    ceiling = min(max_s, initial_s * 2.0 ** max(0, failures - 1))
    return ceiling / 2 + jitter * ceiling / 2
