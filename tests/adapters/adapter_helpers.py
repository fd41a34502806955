"""Helpers for the adapter tests (a module of its own: a module named conftest is ambiguous
once several directories have one)."""

from __future__ import annotations

import time

import pytest


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something true; fail saying ``what`` otherwise."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"{what} not within {timeout} s")
        time.sleep(interval)
