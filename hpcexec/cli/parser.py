"""The command line's grammar: global options (accepted before or after the subcommand)
and one subparser per command."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from .. import __version__
from .resources import register as register_resources

GLOBAL_OPTIONS = ("cache_dir", "profile", "backend", "host", "json", "debug")
LAST_SHOWN = 50  # jobs in `hpcexec jobs`'s table unless --last or --all says otherwise
EXAMPLES = """\
examples:
  hpcexec submit --time 1:00:00 --mem 4GB -- ./run.sh input.dat
  hpcexec submit --dry-run --threads 4 -- 'make -j {threads}'
  hpcexec submit --file job.sbatch --time 2:00:00
  hpcexec jobs --state failed --match 'sweep-.*' --json
  hpcexec logs --follow KEY          hpcexec wait --progress KEY...
  hpcexec cancel KEY...              hpcexec clean --finished --older-than 7d
  hpcexec merge other-machine/.hpcexec --host cluster-a
  hpcexec --profile cluster-a config   hpcexec resources --backend sge

A KEY is a record key, a unique prefix of one, or a scheduler job id.
Exit status: 0 done, 1 error, 2 bad command line, 3 `wait`: a job did not complete,
124 `wait --timeout` passed first.
"""


#: submit's resource options, in the order --help lists them: resource key -> argparse keywords
SUBMIT_RESOURCES: dict[str, dict[str, Any]] = {
    "time": dict(help="walltime: MM, HH:MM:SS, D-HH:MM, ..."),
    "mem": dict(help="memory per node: 4GB, 500M, ..."),
    "threads": dict(help="threads (cores) per process"),
    "nodes": dict(help="nodes"),
    "ppn": dict(help="processes per node"),
    "queue": dict(help="queue or partition"),
    "account": dict(help="account (project) to charge"),
    "gpus": dict(help="GPUs per node, shared by its tasks"),
    "gpus_per_task": dict(help="GPUs of each task, its own (instead of --gpus)"),
    "name": dict(help="job name"),
    "native": dict(
        action="append",
        metavar="DIRECTIVE",
        help="a raw scheduler directive (repeatable), e.g. --native=--exclusive",
    ),
    "env": dict(
        action="append",
        metavar="NAME=VALUE",
        help="an environment variable for the job (repeatable)",
    ),
    "workdir": dict(help="directory the job runs in (default: this one)"),
    "stdout": dict(help="file for the job's standard output"),
    "stderr": dict(help="file for the job's standard error"),
    "join_output": dict(
        action="store_true", default=None, help="standard error into the standard output file"
    ),
    "stdin": dict(metavar="PATH", help="file the job reads as standard input"),
    "mail": dict(
        metavar="ADDRESS[:EVENTS]",
        help="mail ADDRESS when the job ends, or on EVENTS: begin,end,fail,all",
    ),
    "begin": dict(
        metavar="WHEN", help="start no earlier than WHEN: ISO time, or +MM / +HH:MM:SS from now"
    ),
    "deadline": dict(
        metavar="WHEN", help="a job not started (running, locally) by WHEN ends; same forms"
    ),
}


class Parser(argparse.ArgumentParser):
    """Errors in one line that says where to look, exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"hpcexec: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """``suppress``: set nothing unless given, so the options may stand before or after
    the subcommand without the subparser's defaults overwriting the first."""
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    g = parser.add_argument_group("global options")
    g.add_argument(
        "--cache-dir",
        metavar="DIR",
        **d,
        help="the job cache (default: $HPCEXEC_CACHE_DIR, the profile's, .hpcexec)",
    )
    g.add_argument(
        "--profile",
        metavar="NAME",
        **d,
        help="a profile from hpcexec.toml or ~/.config/hpcexec/config.toml "
        "(default: $HPCEXEC_PROFILE, the files' default_profile)",
    )
    g.add_argument(
        "--backend",
        metavar="NAME",
        **d,
        help="local, slurm, sge, pbspro, torque, lsf, one a package registers, or "
        "auto (for jobs: a filter)",
    )
    g.add_argument(
        "--host",
        metavar="HOST",
        **d,
        help="jobs on this host over SSH (for jobs: a filter, several hosts separated "
        "by commas; for merge: the host the merged jobs ran on)",
    )
    g.add_argument("--json", action="store_true", **d, help="print JSON")
    g.add_argument(
        "--debug", action="store_true", **d, help="log what happens, and show tracebacks"
    )


def build_parser() -> Parser:
    top = Parser(
        prog="hpcexec",
        description="Submit, follow and control hpcexec jobs and their cache.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"hpcexec {__version__}")
    _global_options(top, suppress=False)
    sub = top.add_subparsers(dest="cmd", metavar="COMMAND", required=True, parser_class=Parser)
    register_resources(sub, lambda p: _global_options(p, suppress=True))
    _add_submit(sub)
    _add_following(sub)
    _add_report(sub)
    _add_control(sub)
    _add_cache_commands(sub)
    return top


def _count(text: str) -> int:
    """A positive whole number, for argparse."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number (e.g. 200)")
    return n


def _command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand, which takes the global options too."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    _global_options(p, suppress=True)
    return p


def _add_submit(sub: Any) -> None:
    p = _command(sub, "submit", "run a shell command as a job; prints its key and job id")
    r = p.add_argument_group("resources")
    for key, kw in SUBMIT_RESOURCES.items():
        r.add_argument("--" + key.replace("_", "-"), **kw)
    o = p.add_argument_group("job options")
    o.add_argument(
        "--key", help="name the record yourself (default: a hash of the command and resources)"
    )
    o.add_argument("--force", action="store_true", help="run it even if the cache has it")
    o.add_argument("--hold", action="store_true", help="submit it held (`hpcexec release`)")
    o.add_argument(
        "--file",
        metavar="PATH",
        help="submit this job script (its #SBATCH/#$/#PBS/#BSUB lines are kept; "
        "options given here win) instead of a COMMAND",
    )
    o.add_argument(
        "--prologue",
        metavar="SHELL",
        help="shell text run here before submitting; if it fails, nothing is submitted",
    )
    o.add_argument(
        "--epilogue",
        metavar="SHELL",
        help="shell text run here once, when a client following the job sees it "
        "end (e.g. `hpcexec wait`)",
    )
    o.add_argument(
        "--aux-script",
        action="append",
        metavar="NAME=PATH",
        help="write the file PATH beside the job script as NAME (repeatable; "
        "{placeholders} filled; the body finds it as {jobdir}/NAME)",
    )
    o.add_argument(
        "--dry-run",
        action="store_true",
        help="print the script that would be submitted; write and submit nothing",
    )
    p.add_argument(
        "command",
        nargs="*",
        metavar="-- COMMAND",
        help="the shell command; one word is a shell body as written",
    )


def _add_report(sub: Any) -> None:
    """hpcexec report: what jobs waited for and used."""
    p = _command(sub, "report", "what jobs waited for and used of what they asked, and advice")
    p.add_argument("keys", nargs="*", metavar="KEY", help="these jobs (default: a selection)")
    p.add_argument("--state", action="append", metavar="STATE", help="as for jobs")
    p.add_argument("--match", metavar="REGEX", help="as for jobs (a map's or a sweep's name)")
    p.add_argument(
        "--all", action="store_true", help="every job selected (default: the newest 200)"
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write it as one self-contained page with a timeline (pip install "
        "'hpcexec[report]')",
    )


def _add_following(sub: Any) -> None:
    """The commands that look at jobs: jobs, show, logs, wait."""
    p = _command(sub, "jobs", "list jobs: key, name, host, backend, id, state, age, what")
    p.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        help="pending, held, running, suspended, completed, failed, cancelled, "
        "timeout, lost, active or finished (repeatable, or comma-separated)",
    )
    p.add_argument(
        "--match",
        metavar="REGEX",
        help="a regular expression searched in key, name, what the job runs, "
        "job id, host, backend, state, comment, tags",
    )
    p.add_argument(
        "--no-refresh",
        action="store_true",
        help="show the records as stored, without asking the scheduler",
    )
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--last",
        type=_count,
        metavar="N",
        help=f"only the N most recently submitted jobs (the table's default: {LAST_SHOWN}; "
        "--json lists every job unless this is given)",
    )
    shown.add_argument("--all", action="store_true", help="every job, oldest first")

    p = _command(sub, "show", "everything about one job: record, usage, accounting, files")
    p.add_argument("key", metavar="KEY")

    p = _command(sub, "logs", "print a job's output")
    p.add_argument("key", metavar="KEY")
    p.add_argument("--stderr", action="store_true", help="standard error instead of output")
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing as the output grows, until the job ends",
    )

    p = _command(sub, "wait", "wait until jobs end; exit 0 if all completed")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--progress", action="store_true", help="a progress bar on stderr")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="give up after this long")


def _add_control(sub: Any) -> None:
    """The commands that change jobs in their scheduler: cancel, hold, release."""
    p = _command(sub, "cancel", "cancel jobs that wait, end jobs that run")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--no-wait", action="store_true", help="do not wait for them to end")

    p = _command(sub, "adopt", "follow jobs started outside hpcexec, by their scheduler ids")
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    p.add_argument("--name", help="the name their records get (default: the scheduler's)")

    p = _command(sub, "hold", "keep jobs that have not started from starting")
    p.add_argument("keys", nargs="+", metavar="KEY")

    p = _command(sub, "release", "let held jobs start")
    p.add_argument("keys", nargs="+", metavar="KEY")


def _add_cache_commands(sub: Any) -> None:
    """The commands about the cache and the setup: clean, edit, merge, backends, config."""
    p = _command(sub, "clean", "remove finished jobs' records and files from the cache")
    p.add_argument("--finished", action="store_true", help="every finished job")
    p.add_argument(
        "--state",
        action="append",
        metavar="STATE",
        help="only these finished states (repeatable, or comma-separated)",
    )
    p.add_argument("--match", metavar="REGEX", help="only jobs matching this")
    p.add_argument(
        "--older-than",
        metavar="AGE",
        help="only jobs that ended longer ago than this: 30m, 12h, 7d, 2w",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")

    p = _command(sub, "edit", "change a job's own fields: name, comment, tags, user state")
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--name", help="a new name (what the job runs and its key stay)")
    p.add_argument("--comment", help="a comment ('' removes it)")
    p.add_argument("--user-state", metavar="STATE", help="your own state, e.g. analysed")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="add a tag")
    p.add_argument("--untag", action="append", default=[], metavar="TAG", help="remove a tag")

    p = _command(sub, "merge", "bring in the records of another cache (with --host)")
    p.add_argument("path", metavar="PATH", help="the other cache directory or its jobs.sqlite")

    _command(sub, "backends", "which schedulers are found here, and which 'auto' would use")
    _command(sub, "config", "the effective settings and where each came from")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse a command line; for ``submit``, everything after the first ``--`` is the
    command (so its options are never taken for hpcexec's)."""
    parser = build_parser()
    head, tail = argv, []
    if "--" in argv:
        i = argv.index("--")
        head, tail = argv[:i], argv[i + 1 :]
    args = parser.parse_args(head)
    if args.cmd == "submit":
        args.command = [*args.command, *tail]
    elif tail:
        args = parser.parse_args(argv)
    for name in GLOBAL_OPTIONS:
        if not hasattr(args, name):
            setattr(args, name, False if name in ("json", "debug") else None)
    return args
