"""The scheduler commands' rate limit (hpcexec/schedcommands.py): a few at once after a quiet
moment, then one per interval."""

from __future__ import annotations

import time

from hpcexec.schedcommands import BURST, RateLimit


def times_of(limit: RateLimit, n: int) -> list[float]:
    t0 = time.monotonic()
    out = []
    for _ in range(n):
        limit.wait()
        out.append(time.monotonic() - t0)
    return out


def test_a_burst_goes_at_once_then_calls_are_spaced():
    limit = RateLimit(20)  # one per 50 ms
    t = times_of(limit, BURST + 4)
    assert t[BURST - 1] < 0.03  # the first BURST without waiting
    assert t[-1] >= 4 * 0.05 - 0.01  # then one per interval
    assert all(b - a >= 0.04 for a, b in zip(t[BURST:], t[BURST + 1 :], strict=False))


def test_the_average_rate_holds_over_a_long_stream():
    limit = RateLimit(100)
    t = times_of(limit, 60)
    assert t[-1] >= (60 - BURST) / 100 - 0.01


def test_after_a_quiet_moment_the_burst_is_there_again():
    limit = RateLimit(20)
    times_of(limit, 10)
    time.sleep(BURST / 20 + 0.05)
    assert times_of(limit, BURST)[-1] < 0.03


def test_no_limit_never_waits():
    assert times_of(RateLimit(0), 50)[-1] < 0.05
