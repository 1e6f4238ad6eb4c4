"""The shared polling helper: sync and async checks, and a failure that says what never happened."""

from __future__ import annotations

import pytest

from .waiting import eventually


async def test_returns_the_first_true_value_of_a_sync_check() -> None:
    seen = iter([None, [], 0, {"state": "captured"}])
    assert await eventually(lambda: next(seen), what="the order", every_s=0) == {"state": "captured"}


async def test_awaits_an_async_check() -> None:
    calls: list[int] = []

    async def check() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) == 3 else None

    assert await eventually(check, what="the third call", every_s=0) == 3


async def test_a_timeout_names_what_was_awaited_and_the_last_value_seen() -> None:
    with pytest.raises(AssertionError, match=r"never happened within 0 s: the refund notices .*last of 1 checks: \[\]"):
        await eventually(lambda: [], what="the refund notices", timeout_s=0)


async def test_a_callable_what_describes_the_state_when_the_wait_ends() -> None:
    received: list[str] = []

    def shipped() -> bool:
        received.append("order.requested")
        return "order.shipped" in received

    with pytest.raises(AssertionError, match=r"order.shipped among \['order.requested'\]"):
        await eventually(shipped, what=lambda: f"order.shipped among {received}", timeout_s=0)
