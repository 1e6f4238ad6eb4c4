"""Waiting for what the services do asynchronously: the one polling helper of the tests."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    what: str | Callable[[], str],
    timeout_s: float = 90.0,
    every_s: float = 0.2,
) -> T:
    """Calls ``check`` (sync or async) until it returns something true (not None, False, 0 or
    empty), and returns that. The deadline only bounds a failing test: a loaded machine may take
    long to join a consumer group; nothing is timed.

    On timeout it fails naming ``what`` (a callable is asked then, to describe the state at the
    end) and the last value ``check`` returned, so that a CI log says what never happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    calls = 0
    last: object = None
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        calls += 1
        if got:
            return got  # type: ignore[return-value]
        last = got
        if loop.time() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(
                f"never happened within {timeout_s:g} s: {described} (last of {calls} checks: {last!r})"
            )
        await asyncio.sleep(every_s)
