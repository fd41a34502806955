"""What jobs waited for and how well they used what they asked for (``hpcexec report``).

For each job: its wait in the queue (submitted -> started), its run (started -> finished, or
the accounting's elapsed time), and three ratios, as ``seff`` gives them for one SLURM job:

- CPU efficiency: CPU time / (cores x wall time), cores = ``threads x ppn`` per node x nodes
  (a multi-task callable's CPU time is rank 0's: its figure is a lower bound);
- memory: the largest resident set seen / ``mem`` asked (per node);
- time: wall time / the ``time`` limit.

Jobs of one name (a ``map``, a sweep) are judged together, by their largest use, so a
report of a thousand jobs gives one line of advice per name where a resource was far
over-asked, with the value to ask for instead. Pure: it is given the records and their
:class:`~hpcexec.future.JobInfo`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .future import JobInfo
from .record import JobRecord
from .resourcevalues import format_time

#: advice is given where at most this share of a resource was used ...
OVER_ASKED = 0.25
#: ... and the unused part is at least this much (MiB; seconds; cores)
MIN_MEM_SPARE = 1024
MIN_TIME_SPARE = 600
MIN_IDLE_CORES = 1.0
HEADROOM = 1.5  # the value suggested: the largest use seen times this
MIN_MEM_SUGGESTED = 256  # MiB


@dataclass(frozen=True)
class JobUsage:
    """One job's wait, run and use of what it asked for (None: not known)."""

    key: str
    name: str
    state: str
    submitted: float | None  # when, seconds since the epoch
    waited: float | None  # seconds in the queue
    ran: float | None  # seconds of wall time
    cores: int
    cpu_seconds: float | None
    mem_used_mb: float | None
    mem_asked_mb: float | None
    time_limit: float | None  # seconds

    @property
    def cpu_efficiency(self) -> float | None:
        if self.cpu_seconds is None or not self.ran:
            return None
        return self.cpu_seconds / (self.cores * self.ran)

    @property
    def mem_share(self) -> float | None:
        if self.mem_used_mb is None or not self.mem_asked_mb:
            return None
        return self.mem_used_mb / self.mem_asked_mb

    @property
    def time_share(self) -> float | None:
        if self.ran is None or not self.time_limit:
            return None
        return self.ran / self.time_limit


def usage_of(rec: JobRecord, info: JobInfo | None) -> JobUsage:
    """``rec``'s :class:`JobUsage`, from its record and (where known) its usage and
    accounting."""
    res = rec.resources
    waited = rec.started - rec.submitted if rec.started and rec.submitted else None
    ran = info.wallclock if info is not None else None
    if ran is None and rec.started and rec.finished:
        ran = rec.finished - rec.started
    return JobUsage(
        key=rec.key,
        name=rec.name or rec.key,
        state=rec.state.value,
        submitted=rec.submitted,
        waited=max(0.0, waited) if waited is not None else None,
        ran=ran,
        cores=max(1, rec.cores or 1) * int(res.get("nodes") or 1),
        cpu_seconds=info.cpu_seconds if info is not None else None,
        mem_used_mb=info.max_rss_mb if info is not None else None,
        mem_asked_mb=float(res["mem"]) if res.get("mem") else None,
        time_limit=float(res["time"]) if res.get("time") else None,
    )


def advice(rows: Iterable[JobUsage]) -> list[str]:
    """One line per job name and resource that its jobs used at most a quarter of, with
    what to ask for instead (judged on the finished jobs that report a use)."""
    by_name: dict[str, list[JobUsage]] = {}
    for r in rows:
        by_name.setdefault(r.name, []).append(r)
    out: list[str] = []
    for name, group in by_name.items():
        label = f"{name} ({len(group)} jobs)" if len(group) > 1 else name
        out += [f"{label}: {line}" for line in _group_advice(group)]
    return out


def _group_advice(group: list[JobUsage]) -> list[str]:
    lines = []
    mem = [(r.mem_used_mb, r.mem_asked_mb) for r in group if r.mem_used_mb and r.mem_asked_mb]
    if mem:
        used, asked = max(u for u, _ in mem), max(a for _, a in mem)
        if used <= OVER_ASKED * asked and asked - used >= MIN_MEM_SPARE:
            want = _mem_text(max(MIN_MEM_SUGGESTED, math.ceil(used * HEADROOM)))
            lines.append(
                f"asked {_mem_text(asked)} of memory, used at most {_mem_text(used)}: "
                f"ask for about {want} (mem={want!r})"
            )
    times = [(r.ran, r.time_limit) for r in group if r.ran and r.time_limit]
    if times:
        ran, limit = max(t for t, _ in times), max(lim for _, lim in times)
        if ran <= OVER_ASKED * limit and limit - ran >= MIN_TIME_SPARE:
            want = format_time(max(60, math.ceil(ran * HEADROOM / 60) * 60))
            lines.append(
                f"time limit {format_time(int(limit))}, ran {format_time(int(ran))} at most: "
                f"a shorter limit starts sooner (time={want!r})"
            )
    busy = [r.cpu_efficiency * r.cores for r in group if r.cpu_efficiency is not None]
    cores = max(r.cores for r in group)
    if busy and cores > 1:
        used_cores = max(busy)
        if used_cores <= OVER_ASKED * cores and cores - used_cores >= MIN_IDLE_CORES:
            fewer = max(1, math.ceil(used_cores * HEADROOM))
            lines.append(
                f"asked {cores} cores, kept {used_cores:.1f} busy at most: ask for {fewer} "
                f"(threads x ppn)"
            )
    return lines


def summary(rows: list[JobUsage]) -> dict[str, float | int | None]:
    """Totals over ``rows``: jobs, the median and longest wait, core-hours asked (cores x
    wall time) and used (CPU time), and their ratio."""
    waits = sorted(r.waited for r in rows if r.waited is not None)
    asked = sum(r.cores * r.ran for r in rows if r.ran is not None and r.cpu_seconds is not None)
    used = sum(r.cpu_seconds for r in rows if r.ran is not None and r.cpu_seconds is not None)
    return {
        "jobs": len(rows),
        "median_wait": waits[len(waits) // 2] if waits else None,
        "longest_wait": waits[-1] if waits else None,
        "core_hours_reserved": asked / 3600 if asked else None,
        "core_hours_used": used / 3600 if asked else None,
        "cpu_efficiency": used / asked if asked else None,
    }


def _mem_text(mib: float) -> str:
    return f"{mib / 1024:.1f}GB" if mib >= 1024 else f"{math.ceil(mib)}MB"
