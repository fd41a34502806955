"""Tasks in a module that takes a second to import, as a big library on a shared disk can."""

from __future__ import annotations

import time

time.sleep(1.0)


def sleepy(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x
