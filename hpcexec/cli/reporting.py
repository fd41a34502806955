"""``hpcexec report``: what the selected jobs waited for and how well they used what they
asked for (see :mod:`hpcexec.report`), as a table, advice and totals, or JSON."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from ..errors import HpcexecError
from ..record import JobRecord
from ..report import JobUsage, advice, summary, usage_of
from .context import Context, UsageError, one_line, parse_states
from .output import note, short_key, table

COLUMNS = ("KEY", "NAME", "STATE", "WAITED", "RAN", "CPU", "MEM USED/ASKED", "TIME USED")


def cmd_report(args: argparse.Namespace, ctx: Context) -> int:
    records = _selected(args, ctx)
    ctx.refresh(records)
    store = ctx.store()
    fresh = [store.get(r.key) or r for r in records] if store is not None else records
    rows, unreachable = _usages(ctx, fresh)
    if unreachable:
        note(
            f"usage of jobs on {', '.join(sorted(unreachable))} not read (out of reach): "
            "their rows show times only"
        )
    totals, tips = summary(rows), advice(rows)
    if args.html:
        _write_html(args.html, rows, totals, tips)
    if ctx.out.as_json:
        data = [{**asdict(r), "cpu_efficiency": r.cpu_efficiency} for r in rows]
        ctx.out.emit({"jobs": data, "summary": totals, "advice": tips}, None)
        return 0
    if not rows:
        ctx.out.emit(None, "no jobs")
        return 0
    text = table(COLUMNS, [_row(r) for r in rows])
    text += "\n\n" + _totals_text(totals)
    if tips:
        text += "\n\nadvice:\n" + "\n".join(f"  {t}" for t in tips)
    ctx.out.emit(None, text)
    return 0


def _selected(args: argparse.Namespace, ctx: Context) -> list[JobRecord]:
    if args.keys:
        if args.match or args.state:
            raise UsageError("give KEYs, or --match/--state, not both")
        return [ctx.find(k) for k in args.keys]
    records = ctx.select(parse_states(args.state), args.match, newest=None if args.all else 200)
    return sorted(records, key=lambda r: r.submitted or 0)


def _usages(ctx: Context, records: list[JobRecord]) -> tuple[list[JobUsage], set[str]]:
    """Each record's usage: its runner's figures and the scheduler's accounting where the
    host is in reach, else what the record says."""
    rows, unreachable = [], set()
    for rec in records:
        info = None
        if rec.state.finished and ctx.reachable(rec.host):
            try:
                info = ctx.attach(rec).info()
            except (HpcexecError, OSError) as e:
                unreachable.add(f"{rec.host} ({one_line(e)})")
        elif rec.state.finished:
            unreachable.add(rec.host)
        rows.append(usage_of(rec, info))
    return rows, unreachable


def _row(r: JobUsage) -> list[str]:
    eff = r.cpu_efficiency
    mem = "-"
    if r.mem_used_mb is not None or r.mem_asked_mb is not None:
        mem = f"{_mb(r.mem_used_mb)}/{_mb(r.mem_asked_mb)}"
        if r.mem_share is not None:
            mem += f" ({r.mem_share:.0%})"
    time_used = _secs(r.ran)
    if r.time_share is not None:
        time_used += f" ({r.time_share:.0%} of {_secs(r.time_limit)})"
    return [
        short_key(r.key),
        r.name,
        r.state,
        _secs(r.waited),
        _secs(r.ran),
        "-" if eff is None else f"{eff:.0%} of {r.cores}",
        mem,
        time_used,
    ]


def _totals_text(t: dict[str, Any]) -> str:
    parts = [f"{t['jobs']} jobs", f"median wait {_secs(t['median_wait'])}"]
    parts.append(f"longest wait {_secs(t['longest_wait'])}")
    if t["cpu_efficiency"] is not None:
        used, reserved = t["core_hours_used"], t["core_hours_reserved"]
        amounts = (
            f"{used:.2f} of {reserved:.2f} core-hours"
            if reserved >= 0.1
            else f"{used * 3600:.1f} of {reserved * 3600:.1f} core-seconds"
        )
        parts.append(f"{amounts} used ({t['cpu_efficiency']:.0%})")
    return "; ".join(parts)


def _secs(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _mb(mb: float | None) -> str:
    if mb is None:
        return "-"
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


def _write_html(path: str, rows: list[JobUsage], totals: dict[str, Any], tips: list[str]) -> None:
    from ..report_html import render

    page = render(rows, COLUMNS, [_row(r) for r in rows], _totals_text(totals), tips)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    note(f"wrote {path}: open it in a browser")
