"""Meta's per-number throughput and per-recipient pair rate, as the simulator enforces them.

Both run on real (monotonic) time: they model the capacity of Meta's servers, not the
simulated calendar.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


class ThroughputLimiter:
    """At most ``limit`` accepted messages in any sliding 1-second window per phone number."""

    def __init__(self) -> None:
        self._accepted: dict[str, deque[float]] = {}

    def allows(self, phone_number_id: str, limit: int, now: float) -> bool:
        window = self._accepted.setdefault(phone_number_id, deque())
        horizon = now - 1.0
        while window and window[0] <= horizon:
            window.popleft()
        return len(window) < limit

    def record(self, phone_number_id: str, now: float) -> None:
        self._accepted.setdefault(phone_number_id, deque()).append(now)

    def try_acquire(self, phone_number_id: str, limit: int, now: float) -> bool:
        if not self.allows(phone_number_id, limit, now):
            return False
        self.record(phone_number_id, now)
        return True

    def reset(self) -> None:
        self._accepted.clear()


@dataclass
class _Bucket:
    tokens: float
    updated: float


class PairRateLimiter:
    """Per (business number, recipient): a token bucket of ``burst`` refilled one per ``interval_s``.

    Simplification of Meta's rule ("1 message per 6 s, bursts up to 45 borrowed from the future
    quota"): a burst drains the bucket and the refill rate makes the sender rest afterwards
    (a 20-message burst needs 20 x 6 s = 2 min to be fully repaid).
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def try_acquire(
        self, phone_number_id: str, recipient: str, *, burst: int, interval_s: float, now: float
    ) -> bool:
        key = (phone_number_id, recipient)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(burst), updated=now)
        elif interval_s > 0:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) / interval_s)
            bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def reset(self) -> None:
        self._buckets.clear()
