"""Waiting for an event in a test: poll its condition until it holds, or fail saying what never happened.

A test that sleeps a fixed time and hopes the other process got there is slow
on a quiet machine and wrong on a busy one. :func:`wait_until` polls the
condition itself and fails the test, naming it, once ``timeout`` seconds pass.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a true value, and return that value.

    Raises:
        AssertionError: ``predicate`` was still false after ``timeout`` seconds;
            the message says ``what`` was awaited and its last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}, in vain (last seen: {value!r})")
        time.sleep(interval)
