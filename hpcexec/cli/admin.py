"""The ``hpcexec`` subcommands about the cache, the machine and the settings: ``clean``,
``merge``, ``backends`` and ``config`` (the job commands are in :mod:`.commands`)."""

from __future__ import annotations

import argparse
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import schedulers
from ..executor import detect_backend
from ..remote import SSHOptions, open_ssh
from .context import Context, UsageError, parse_states
from .output import pairs, table

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# -- the cache ---------------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """Seconds from ``30s``, ``15m``, ``12h``, ``7d``, ``2w`` (a bare number is days)."""
    m = _DURATION_RE.match(text)
    if not m:
        raise UsageError(
            f"--older-than takes a number and a unit s, m, h, d or w (e.g. 7d or 12h), not {text!r}"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def cmd_clean(args: argparse.Namespace, ctx: Context) -> int:
    states = parse_states(args.state)
    if not args.finished and not states:
        raise UsageError(
            "clean removes finished jobs: give --finished, or --state with "
            "finished states (completed, failed, cancelled, timeout, lost)"
        )
    states = states or ["finished"]
    ctx.refresh(ctx.select(["active"], args.match))  # jobs that ended while nobody looked
    records = ctx.select(states, args.match)
    active = [r for r in records if not r.state.finished]
    if active:
        raise UsageError(
            f"clean removes finished jobs only; {len(active)} selected job(s) "
            f"are {active[0].state.value}: `hpcexec cancel` them first"
        )
    if args.older_than:
        limit = time.time() - parse_duration(args.older_than)
        records = [r for r in records if (r.finished or r.modified) < limit]
    needed = {d for r in ctx.select(["active"], None) for d in r.deps}
    kept = [r for r in records if r.key in needed]
    records = [r for r in records if r.key not in needed]
    files_elsewhere = [r for r in records if r.host != ctx.here]
    if not args.dry_run and records:
        store = ctx.store()
        assert store is not None
        store.delete(r.key for r in records)
        jobs_dir = ctx.cache_dir / "jobs"
        for r in records:
            path = Path(r.jobdir)
            if r.host == ctx.here and path.parent == jobs_dir and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
    verb = "would remove" if args.dry_run else "removed"
    text = f"{verb} {len(records)} finished job(s)"
    if files_elsewhere:
        text += (
            f"; the files of {len(files_elsewhere)} on other hosts stay there "
            f"(under their remote_dir)"
        )
    if kept:
        text += f"; kept {len(kept)} that unfinished jobs depend on"
    ctx.out.emit(
        {
            "removed": [r.key for r in records],
            "dry_run": args.dry_run,
            "kept": [r.key for r in kept],
            "files_on_other_hosts": [r.key for r in files_elsewhere],
        },
        text,
    )
    return 0


def cmd_edit(args: argparse.Namespace, ctx: Context) -> int:
    records = ctx.records(args.keys)
    if args.name is not None and len(records) > 1:
        raise UsageError("--name gives one job a name: give one KEY with it")
    if args.name is not None and not args.name.strip():
        raise UsageError("--name needs a name; it cannot be empty")
    store = ctx.store()
    assert store is not None
    edited = []
    for rec in records:
        tags = None
        if args.tag or args.untag:
            tags = (set(rec.tags) | set(args.tag)) - set(args.untag)
        edited.append(
            store.annotate(
                rec.key,
                name=args.name,
                comment=args.comment,
                user_state=args.user_state,
                tags=tags,
            )
        )
    ctx.out.jobs(edited)
    return 0


def cmd_merge(args: argparse.Namespace, ctx: Context) -> int:
    host = ctx.settings["host"]
    if not host:
        raise UsageError(
            "merge needs --host H: the host the other cache's jobs ran on "
            "(e.g. `hpcexec merge other/.hpcexec --host cluster-a`)"
        )
    store = ctx.store(create=True)
    assert store is not None
    taken, kept = store.merge(args.path, host)
    ctx.out.emit(
        {"source": str(args.path), "host": host, "taken": taken, "kept": kept},
        f"merged {taken} record(s) from {args.path} as jobs on {host}; kept {kept} "
        f"of ours that were as new or newer",
    )
    return 0


# -- the machine and the settings ---------------------------------------------------------
def cmd_backends(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.settings
    host = s["host"]
    transport = None
    if host:
        transport = open_ssh(host, SSHOptions.of(s.effective()))
        which: Callable[[str], str | None] = transport.which
    else:
        which = shutil.which
    try:
        found = {c: which(c) for cls in schedulers().values() for c in (*cls.commands, *cls.others)}
    finally:
        if transport is not None:
            transport.close()
    auto = detect_backend(found.get)
    rows, data = (
        [["local", "-", "yes (always)"]],
        [{"backend": "local", "commands": {}, "available": True}],
    )
    for name, cls in schedulers().items():
        cmds = {c: found[c] for c in cls.commands}
        why_not = cls.found_with(found.get)
        rows.append([name, " ".join(cls.commands), f"no ({why_not})" if why_not else "yes"])
        data.append({"backend": name, "commands": cmds, "available": why_not is None})
    where = host or ctx.here
    text = (
        f"on {where}:\n"
        + table(["BACKEND", "COMMANDS", "FOUND"], rows)
        + f"\n\nbackend 'auto' would use: {auto}"
    )
    ctx.out.emit({"host": where, "backends": data, "auto": auto}, text)
    return 0


def cmd_config(args: argparse.Namespace, ctx: Context) -> int:
    s = ctx.settings
    files = s.files
    rows = [[k, _show(v.value), v.source] for k, v in s.values.items()]
    rows += [[f"resources.{k}", _show(v.value), v.source] for k, v in s.resources.items()]
    head = [
        (
            "profile",
            f"{s.profile} (from {s.profile_source})"
            if s.profile
            else "none (--profile, HPCEXEC_PROFILE or default_profile select one)",
        )
    ]
    for path in files.searched:
        head.append(("file", f"{path}" + ("" if path in files.found else " (not found)")))
    for name, prof in sorted(files.profiles.items()):
        head.append(("profile " + name, f"{prof.description or ''} ({prof.path})".strip()))
    text = pairs(head) + "\n\n" + table(["SETTING", "VALUE", "FROM"], rows)
    data = {
        "profile": s.profile,
        "profile_from": s.profile_source,
        "files": [{"path": str(p), "found": p in files.found} for p in files.searched],
        "profiles": {
            n: {"path": str(p.path), "description": p.description}
            for n, p in sorted(files.profiles.items())
        },
        "settings": {k: {"value": v.value, "from": v.source} for k, v in s.values.items()},
        "resources": {k: {"value": v.value, "from": v.source} for k, v in s.resources.items()},
    }
    ctx.out.emit(data, text)
    return 0


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_adopt(args: argparse.Namespace, ctx: Context) -> int:
    """Records for jobs started outside hpcexec, by their scheduler ids, then followed."""
    ex = ctx.executor()
    futures = [ex.adopt(job_id, name=args.name) for job_id in args.job_ids]
    for f in futures:
        ctx.follow(ex, f)
    ctx.out.jobs([f.record for f in futures], full_key=True)
    return 0
