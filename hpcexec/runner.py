"""Runs inside the job: ``python -m hpcexec.runner JOBDIR KEYFILE``.

Loads the payload, runs it, writes the outcome to ``result.pkl`` (temporary name, then
rename) and writes the exit-code file last. A SIGTERM from the scheduler stops the work,
keeps whatever finished, and is recorded as the reason. A payload that cannot be loaded
(missing, unreadable, sealed with a key not here, needing a module not importable here) is
the reason too, also on stderr. Kept light: cloudpickle is imported only when a payload or
result needs it.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import codelines, trust
from .checkpoint import (
    REQUEUED_REASON,
    WARNING,
    Checkpointable,
    Resubmit,
    Warned,
    WarningGate,
)
from .errors import IntegrityError, OutOfMemory
from .integrity import KeyRing, job_key, seal, unseal
from .jobfiles import write_atomic
from .lanerun import LANE_ENV, TERMINATED
from .layout import CHECKPOINT, EXITCODE, PAYLOAD, RESTARTS, RESULT, USAGE, task_result

OK, ERR = "ok", "err"
_KEYS = KeyRing()  # the one key this job trusts, once run() has checked its key file


class FutureRef:
    """Stands in a payload for a JobFuture passed as an argument: the job reads the value
    from that job's result file."""

    def __init__(self, jobdir: str, index: int, key: str) -> None:
        self.jobdir, self.index, self.key = jobdir, index, key

    def __reduce__(self):
        return (FutureRef, (self.jobdir, self.index, self.key))

    def value(self) -> Any:
        path = Path(self.jobdir) / RESULT
        try:
            data, _ = unseal(path.read_bytes(), _KEYS, str(path))
            outcome = pickle.loads(pickle.loads(data)[self.index])
        except (OSError, IndexError, pickle.UnpicklingError, IntegrityError) as e:
            raise DependencyFailed(f"the result of job {self.key} cannot be read: {e}") from e
        if outcome[0] == ERR:
            words = (
                f"{outcome[3]}: {outcome[4]}"
                if len(outcome) >= 5
                else f"{type(outcome[1]).__name__}: {outcome[1]}"
            )  # an older runner's
            raise DependencyFailed(f"job {self.key}, whose result this job takes, raised {words}")
        return outcome[1]


class DependencyFailed(Exception):
    """A job this job takes a value from failed or left no result."""


def _resolve(obj: Any) -> Any:
    if isinstance(obj, FutureRef):
        return obj.value()
    if type(obj) in (list, tuple):
        return type(obj)(_resolve(x) for x in obj)
    if type(obj) is dict:
        return {k: _resolve(v) for k, v in obj.items()}
    return obj


class Terminated(BaseException):
    """Raised in the job when the scheduler sends SIGTERM (walltime, cancel, preemption)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _on_signal(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _run_one(fn: Any, args: tuple, kwargs: dict, refs: bool) -> tuple:
    try:
        if refs:
            args, kwargs = _resolve(args), _resolve(kwargs)
        return (OK, fn(*args, **kwargs))
    except (Terminated, Warned):
        raise
    except MemoryError as e:
        return (ERR, _out_of_memory(e), traceback.format_exc())
    except BaseException as e:  # the job reports every exception, KeyboardInterrupt included  # noqa: BLE001
        return (ERR, e, traceback.format_exc())


def memory_limit() -> str | None:
    """This process's memory limit, in words: an address-space or data rlimit (SGE's h_vmem,
    ``ulimit -v``) or its cgroup's ``memory.max`` (SLURM, systemd); None when unlimited."""
    try:
        import resource

        for name in ("RLIMIT_AS", "RLIMIT_DATA"):
            soft, _ = resource.getrlimit(getattr(resource, name))
            if soft != resource.RLIM_INFINITY:
                return f"{soft // 2**20} MiB ({name})"
    except (ImportError, AttributeError, OSError, ValueError):
        pass
    try:
        with open("/proc/self/cgroup") as f:
            path = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        with open(f"/sys/fs/cgroup{path}/memory.max") as f:
            text = f.read().strip()
        return None if text == "max" else f"{int(text) // 2**20} MiB (cgroup memory.max)"
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _out_of_memory(e: MemoryError) -> OutOfMemory:
    limit = memory_limit()
    where = f"under its memory limit of {limit}" if limit else "with no memory limit set"
    reason = f"out of memory: the job raised MemoryError {where}"
    from .states import JobState

    return OutOfMemory(
        f"{reason}{': ' + str(e) if str(e) else ''}. Ask for more `mem`, or use less.",
        state=JobState.FAILED,
        exit_code=1,
        reason=reason,
    )


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # pickle fails in many ways; cloudpickle tries next  # noqa: BLE001
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as e:  # a broken __str__ must not lose the outcome  # noqa: BLE001
        return f"<str() of it raised {type(e).__name__}>"


def _error_record(exc: BaseException, tb: str) -> tuple:
    """An error outcome as written: the exception pickled apart (None where it cannot be),
    so that the client, which may not be able to rebuild it, still has its traceback, type
    name and message: ``(ERR, bytes | None, traceback, "module.QualName", message)``."""
    try:
        blob: bytes | None = _dumps(exc)
    except Exception:  # an exception that cannot be pickled is sent as text  # noqa: BLE001
        blob = None
    return (ERR, blob, tb, f"{type(exc).__module__}.{type(exc).__qualname__}", _text(exc))


def _dump_outcome(outcome: tuple) -> tuple[bytes, bool]:
    """The outcome's bytes, and whether it is an error (a value that cannot be pickled
    becomes one)."""
    if outcome[0] == OK:
        try:
            return _dumps(outcome), False
        except Exception as e:  # a return value that cannot be pickled is the job's error  # noqa: BLE001
            err = TypeError(f"the job's return value cannot be pickled: {e}")
            outcome = (ERR, err, traceback.format_exc())
    return _dumps(_error_record(outcome[1], outcome[2])), True


IMPORT_PATH = "import path"  # a stage of loading a payload (see run's watch)
LOADED = "loaded"


def _ignore(stage: str) -> None:
    pass


def _load(data: bytes, watch: Callable[[str], None]) -> tuple[str, Any, list, bool]:
    """(kind, callable, calls, refs) of an unsealed payload."""
    f = io.BytesIO(data)
    header = pickle.load(f)  # plain data, read before the code that may need it
    for entry in reversed(header.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(1, entry)
    watch(IMPORT_PATH)
    codelines.install(header.get("lines", {}))
    payload = codelines.Unpickler(f, header.get("files", {})).load()
    return payload["kind"], payload["fn"], payload["calls"], bool(payload.get("refs"))


def _trusted_keys(jobdir: Path, key_file: Path | None) -> KeyRing:
    """The one key this job trusts, from the file its script names, once that file and the
    job's directory are checked (:mod:`hpcexec.trust`)."""
    global _KEYS
    if key_file is None:
        raise IntegrityError(
            "the job's script names no key file (written by an older "
            "hpcexec); nothing was loaded. Resubmit the job (force=True)."
        )
    trust.check_job_dir(str(jobdir))
    _KEYS = KeyRing(job_key(key_file))
    return _KEYS


def run(
    jobdir: Path,
    key_file: Path | None = None,
    rank: int | None = None,
    watch: Callable[[str], None] | None = None,
) -> int:
    """Run the payload in ``jobdir``, trusting only the key in ``key_file``; returns the exit
    code for the process. ``rank``: this task's rank in a multi-task job, which writes its
    own outcome file and leaves the exit-code file to the job script; None for a job of
    one task. ``watch`` is called with :data:`IMPORT_PATH` once the payload's import path is
    set, before anything of it is unpickled, then with :data:`LOADED` before it runs."""
    t0 = time.time()
    gate = WarningGate()  # a warning while the payload loads waits for the handler
    gate.hold()
    code, reason = 0, None
    note = None  # why a job that was not stopped failed (a result is still written if it can be)
    outcomes: list[tuple] = []
    kind = "call"
    key = None
    try:
        path = jobdir / PAYLOAD
        try:
            data, key = unseal(path.read_bytes(), _trusted_keys(jobdir, key_file), str(path))
            kind, fn, calls, refs = _load(data, watch or _ignore)
            if kind == "call" and rank is None and isinstance(fn, Checkpointable):
                fn, calls = _resume(jobdir, fn, calls)
                gate.open()  # asked for only by such jobs
            if watch is not None:
                watch(LOADED)
        except (Terminated, Warned):  # Warned: it came while the payload loaded
            raise
        except BaseException as e:  # the work never started; a result only where a key is  # noqa: BLE001
            code, note = 1, f"cannot load the payload {path}: {type(e).__name__}: {_text(e)}"
            print(f"hpcexec: {note}", file=sys.stderr)
            outcomes = [(ERR, e, traceback.format_exc())]
        else:
            indices = _chunk_indices(len(calls)) if kind == "chunk" else None
            for i, (args, kwargs) in enumerate(calls):
                if indices:
                    os.environ["HPCEXEC_ARRAY_INDEX"] = indices[i]
                out = _run_one(fn, args, kwargs, refs)
                outcomes.append(out)
                if out[0] == ERR:
                    code = 1
                    if isinstance(out[1], OutOfMemory):
                        note = note or out[1].reason
    except Terminated as t:
        code, reason = 128 + t.signum, str(t)
    except Warned:
        signal.signal(WARNING, signal.SIG_IGN)  # one checkpoint; the job ends with it
        if not outcomes:  # else the call returned just before the signal: keep its value
            code, reason = _checkpoint(jobdir, key, fn, calls[0])
    if outcomes and (kind == "chunk" or reason is None):
        code, reason = _write_result(jobdir / task_result(rank or 0), key, outcomes, code, reason)
    if not rank:
        _write_usage(jobdir, time.time() - t0)
    if rank is None:
        _write_exitcode(jobdir, code, reason or note)
    return code


def _write_exitcode(jobdir: Path, code: int, reason: str | None) -> None:
    """The job's last word: its output flushed first, as a client may take the exit-code
    file for the job's end before the process has exited (see :mod:`hpcexec.schedstatus`)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: started without that descriptor
                stream.flush()
        except (OSError, ValueError):  # closed by the payload: nothing left to lose
            pass
    write_atomic(jobdir / EXITCODE, f"{code}\n{reason or ''}\n".encode())


def run_here(jobdir: Path, keys: KeyRing) -> int:
    """Run the payload in ``jobdir`` in this process, as a worker of a pool does
    (:mod:`hpcexec.workerloop`): what it imported stays imported for the next one. Writes the
    result and exit-code files as :func:`run` does; the worker's own job handles signals,
    so there is no checkpoint or requeue here. Returns the exit code."""
    path = jobdir / PAYLOAD
    code, note, key = 0, None, None
    outcomes: list[tuple] = []
    try:
        data, key = unseal(path.read_bytes(), keys, str(path))
        _kind, fn, calls, refs = _load(data, _ignore)
    except Terminated:
        raise
    except BaseException as e:  # noqa: BLE001 - the task's outcome says why
        code, note = 1, f"cannot load the payload {path}: {type(e).__name__}: {_text(e)}"
        outcomes = [(ERR, e, traceback.format_exc())]
    else:
        outcomes = [_run_one(fn, args, kwargs, refs) for args, kwargs in calls]
    code, reason = _write_result(jobdir / RESULT, key, outcomes, code, None)
    _write_exitcode(jobdir, code, reason or note)
    return code


def _chunk_indices(n: int) -> list[str] | None:
    """The ``HPCEXEC_ARRAY_INDEX`` of each of a chunk's ``n`` calls: the chunk's (its first
    call's) counted on by ``HPCEXEC_INDEX_STEP`` (a map over a range steps by its step)."""
    first = os.environ.get("HPCEXEC_ARRAY_INDEX", "")
    step = os.environ.get("HPCEXEC_INDEX_STEP", "1")
    if not first.lstrip("-").isdigit() or not step.lstrip("-").isdigit():
        return None
    return [str(int(first) + i * int(step)) for i in range(n)]


def _resume(jobdir: Path, fn: Any, calls: list) -> tuple[Any, list]:
    """A checkpointable call, or what its last run's checkpoint said to run instead (that
    run's exit-code file removed, the restart counted in the job's ``restarts`` file)."""
    path = jobdir / CHECKPOINT
    try:
        sealed = path.read_bytes()
    except FileNotFoundError:
        return fn, calls
    data, _key = unseal(sealed, _KEYS, str(path))
    resubmit = pickle.loads(data)
    (jobdir / EXITCODE).unlink(missing_ok=True)
    with open(jobdir / RESTARTS, "a") as f:
        f.write(f"{time.time():.0f} {os.environ.get('HPCEXEC_JOB_ID', '')}\n")
    return resubmit.fn, [(tuple(resubmit.args), dict(resubmit.kwargs))]


def _checkpoint(jobdir: Path, key: bytes | None, fn: Any, call: tuple) -> tuple[int, str]:
    """Save what the job runs next (``fn.checkpoint(*args, **kwargs)``) beside its payload;
    the exit code and reason of a job that ends checkpointed (or failed to)."""
    args, kwargs = call
    try:
        resubmit = fn.checkpoint(*args, **kwargs)
        if not isinstance(resubmit, Resubmit):
            raise TypeError(f"checkpoint() must return a hpcexec.Resubmit, not {resubmit!r}")
        assert key is not None  # the payload was unsealed with it
        write_atomic(jobdir / CHECKPOINT, seal(key, _dumps(resubmit)))
    except Exception as e:  # the job ends failed and says why  # noqa: BLE001
        print(f"hpcexec: the checkpoint failed: {traceback.format_exc()}", file=sys.stderr)
        return 1, f"the checkpoint failed: {type(e).__name__}: {_text(e)}"
    return 128 + WARNING, REQUEUED_REASON


def _write_result(
    path: Path, key: bytes | None, outcomes: list[tuple], code: int, reason: str | None
) -> tuple[int, str | None]:
    """Write the outcomes, sealed with ``key``, to ``path``; the exit code and reason then."""
    dumped = [_dump_outcome(o) for o in outcomes]
    items = [d for d, _ in dumped]
    if code == 0 and any(is_err for _, is_err in dumped):
        code = 1
    if key is not None:
        try:
            write_atomic(path, seal(key, pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)))
        except OSError as e:  # a full disk or quota: the job fails and says why
            code = 1
            reason = f"the result could not be written to {path}: {e}"
            print(f"hpcexec: {reason}", file=sys.stderr)
    return code, reason


def _write_usage(jobdir: Path, wall: float) -> None:
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        text = (
            f"max_rss_kib {ru.ru_maxrss}\nuser_s {ru.ru_utime:.3f}\n"
            f"sys_s {ru.ru_stime:.3f}\nwall_s {wall:.3f}\n"
        )
        write_atomic(jobdir / USAGE, text.encode())
    except (ImportError, OSError):  # no resource module (Windows) or a full disk: optional
        pass


def run_task(
    jobdir: Path, key_file: Path | None, prepare: Callable[[], None] = lambda: None
) -> int:
    """Run the record in ``jobdir`` in this (forked) process as the runner does: SIGTERM
    handled, then ``prepare()`` (outputs, variables), then :func:`run`."""
    signal.signal(signal.SIGTERM, _on_signal)
    prepare()
    return run(jobdir, key_file)


def _as_task(facts: list[str]) -> int:
    """Export a multi-task job's ``facts`` (tasks, nodes, processes per node, first node,
    port: what the job script passes after ``--tasks``) and this task's conventional
    variables; returns this task's rank."""
    from . import taskenv

    names = (taskenv.NTASKS, taskenv.NODES, taskenv.PPN, taskenv.MASTER_ADDR, taskenv.MASTER_PORT)
    os.environ.update(zip(names, facts, strict=True))
    t = taskenv.task()
    taskenv.export(t, os.environ)
    return t.rank


def main(argv: list[str] | None = None, watch: Callable[[str], None] | None = None) -> int:
    """The job's process: run the payload of ``argv``'s job directory (``watch``: see
    :func:`run`); its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    rank = None
    if len(argv) == 8 and argv[2] == "--tasks":  # one task of a multi-task job
        rank, argv = _as_task(argv[3:]), argv[:2]
    if len(argv) not in (1, 2):
        print(
            "usage: python -m hpcexec.runner JOBDIR KEYFILE "
            "[--tasks NTASKS NODES PPN MASTER_ADDR MASTER_PORT]",
            file=sys.stderr,
        )
        return 2
    key_file = Path(argv[1]) if len(argv) == 2 else None
    share = os.environ.pop("HPCEXEC_SHARE", None)
    if share and key_file is not None and rank is None:  # an array element may run others
        from .slots import serve

        return serve(Path(argv[0]), Path(share), key_file, run_task)
    signal.signal(signal.SIGTERM, _on_signal)
    lane = os.environ.pop(LANE_ENV, None)
    try:
        code = run(Path(argv[0]), key_file, rank, watch)
        if lane and key_file is not None and rank is None and code != TERMINATED:
            # jobs queued to follow it in this process (hpcexec.lanerun)
            from .lanerun import serve as run_lane

            run_lane(Path(lane), key_file, run, Terminated)
        return code
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy, so classes such as FutureRef that
    # payloads reference by their module name are the ones the runner checks against.
    from hpcexec.runner import main as _main

    sys.exit(_main())
