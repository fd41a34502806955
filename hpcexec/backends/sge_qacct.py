"""Grid Engine's accounting (``qacct -j``) read as final job states: the part of the SGE
dialect (:mod:`hpcexec.backends.sge`) that reads what a job left when it ended. Its rules
are the ``failed`` codes and ``ru_maxrss`` notes of that module's documentation."""

from __future__ import annotations

import re

from ..states import JobState
from .base import JobStatus

TIMEOUT_REASON = "walltime exceeded (h_rt)"

_FIELD = re.compile(r"^(\w+)\s+(.*?)\s*$")
_MEM = re.compile(r"^([\d.]+)\s*([KMGTP]?)B?$", re.I)
_H_RT = re.compile(r"\bh_rt=([\d:]+)")


def parse_qacct(out: str) -> dict[str, JobStatus]:
    """The final state of each job (``N``) or array element (``N.T``) in ``qacct -j``
    output; a reused job number: the newest record wins."""
    found: dict[str, JobStatus] = {}
    for block in re.split(r"^={10,}\s*$", out, flags=re.M):
        rec: dict[str, str] = {}
        for line in block.splitlines():
            m = _FIELD.match(line)
            if m:
                rec.setdefault(m[1], m[2])
        number = rec.get("jobnumber", "")
        if not number.isdigit() or "failed" not in rec or "exit_status" not in rec:
            continue
        task = rec.get("taskid", "undefined")
        found[number if not task.isdigit() else f"{number}.{task}"] = _accounted(rec)
    return found


def _seconds(text: str) -> float | None:
    """``12s``, ``0.5s``, ``12``, ``H:MM:SS`` or ``D:HH:MM:SS`` in seconds."""
    text = text.strip().removesuffix("s")
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    total = 0.0
    for p, unit in zip(reversed(parts), (1, 60, 3600, 86400), strict=False):
        total += p * unit
    return total


def _bytes(text: str) -> float | None:
    """qacct memory like ``8.105MB``, ``0.000B``, ``1.2GB`` in bytes (1024-based)."""
    m = _MEM.match(text.strip())
    if not m:
        return None
    unit = m[2].upper()
    return float(m[1]) * float(1024 ** ("KMGTP".index(unit) + 1 if unit else 0))


def _accounted(rec: dict[str, str]) -> JobStatus:
    """One qacct record as a final state."""
    failed_text = rec.get("failed", "0")
    failed_code, _, failed_why = failed_text.partition(":")
    failed = int(failed_code) if failed_code.strip().isdigit() else -1
    exit_word = rec.get("exit_status", "").split()
    exit_code = int(exit_word[0]) if exit_word and exit_word[0].isdigit() else None
    elapsed = _seconds(rec.get("ru_wallclock", ""))
    host = rec.get("hostname") or None
    rss = _bytes(rec.get("ru_maxrss", ""))  # KiB printed as bytes: see the module doc
    mib = rss / 1024 if rss else None
    if not mib:
        vmem = _bytes(rec.get("maxvmem", ""))
        mib = vmem / 1024**2 if vmem else None
    max_rss = max(1, round(mib)) if mib else None
    signal = exit_code - 128 if exit_code is not None and exit_code > 128 else None
    m = _H_RT.search(rec.get("category", ""))
    limit = _seconds(m[1]) if m else None
    reason: str | None = None
    if failed == 0:
        state = JobState.COMPLETED if exit_code == 0 else JobState.FAILED
        signal = None  # a normal exit, whatever its code
    elif failed == 37:
        state, reason = JobState.TIMEOUT, f"{TIMEOUT_REASON}: SGE {failed_why.strip()}"
    elif failed == 100:
        if limit is not None and elapsed is not None and elapsed >= limit:
            state, reason = JobState.TIMEOUT, TIMEOUT_REASON
        elif signal == 9:
            state = JobState.CANCELLED  # qdel, or the out-of-memory killer: see module doc
        else:
            state = JobState.FAILED
            reason = f"killed by signal {signal}" if signal else None
    else:
        state = JobState.FAILED
        reason = f"SGE could not run the job (failed {failed_text.strip()})"
        exit_code = None
    return JobStatus(
        state,
        exit_code=exit_code,
        signal=signal,
        reason=reason,
        nodelist=host,
        elapsed=elapsed,
        max_rss=max_rss,
    )
