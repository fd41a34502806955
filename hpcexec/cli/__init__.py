"""The ``hpcexec`` command: submit, follow and control jobs and their cache from a shell.

It works on the same Store and Executor the library uses, so it sees the jobs a workflow
script submitted and the script sees the jobs it submitted. Errors are one line on stderr
with a non-zero exit status; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence

from ..config import resolve
from ..errors import HpcexecError
from .commands import COMMANDS
from .context import Context, UsageError, one_line
from .output import Output
from .parser import parse

__all__ = ["main"]


class _LibraryErrors(logging.Filter):
    """Errors the library logs reach the user as this command's own message or as a
    job's state; only warnings are printed besides (everything with --debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def _logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hpcexec: %(levelname)s: %(message)s"))
    if not debug:
        handler.addFilter(_LibraryErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.INFO if debug else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``hpcexec`` command; returns the exit status."""
    args = parse(list(sys.argv[1:] if argv is None else argv))
    _logging(args.debug)
    ctx = None
    try:
        labels = {
            "cache_dir": "--cache-dir",
            "backend": "--backend",
            "host": "--host",
            "profile": "--profile",
        }
        settings = resolve(
            args.profile,
            {"cache_dir": args.cache_dir, "backend": args.backend, "host": args.host},
            labels=labels,
        )
        ctx = Context(settings, Output(args.json))
        return COMMANDS[args.cmd](args, ctx)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:  # `hpcexec jobs | head`
        sys.stderr.close()
        return 0
    except (HpcexecError, OSError) as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"hpcexec: error: {one_line(e)}\n")
        return 2 if isinstance(e, UsageError) else 1
    except Exception as e:  # a bug: still one line, the traceback with --debug  # noqa: BLE001
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(
            f"hpcexec: internal error: {type(e).__name__}: {one_line(e)} "
            f"(--debug shows the traceback; please report it)\n"
        )
        return 1
    finally:
        if ctx is not None:
            ctx.close()
