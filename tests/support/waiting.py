"""Bounded polling: how a test waits for something another thread or process does."""

from __future__ import annotations

import time
import typing as t


def wait_until(predicate: t.Callable[[], t.Any], timeout: float = 30.0, what: str = "") -> t.Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)
