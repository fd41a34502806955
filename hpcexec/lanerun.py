"""In the job: run the jobs of a lane (:mod:`hpcexec.locallanes`) one after another in
this process, once its own job has run, as a ``map``'s chunk runs its calls.

The lane file (JSON, written by the client into the first job's directory, named by
``HPCEXEC_LANE``) lists the jobs that follow: each one's directory, output files, working
directory, the environment values that differ from the first job's and its claim file. Each
job is claimed first (that file in its directory, :func:`claim_name` of the lane, created
exclusively: the client creates it too to take a job out of the lane, so a job is run here
or taken out, never both); then its started file says this process's job id, its output goes
to its own files, its variables and working directory are set, and
:func:`hpcexec.runner.run` writes its result, usage and exit-code files. What the jobs import
stays imported for the next one, as in a chunk.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .jobfiles import create_new, redirect_output, write_atomic, write_started
from .layout import EXITCODE, cannot_start

LANE = "lane"  # the resource naming a record's lane: its first job's key, "-", a nonce
LANE_ENV = "HPCEXEC_LANE"  # the variable naming the lane file
LANE_FILE = "lane.json"  # in the first job's directory
TERMINATED = 128 + signal.SIGTERM  # a job's exit code once terminated: its lane stops


def claim_name(lane: str) -> str:
    """The file in a job's directory that says it was run by lane ``lane`` (the key of its
    first job) or taken out of it: one per lane, so a job taken out may join another."""
    return f"claimed.{lane}"


def serve(
    lane_file: Path,
    key_file: Path,
    run: Callable[[Path, Path], int],
    terminated: type[BaseException],
) -> None:
    """Run the jobs of the lane in ``lane_file`` that can still be claimed, in order, each by
    ``run`` (:func:`hpcexec.runner.run`, handed in: the runner imports this module), until
    one is ``terminated`` (SIGTERM: the process ends; the client queues the rest again)."""
    job_id = os.environ.get("HPCEXEC_JOB_ID", "")
    for job in json.loads(lane_file.read_text()):
        if not create_new(os.path.join(job["jobdir"], job["claim"])):
            continue
        exit_file = Path(job["jobdir"], EXITCODE)
        try:
            _enter(job, job_id)
        except OSError as e:  # the job ends failed, saying why; the next one runs
            write_atomic(exit_file, f"1\n{cannot_start(e)}\n".encode())
            continue
        except terminated as t:  # before its run began: it ends so, and so does the lane
            signum = getattr(t, "signum", signal.SIGTERM)  # hpcexec.runner.Terminated's
            write_atomic(exit_file, f"{128 + signum}\n{t}\n".encode())
            return
        if run(Path(job["jobdir"]), key_file) == TERMINATED:
            return


def _enter(job: dict, job_id: str) -> None:
    """Make this process the job's: its started file, output, variables, directory."""
    sys.stdout.flush()
    sys.stderr.flush()
    write_started(job["jobdir"], job_id)
    redirect_output(job["stdout"], job["stderr"])
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    sys.path[0] = job["cwd"]
