"""The sender's per-number and per-tenant state stays bounded (pure, on an injected clock)."""

from __future__ import annotations

from parley_sender.domain.governor import MessagingLimit
from parley_sender.pacing import NumberStates


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_numbers_left_idle_are_forgotten_with_their_customers() -> None:
    clock = Clock()
    states = NumberStates(idle_s=60.0, clock=clock)
    for n in range(500):
        states.pacer(f"n{n}", 80)
        states.pair(f"n{n}").reserve(f"customer-{n}", clock.now)
    assert len(states.pacers) == 500 and len(states.pairs) == 500
    clock.now += 3600  # an hour later, one number is used again
    states.pacer("n7", 80)
    assert set(states.pacers) == {"n7"} and set(states.pairs) == {"n7"}
    assert states.pairs["n7"].owing == 0  # its idle customer forgotten too


def test_a_number_still_owing_a_customer_is_kept() -> None:
    clock = Clock()
    states = NumberStates(idle_s=60.0, clock=clock)
    states.pair("n1").on_throttled("c1", clock.now + 3000)  # blocked far into the future
    clock.now += 61
    states.pacer("n2", 80)
    assert "n1" in states.pairs


def test_numbers_of_a_revoked_partition_are_dropped() -> None:
    states = NumberStates(idle_s=60.0, clock=Clock())
    states.pacer("n1", 80)
    states.pacer("n2", 80)
    states.pair("n1")
    states.drop({"n1"})
    assert set(states.pacers) == {"n2"} and "n1" not in states.pairs


def test_an_unlimited_portfolio_keeps_no_list_of_customers() -> None:
    lim = MessagingLimit(limit=None)
    for i in range(10_000):
        lim.record(f"c{i}", 1000.0 + i)
    assert lim.reached == {}


def test_a_limited_portfolio_drops_customers_outside_its_window_as_it_records() -> None:
    lim = MessagingLimit(limit=100)
    for i in range(100):
        lim.record(f"old{i}", 0.0)
    for i in range(100):
        lim.record(f"new{i}", 90_000.0)  # more than 24 h later
    assert set(lim.reached) == {f"new{i}" for i in range(100)}
