"""Runs inside the job: ``python -m hpcexec.runner JOBDIR``.

Loads the payload, runs it, writes the outcome to ``result.pkl`` (temporary name, then
rename) and writes the exit-code file last. A SIGTERM from the scheduler stops the work,
keeps whatever finished, and is recorded as the reason. Kept light: cloudpickle is imported
only when a payload or result needs it.
"""
from __future__ import annotations

import pickle
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from .jobfiles import EXITCODE, PAYLOAD, RESULT, write_atomic

OK, ERR = "ok", "err"


class Terminated(BaseException):
    """Raised in the job when the scheduler sends SIGTERM (walltime, cancel, preemption)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _on_signal(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _run_one(fn: Any, args: tuple, kwargs: dict) -> tuple:
    try:
        return (OK, fn(*args, **kwargs))
    except Terminated:
        raise
    except BaseException as e:  # the job reports every exception, KeyboardInterrupt included
        return (ERR, e, traceback.format_exc())


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _dump_outcome(outcome: tuple) -> tuple[bytes, bool]:
    """The outcome's bytes, and whether it is an error (a value that cannot be pickled
    becomes one)."""
    try:
        return _dumps(outcome), outcome[0] == ERR
    except Exception as e:
        if outcome[0] == OK:
            err = TypeError(f"the job's return value cannot be pickled: {e}")
            return _dumps((ERR, err, traceback.format_exc())), True
        exc, tb = outcome[1], outcome[2]
        stand_in = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        return _dumps((ERR, stand_in, tb)), True


def run(jobdir: Path) -> int:
    """Run the payload in ``jobdir``; returns the exit code for the process."""
    code, reason = 0, None
    outcomes: list[tuple] = []
    kind = "call"
    try:
        with open(jobdir / PAYLOAD, "rb") as f:
            header = pickle.load(f)  # plain data, read before the code that may need it
            for entry in reversed(header.get("sys_path", [])):
                if entry not in sys.path:
                    sys.path.insert(1, entry)
            payload = pickle.load(f)
        kind = payload["kind"]
        fn = payload["fn"]
        calls = payload["calls"]
        for args, kwargs in calls:
            out = _run_one(fn, args, kwargs)
            outcomes.append(out)
            if out[0] == ERR:
                code = 1
    except Terminated as t:
        code, reason = 128 + t.signum, str(t)
    except BaseException as e:  # payload could not be loaded: report it as the job's error
        outcomes = [(ERR, e, traceback.format_exc())]
        kind, code = "call", 1
    if outcomes and (kind == "chunk" or reason is None):
        dumped = [_dump_outcome(o) for o in outcomes]
        data = [d for d, _ in dumped]
        if code == 0 and any(is_err for _, is_err in dumped):
            code = 1
        write_atomic(jobdir / RESULT, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    write_atomic(jobdir / EXITCODE, f"{code}\n{reason or ''}\n".encode())
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hpcexec.runner JOBDIR", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return run(Path(argv[0]))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
