"""Polling helpers: wait for a condition instead of sleeping a fixed time.

Tests must not assert timings that fail on a slow, shared machine: they wait *until*
something is true, with a generous ceiling that only matters when it never becomes true.
"""

# A polling deadline, not a cancellation scope: the sync and async helpers share `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0


class WaitTimeout(AssertionError):
    """The condition did not become true in time (an ``AssertionError``, so pytest shows it
    as a test failure with the message)."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Raises :class:`WaitTimeout` after ``timeout`` seconds, naming ``message`` (or the
    predicate) and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(_describe(predicate, timeout, message, value))
        time.sleep(interval)


@overload
async def async_wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = ...,
    interval: float = ...,
    message: str = ...,
) -> T: ...


@overload
async def async_wait_for(
    predicate: Callable[[], T],
    timeout: float = ...,
    interval: float = ...,
    message: str = ...,
) -> T: ...


async def async_wait_for(
    predicate: Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
    message: str = "",
) -> Any:
    """Async :func:`wait_for`: ``predicate`` may be a plain function or return an awaitable.

    Sleeps with ``asyncio.sleep`` between attempts, so the code under test keeps running
    on the same event loop.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        if loop.time() >= deadline:
            raise WaitTimeout(_describe(predicate, timeout, message, value))
        await asyncio.sleep(interval)


def _describe(predicate: object, timeout: float, message: str, last: object) -> str:
    what = message or getattr(predicate, "__qualname__", repr(predicate))
    return f"timed out after {timeout:g} s waiting for {what} (last value: {last!r})"
