import asyncio

from parley_sender.domain.governor import (
    MessagingLimit,
    PairRateLimit,
    ThroughputLimit,
    priority_rank,
    reported_messaging_limit,
    reported_throughput,
)
from parley_sender.pacing import Gate, NumberPacer


def _drive(limit: ThroughputLimit, seconds: float, start: float = 0.0) -> list[float]:
    """Grant as fast as the limit allows for ``seconds`` of simulated time."""
    now, granted = start, []
    while now < start + seconds:
        wait = limit.reserve(now)
        if wait == 0.0:
            granted.append(now)
        else:
            now += wait
    return granted


def _max_in_any_second(times: list[float]) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_throughput_never_exceeds_limit_in_any_one_second_window() -> None:
    for mps in (80, 1000, 7):
        granted = _drive(ThroughputLimit(limit=mps), 5.0)
        assert _max_in_any_second(granted) <= mps
        assert len(granted) >= 0.99 * 5 * mps  # a backlog uses the whole limit


def test_backlog_is_paced_not_fired_in_one_burst() -> None:
    granted = _drive(ThroughputLimit(limit=80), 1.0)
    assert sum(1 for t in granted if t < 0.1) == 8


def test_130429_halves_the_rate_then_it_recovers() -> None:
    lim = ThroughputLimit(limit=80, recovery_s=10.0)
    _drive(lim, 2.0)
    lim.on_throttled(2.0)
    assert lim.effective_limit(2.0) == 40
    during = _drive(lim, 2.0, start=3.0)
    assert _max_in_any_second(during) <= 56  # 40 recovering towards 80 over 10 s
    assert lim.effective_limit(12.5) == 80
    after = _drive(lim, 2.0, start=13.0)
    assert _max_in_any_second(after) == 80


def test_repeated_130429_keeps_backing_off_to_a_floor() -> None:
    lim = ThroughputLimit(limit=80)
    for _ in range(10):
        lim.on_throttled(0.0)
    assert lim.effective_limit(0.0) == 1


def test_limit_can_be_raised_to_1000() -> None:
    lim = ThroughputLimit(limit=80)
    lim.set_limit(1000)
    assert _max_in_any_second(_drive(lim, 2.0)) == 1000


def test_pair_rate_allows_a_burst_of_45_then_one_per_6_seconds() -> None:
    pair = PairRateLimit()
    assert all(pair.reserve("c", 0.0) == 0.0 for _ in range(45))
    assert pair.reserve("c", 0.0) == 45 * 6.0  # the burst is repaid before the next message
    assert pair.reserve("c", 270.0) == 0.0
    assert pair.reserve("other", 0.0) == 0.0  # per customer


def test_one_message_per_6_seconds_without_bursting() -> None:
    pair = PairRateLimit()
    for i in range(10):
        assert pair.reserve("c", i * 6.0) == 0.0


def test_a_burst_of_20_needs_about_two_minutes_to_be_repaid() -> None:
    pair = PairRateLimit()
    for _ in range(20):
        assert pair.reserve("c", 0.0) == 0.0
    assert pair.wait("c", 60.0) > 0
    assert pair.reserve("c", 120.0) == 0.0


def test_131056_backs_off_4_to_the_x_seconds() -> None:
    pair = PairRateLimit()
    assert pair.on_throttled("c", 0.0) == 4.0
    assert pair.wait("c", 1.0) == 3.0
    assert pair.reserve("c", 4.0) == 0.0
    assert pair.on_throttled("c", 4.0) == 16.0
    assert pair.on_throttled("c", 20.0) == 64.0
    pair.on_success("c")
    assert pair.on_throttled("c", 100.0) == 4.0


def test_idle_pairs_are_forgotten() -> None:
    pair = PairRateLimit()
    pair.reserve("c", 0.0)
    pair.forget_idle(1000.0)
    assert pair._pairs == {}


def test_messaging_limit_counts_unique_customers_in_rolling_24h() -> None:
    lim = MessagingLimit(limit=2)
    lim.record("a", 0.0)
    lim.record("a", 10.0)
    assert lim.allows("b", 20.0)
    lim.record("b", 20.0)
    assert not lim.allows("c", 30.0)
    assert lim.allows("a", 30.0)  # already reached: no new unique customer
    assert lim.room_at(30.0) == 10.0 + 24 * 3600
    assert lim.allows("c", 10.0 + 24 * 3600)


def test_reserve_takes_places_in_order_and_a_customer_counted_already_always_fits() -> None:
    lim = MessagingLimit(limit=2)
    assert [lim.reserve(c, 0.0) for c in ("a", "b", "c", "a", "d")] == [True, True, False, True, False]
    assert lim.count(0.0) == 2
    assert lim.reserve("c", 24 * 3600 + 1.0)  # the places of a day ago are free again


def test_the_limit_meta_reports_is_read_from_numbers_and_tier_names() -> None:
    assert [reported_messaging_limit(v) for v in (2000, "10000", -1, "-1", "TIER_2K", "TIER_UNLIMITED")] == [
        2000, 10_000, -1, -1, 2000, -1
    ]
    assert [reported_messaging_limit(v) for v in (None, "", "soon", 0, True)] == [None] * 5


def test_a_throughput_upgrade_event_grants_1000_per_second() -> None:
    assert reported_throughput("phone_number_quality_update", {"event": "THROUGHPUT_UPGRADE"}) == 1000
    assert reported_throughput("phone_number_quality_update", {"event": "FLAGGED"}) is None
    assert reported_throughput("account_update", {"event": "THROUGHPUT_UPGRADE"}) is None


def test_unlimited_tier() -> None:
    lim = MessagingLimit(limit=None)
    for i in range(10_000):
        lim.record(str(i), 0.0)
    assert lim.allows("new", 0.0)


def test_priority_replies_then_authentication_utility_marketing() -> None:
    order = sorted(["marketing", "utility", "reply", "authentication", "unknown"], key=priority_rank)
    assert order == ["reply", "authentication", "utility", "marketing", "unknown"]


async def test_a_closed_gate_releases_waiters_without_a_grant() -> None:
    pacer = NumberPacer(ThroughputLimit(limit=1))
    gate = Gate()
    assert await pacer.acquire(0, gate) is True  # the one grant of this second
    waiting = asyncio.ensure_future(pacer.acquire(0, gate))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # paced: the next grant is ~1 s away
    gate.close()
    assert await asyncio.wait_for(waiting, 0.5) is False  # released at once, unsent
    await pacer.close()
