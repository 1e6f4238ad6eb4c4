"""The rate governor of one business number, as pure arithmetic over an injected clock.

Meta's limits (Cloud API throughput and pair-rate documentation):

- throughput: 80 messages/s per number by default, up to 1,000; above it Meta answers 130429.
  :class:`ThroughputLimit` grants at most ``limit`` sends in any window of one second (a sliding
  log, so the guarantee holds for *every* window, not only aligned ones) and at most a tenth of
  that in any 100 ms, so a backlog is paced instead of fired in one burst per second. On 130429
  it halves its effective limit and recovers linearly over ``recovery_s``.
- pair rate: about one message per 6 s to one customer, bursts up to 45 borrowed from the future
  (a 20-message burst needs about two minutes of rest).
  131056 blocks the customer for 4^x seconds, x counting consecutive 131056s.
- messaging limit: unique customers reached with business-initiated templates in a rolling 24
  hours, per business portfolio (the tenant); ``None`` is unlimited. Every replica takes its
  places under the portfolio's lock in PostgreSQL (docs/adr/0115-portfolio-messaging-limit.md).
- priority: in the send contract's order (``SEND_PRIORITIES``: replies first, marketing last).

The async adapter (:mod:`parley_sender.pacing`) sleeps for the waits this module computes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from parley_common.contracts import SEND_PRIORITIES

# The contract's order of priorities (SEND_PRIORITIES) is the order they are served in.
PRIORITY_RANK: dict[str, int] = {p: rank for rank, p in enumerate(SEND_PRIORITIES)}


def priority_rank(priority: str | None) -> int:
    return PRIORITY_RANK.get(priority or "", PRIORITY_RANK["marketing"])


# A grant leaves the window this long after ``period``: window boundaries measured elsewhere (at the
# Cloud API, with network jitter) then never see one grant too many.
GUARD_S = 0.002


class _SlidingLog:
    """Timestamps of the grants of the last ``period`` seconds."""

    def __init__(self, period: float, capacity: int) -> None:
        self.period = period + GUARD_S
        self.log: deque[float] = deque(maxlen=max(1, capacity))

    def wait(self, now: float, limit: int) -> float:
        log = self.log
        cutoff = now - self.period
        while log and log[0] < cutoff:
            log.popleft()
        if len(log) < limit:
            return 0.0
        return log[len(log) - limit] + self.period - now + 1e-9

    def resize(self, capacity: int) -> None:
        if capacity != self.log.maxlen:
            self.log = deque(self.log, maxlen=max(1, capacity))


@dataclass
class ThroughputLimit:
    """Sends per second of one business number, with backoff on 130429."""

    limit: int = 80
    period: float = 1.0
    recovery_s: float = 30.0
    min_limit: int = 1
    _throttled_at: float | None = None
    _throttled_to: float = 0.0
    _second: _SlidingLog = field(init=False)
    _slice: _SlidingLog = field(init=False)

    def __post_init__(self) -> None:
        self._second = _SlidingLog(self.period, self.limit)
        self._slice = _SlidingLog(self.period / 10, self._slice_limit(self.limit))

    @staticmethod
    def _slice_limit(limit: int) -> int:
        return max(1, math.ceil(limit / 10))

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._second.resize(limit)
        self._slice.resize(self._slice_limit(limit))

    def effective_limit(self, now: float) -> int:
        if self._throttled_at is None:
            return self.limit
        elapsed = now - self._throttled_at
        if elapsed >= self.recovery_s:
            self._throttled_at = None
            return self.limit
        value = self._throttled_to + (self.limit - self._throttled_to) * elapsed / self.recovery_s
        return max(self.min_limit, int(value))

    def reserve(self, now: float) -> float:
        """Grant one send now (returns 0.0) or return how long to wait before asking again."""
        eff = self.effective_limit(now)
        wait = max(self._second.wait(now, eff), self._slice.wait(now, self._slice_limit(eff)))
        if wait > 0:
            return wait
        self._second.log.append(now)
        self._slice.log.append(now)
        return 0.0

    def on_throttled(self, now: float) -> None:
        """Meta answered 130429: halve what we grant, then recover linearly."""
        current = self.effective_limit(now)
        self._throttled_to = max(self.min_limit, current // 2)
        self._throttled_at = now


@dataclass
class _PairState:
    burst_started: float = float("-inf")
    burst_count: int = 0
    repaid_at: float = float("-inf")  # when the borrowed quota is paid back
    strikes: int = 0
    blocked_until: float = float("-inf")


@dataclass
class PairRateLimit:
    """Messages from one number to each customer, with Meta's borrow-from-the-future bursts.

    One message per ``interval_s``; once rested, up to ``burst`` messages within one interval,
    each borrowing an interval of quota, so a 20-message burst then rests 20 × 6 s = 2 minutes.
    """

    burst: int = 45
    interval_s: float = 6.0
    max_backoff_s: float = 4.0**5
    _pairs: dict[str, _PairState] = field(default_factory=dict)

    def wait(self, customer: str, now: float) -> float:
        st = self._pairs.get(customer)
        if st is None:
            return 0.0
        if st.blocked_until > now:
            return st.blocked_until - now
        if now >= st.repaid_at:
            return 0.0
        if now < st.burst_started + self.interval_s and st.burst_count < self.burst:
            return 0.0
        return st.repaid_at - now

    def reserve(self, customer: str, now: float) -> float:
        wait = self.wait(customer, now)
        if wait > 0.0:
            return wait
        st = self._pairs.setdefault(customer, _PairState())
        if now >= st.repaid_at:
            st.burst_started, st.burst_count, st.repaid_at = now, 0, now
        st.burst_count += 1
        st.repaid_at += self.interval_s
        return 0.0

    def on_success(self, customer: str) -> None:
        st = self._pairs.get(customer)
        if st is not None:
            st.strikes = 0

    def on_throttled(self, customer: str, now: float) -> float:
        """Meta answered 131056: block the pair for 4^x seconds; returns the block."""
        st = self._pairs.setdefault(customer, _PairState())
        st.strikes += 1
        backoff = min(self.max_backoff_s, 4.0**st.strikes)
        st.blocked_until = now + backoff
        st.repaid_at = max(st.repaid_at, st.blocked_until)
        return backoff

    @property
    def owing(self) -> int:
        """Customers still remembered (something owed or a block in force until forgotten)."""
        return len(self._pairs)

    def forget_idle(self, now: float) -> None:
        """Drop customers with nothing owed (bounded memory)."""
        idle = [
            c
            for c, st in self._pairs.items()
            if st.repaid_at <= now and st.blocked_until <= now and st.strikes == 0
        ]
        for c in idle:
            del self._pairs[c]


DAY_S = 24 * 3600.0


@dataclass
class MessagingLimit:
    """Unique customers a portfolio reached with business-initiated templates in the rolling 24
    hours (reserved places included)."""

    limit: int | None = 250
    window_s: float = DAY_S
    reached: dict[str, float] = field(default_factory=dict)  # customer -> last reached (epoch s)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window_s
        stale = [c for c, at in self.reached.items() if at <= cutoff]
        for c in stale:
            del self.reached[c]

    def count(self, now: float) -> int:
        self._prune(now)
        return len(self.reached)

    def allows(self, customer: str, now: float) -> bool:
        if self.limit is None:
            return True
        self._prune(now)
        return customer in self.reached or len(self.reached) < self.limit

    def record(self, customer: str, now: float) -> None:
        """Bounded: an unlimited portfolio keeps no list, a limited one at most the customers
        of its rolling window (the policy refuses new ones past the limit)."""
        if self.limit is None:
            return
        if customer not in self.reached and len(self.reached) >= self.limit:
            self._prune(now)
        self.reached[customer] = now

    def reserve(self, customer: str, now: float) -> bool:
        """Take a place for ``customer`` if one is free (a customer counted already always fits)."""
        if not self.allows(customer, now):
            return False
        self.record(customer, now)
        return True

    def room_at(self, now: float) -> float:
        """When the next new customer fits (epoch s); ``now`` if there is room."""
        if self.limit is None or self.count(now) < self.limit:
            return now
        oldest = sorted(self.reached.values())[len(self.reached) - self.limit]
        return oldest + self.window_s


UNLIMITED = -1  # how Meta reports an unlimited portfolio

# A number upgraded by Meta sends up to 1,000 messages per second (from 80).
UPGRADED_MPS = 1_000


def reported_throughput(kind: str, value: dict[str, object]) -> int | None:
    """The messages per second an account event grants a number; None when it grants nothing."""
    if kind == "phone_number_quality_update" and str(value.get("event") or "").upper() == "THROUGHPUT_UPGRADE":
        return UPGRADED_MPS
    return None

# Meta's limit names in older events (``current_limit``), and -1 for unlimited.
_LIMIT_NAMES = {"TIER_50": 50, "TIER_250": 250, "TIER_1K": 1_000, "TIER_2K": 2_000, "TIER_10K": 10_000,
                "TIER_100K": 100_000, "TIER_UNLIMITED": -1, "UNLIMITED": -1}


def reported_messaging_limit(value: object) -> int | None:
    """The portfolio limit an event reports (``max_daily_conversations_per_business``: an
    integer, -1 for unlimited, or a tier name); None when it reports none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value == -1 or value > 0 else None
    text = str(value).strip().upper()
    if text in _LIMIT_NAMES:
        return _LIMIT_NAMES[text]
    try:
        number = int(text)
    except ValueError:
        return None
    return number if number == -1 or number > 0 else None
