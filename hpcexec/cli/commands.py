"""The ``hpcexec`` job subcommands (submit, jobs, show, logs, wait, cancel, hold, release), one
function each taking the parsed arguments and a :class:`Context`, printing through ``ctx.out``
and returning the exit status; :data:`COMMANDS` names every subcommand."""

from __future__ import annotations

import argparse
import concurrent.futures
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends import backend_names, unknown_backend
from ..errors import BackendError, HpcexecError, RemoteError, RemoteTraceback, SubmitError
from ..executor import wait as wait_futures
from ..layout import JobLayout
from ..record import JobRecord
from ..states import JobState
from .admin import cmd_adopt, cmd_backends, cmd_clean, cmd_config, cmd_edit, cmd_merge
from .context import Context, UsageError, one_line, parse_states
from .output import note, pairs, record_dict, short_key, state_text, when
from .parser import LAST_SHOWN, SUBMIT_RESOURCES
from .reporting import cmd_report
from .resources import cmd_resources

if TYPE_CHECKING:
    from .. import JobFuture, JobInfo

SUBMIT_WAIT = 60.0  # seconds submit waits for the scheduler's job id
LOCAL_START_WAIT = 2.0  # seconds submit waits for a local job to start
CANCEL_WAIT = 20.0  # seconds cancel waits for the jobs to end
FOLLOW_INTERVAL = 0.5
SHOW_WAIT = 30.0  # seconds show waits for a failed job's exception to be read
EXIT_NOT_COMPLETED = 3  # wait: some job ended otherwise than completed
EXIT_TIMEOUT = 124  # wait: --timeout passed first (as timeout(1))


# -- submit ------------------------------------------------------------------------------
def shell_body(words: list[str]) -> str:
    """One word is a shell body as written; several are quoted into one command."""
    if not words:
        raise UsageError(
            "submit needs a command after --, e.g. "
            "`hpcexec submit --time 1:00:00 -- ./run.sh input.dat`"
        )
    return words[0] if len(words) == 1 else shlex.join(words)


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--env takes NAME=VALUE, not {item!r}")
        env[name] = value
    return env


def parse_aux(items: list[str]) -> dict[str, str]:
    """``--aux-script NAME=PATH``: the text of each file, by the name it gets."""
    aux = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise UsageError(f"--aux-script takes NAME=PATH, not {item!r}")
        try:
            aux[name] = Path(path).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--aux-script {name}: cannot read {path}: {e}") from None
    return aux


def cmd_submit(args: argparse.Namespace, ctx: Context) -> int:
    if args.file and args.command:
        raise UsageError("give either --file PATH or a command after --, not both")
    body = None if args.file else shell_body(args.command)
    wanted: dict[str, Any] = {
        k: getattr(args, k) for k in SUBMIT_RESOURCES if getattr(args, k) is not None
    }
    if args.env:
        wanted["env"] = parse_env(args.env)
    for flag in ("force", "hold"):
        if getattr(args, flag):
            wanted[flag] = True
    for option in ("key", "prologue", "epilogue"):
        if getattr(args, option):
            wanted[option] = getattr(args, option)
    if args.aux_script:
        wanted["aux_scripts"] = parse_aux(args.aux_script)
    ex = ctx.executor()
    view = ex.options(**wanted)
    if args.dry_run:
        script = view.file_script(args.file) if body is None else view.job_script(body)
        ctx.out.emit({"script": script}, script)
        return 0
    t0 = time.time()
    if body is None:
        future = view.submit_file(args.file, check=False)
    else:
        future = view.submit_shell(body, check=False)
    ctx.follow(ex, future)
    future.hurry()  # separate submits gather: this one is submitted now
    if not _stored(ctx, future.key):  # its submission failed; the future holds why
        raise future.exception(timeout=0) or SubmitError("the job was not submitted")
    rec = _wait_for_id(ctx, future.key)
    if rec.state is JobState.FAILED and not rec.job_id and (rec.submitted or 0) >= t0:
        raise SubmitError(f"the job was not submitted: {rec.reason or 'no reason given'}")
    ctx.out.jobs([rec], full_key=True)
    if (rec.submitted or t0) < t0:  # the record was there before this command
        note(
            f"this command ran before: the job is in the cache ({rec.state.value}); "
            f"--force runs it again"
        )
    elif rec.state is JobState.PENDING and rec.backend == "local" and not rec.job_id:
        note(
            "queued until cores are free; it starts while a client of this cache runs "
            f"(e.g. `hpcexec wait {short_key(rec.key)}`)"
        )
    return 0


def _stored(ctx: Context, key: str) -> bool:
    store = ctx.store()
    return store is not None and store.get(key) is not None


def _wait_for_id(ctx: Context, key: str) -> JobRecord:
    """The record once the scheduler gave it an id (or it started locally, or ended)."""
    store = ctx.store()
    assert store is not None
    start = time.monotonic()
    while True:
        rec = store.get(key)
        assert rec is not None
        waited = time.monotonic() - start
        if rec.job_id or rec.state.finished:
            return rec
        if rec.backend == "local" and (rec.state is JobState.HELD or waited > LOCAL_START_WAIT):
            return rec
        if waited > SUBMIT_WAIT:
            note(
                f"no job id from {rec.backend} after {SUBMIT_WAIT:.0f} s; "
                f"`hpcexec show {short_key(key)}` tells what happened"
            )
            return rec
        time.sleep(0.05)


# -- listing -----------------------------------------------------------------------------
def cmd_jobs(args: argparse.Namespace, ctx: Context) -> int:
    backend = args.backend  # given on the command line: filters
    host = [h.strip() for h in args.host.split(",") if h.strip()] if args.host else None
    if backend is not None and backend not in backend_names():
        raise unknown_backend(backend)
    states = parse_states(args.state)
    if ctx.store() is None:
        ctx.out.jobs([], empty=f"no jobs: no job cache at {ctx.cache_dir}")
        return 0
    if not args.no_refresh:
        ctx.refresh(ctx.select(["active"], None, backend, host))
    last = args.last
    if ctx.out.as_json and last is None:  # programs get every job, streamed
        ctx.out.emit_list(ctx.iter_data(states, args.match, backend, host))
        return 0
    if last is None and not args.all:
        last = LAST_SHOWN
    shown = ctx.select(states, args.match, backend, host, newest=last)
    ctx.out.jobs(shown)
    if last is not None and len(shown) == last:
        total = ctx.count(states, args.match, backend, host)
        if total > last:
            note(
                f"the {last} most recently submitted of {total} jobs; {total - last} older "
                f"not shown: --last N for more, --all for every one"
            )
    return 0


def _run_rows(rec: JobRecord, info: JobInfo | None) -> list[tuple[str, Any]]:
    """``hpcexec show``'s rows of how the job ran: usage, epilogue, earlier runs."""
    rows: list[tuple[str, Any]] = []
    if info is not None:
        rows += [
            ("wallclock", _secs(info.wallclock)),
            ("cpu time", _secs(info.cpu_seconds)),
            ("max rss", f"{info.max_rss_mb:.1f} MB" if info.max_rss_mb else None),
            ("nodes", info.nodelist),
        ]
    if rec.epilogue:
        rows.append(("epilogue", rec.epilogue_state or "not run yet"))
    for n, past in enumerate(rec.attempts, 1):  # earlier runs of a job run again (retries)
        rows.append(
            (f"run {n}", f"{past.get('job_id')}: {past.get('state')}, {past.get('reason')}")
        )
    return rows


def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    rec = ctx.find(args.key)
    ctx.refresh([rec])
    store = ctx.store()
    assert store is not None
    rec = store.get(rec.key) or rec
    info, raised = None, None
    try:
        future = ctx.attach(rec)
        info = future.info()
        raised = _raised(future, rec)
    except (HpcexecError, OSError) as e:  # out of reach: the record still tells
        note(f"usage and accounting not available: {one_line(e)}")
    data = record_dict(rec)
    data["exception"] = raised
    lay = JobLayout.of(rec.jobdir, rec.resources)
    data["stdout_path"], data["stderr_path"] = lay.stdout, lay.stderr
    data["info"] = None if info is None else {**vars(info), "state": info.state.value}
    res = " ".join(
        f"{k}={v}" for k, v in rec.resources.items() if k not in ("workdir", "python", "array_dir")
    )
    rows: list[tuple[str, Any]] = [
        ("key", rec.key),
        ("name", rec.name),
        ("runs", rec.summary),
        ("state", state_text(rec)),
        ("reason", rec.reason),
        *([("exception", f"{raised['type']}: {raised['message']}")] if raised else []),
        ("backend", rec.backend),
        ("host", rec.host),
        ("job id", rec.job_id),
        ("kind", rec.kind),
        ("submitted", when(rec.submitted)),
        ("started", when(rec.started)),
        ("finished", when(rec.finished)),
    ]
    rows += _run_rows(rec, info)
    rows += [
        ("resources", res or None),
        ("workdir", rec.resources.get("workdir")),
        ("after", ", ".join(short_key(d) for d in rec.deps) or None),
        ("job dir", rec.jobdir),
        ("stdout", data["stdout_path"]),
        ("stderr", data["stderr_path"]),
    ]
    rows += [
        (k, v)
        for k, v in (
            ("comment", rec.comment),
            ("user state", rec.user_state),
            ("tags", ", ".join(rec.tags)),
        )
        if v
    ]
    text = pairs(rows)
    if raised:
        text += f"\n\ntraceback (in the job):\n{raised['traceback'].rstrip()}"
    ctx.out.emit(data, text)
    return 0


def _raised(future: JobFuture, rec: JobRecord) -> dict[str, str] | None:
    """What a Python job that failed raised: its type, message and the traceback in the job
    (None for a job that failed otherwise: its record's reason says why)."""
    if rec.kind == "shell" or rec.state is not JobState.FAILED:
        return None
    try:
        exc = future.exception(timeout=SHOW_WAIT)
    except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
        return None
    if exc is None or not isinstance(exc.__cause__, RemoteTraceback):
        return None
    if isinstance(exc, RemoteError):  # not rebuilt here: the job's own words
        name, message = exc.type_name, exc.message
    else:
        name, message = f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)
    return {
        "type": name.removeprefix("builtins."),
        "message": message,
        "traceback": exc.__cause__.tb,
    }


def _secs(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f} s"


def cmd_logs(args: argparse.Namespace, ctx: Context) -> int:
    if args.follow and ctx.out.as_json:
        raise UsageError("--follow prints the output as it grows; leave out --json")
    rec = ctx.find(args.key)
    stream = "stderr" if args.stderr else "stdout"
    future = ctx.attach(rec)
    read: Callable[[], str] = getattr(future, stream)
    if not args.follow:
        text = read()
        if ctx.out.as_json:
            ctx.out.emit({"key": rec.key, "stream": stream, "text": text}, None)
        else:
            sys.stdout.write(text)
        return 0
    shown = ""
    while True:
        done = future.done()
        text = read()
        if not text.startswith(shown):  # rewritten (a new run): show it all again
            shown = ""
        sys.stdout.write(text[len(shown) :])
        sys.stdout.flush()
        shown = text
        if done:
            return 0
        concurrent.futures.wait([future], timeout=FOLLOW_INTERVAL)


# -- control -----------------------------------------------------------------------------
def cmd_wait(args: argparse.Namespace, ctx: Context) -> int:
    records = ctx.records(args.keys)
    futures = [ctx.attach(rec) for rec in records]
    _, not_done = wait_futures(futures, timeout=args.timeout, progress=args.progress)
    store = ctx.store()
    assert store is not None
    latest = store.get_many(r.key for r in records)
    final = [latest.get(r.key, r) for r in records]
    ctx.out.jobs(final)
    if not_done:
        note(f"{len(not_done)} of {len(records)} job(s) still unfinished after {args.timeout} s")
        return EXIT_TIMEOUT
    bad = [r for r in final if r.state is not JobState.COMPLETED]
    if bad:
        note(
            f"{len(bad)} of {len(records)} job(s) did not complete: "
            f"`hpcexec show KEY` tells why (a Python job's exception and traceback), "
            f"`hpcexec logs --stderr KEY` what it printed"
        )
        return EXIT_NOT_COMPLETED
    return 0


def cmd_cancel(args: argparse.Namespace, ctx: Context) -> int:
    records = ctx.records(args.keys)
    ending, failed = [], []
    for rec in records:
        if rec.state.finished:
            continue
        future = ctx.attach(rec)
        if future.terminate():
            ending.append(future)
        elif not future.done():
            failed.append(rec)
    if ending and not args.no_wait:
        concurrent.futures.wait(ending, timeout=CANCEL_WAIT)
    store = ctx.store()
    assert store is not None
    latest = store.get_many(r.key for r in records)
    ctx.out.jobs([latest.get(r.key, r) for r in records])
    if failed:
        raise BackendError(
            f"could not cancel {', '.join(short_key(r.key) for r in failed)}: "
            f"run with --debug to see the scheduler's answer"
        )
    return 0


def _hold_or_release(args: argparse.Namespace, ctx: Context, hold: bool) -> int:
    records = ctx.records(args.keys)
    refused: list[str] = []
    for rec in records:
        future = ctx.attach(rec)
        if not (future.hold() if hold else future.release()):
            refused.append(rec.key)
    store = ctx.store()
    assert store is not None
    latest = store.get_many(r.key for r in records)
    if not hold:  # a released local job starts now if cores are free (the monitor starts it)
        latest.update({k: _wait_for_id(ctx, k) for k in latest if k not in refused})
    ctx.out.jobs([latest.get(r.key, r) for r in records])
    if refused:
        what = ", ".join(
            f"{short_key(k)} ({latest[k].state.value if k in latest else 'gone'})" for k in refused
        )
        if hold:
            raise BackendError(f"cannot hold {what}: only a job that has not started can be held")
        raise BackendError(f"cannot release {what}: only a held job can be released")
    return 0


def cmd_hold(args: argparse.Namespace, ctx: Context) -> int:
    return _hold_or_release(args, ctx, hold=True)


def cmd_release(args: argparse.Namespace, ctx: Context) -> int:
    return _hold_or_release(args, ctx, hold=False)


COMMANDS: dict[str, Callable[[argparse.Namespace, Context], int]] = {
    "submit": cmd_submit,
    "jobs": cmd_jobs,
    "show": cmd_show,
    "report": cmd_report,
    "adopt": cmd_adopt,
    "logs": cmd_logs,
    "wait": cmd_wait,
    "cancel": cmd_cancel,
    "hold": cmd_hold,
    "release": cmd_release,
    "clean": cmd_clean,
    "edit": cmd_edit,
    "merge": cmd_merge,
    "backends": cmd_backends,
    "config": cmd_config,
    "resources": cmd_resources,
}
