"""The simulated clock: real time shifted by an offset that tests (or the config) can set."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class SimClock:
    def __init__(self, start: datetime | None = None) -> None:
        self._offset = 0.0
        if start is not None:
            self.set(start)

    def now(self) -> float:
        """Simulated unix time in seconds."""
        return time.time() + self._offset

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def set(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
        self._offset = instant.timestamp() - time.time()

    def advance(self, seconds: float) -> None:
        self._offset += seconds
