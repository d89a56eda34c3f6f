"""Waiting in tests for something another process or task will do."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T] | T],
    accept: Callable[[T], bool],
    *,
    within: float = 15.0,
    every: float = 0.05,
) -> T:
    """Poll `probe` (sync or async) until `accept` holds; fails with the last value after
    `within` seconds (a bound on waiting, not a performance assertion)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within}s; last: {value!r}")
        await asyncio.sleep(every)
