"""What one Dask worker job runs: the dask-worker command line and the job's shell body."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

from dask.utils import format_bytes


def default_lifetime_margin(walltime: float) -> float:
    """Seconds before the walltime at which a worker starts retiring: a tenth of the
    walltime, at least a minute and at most ten, and never more than half of it."""
    return min(max(60.0, walltime / 10), 600.0, walltime / 2)


@dataclass(frozen=True)
class WorkerJobSpec:
    """What one worker job runs and asks for, from dask-jobqueue's keywords."""

    cores: int = 1
    memory: int | None = None  # bytes per job
    processes: int = 1
    walltime: float | None = None  # seconds
    nanny: bool = True
    death_timeout: float | None = 60
    local_directory: str | None = None
    interface: str | None = None
    protocol: str | None = None
    worker_extra_args: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    python: str = sys.executable
    worker_command: str = "distributed.cli.dask_worker"
    lifetime_margin: float | None = None  # None: default_lifetime_margin; 0: no lifetime
    python_path: tuple[str, ...] = ()  # put before the job's PYTHONPATH
    resources: dict[str, Any] = field(default_factory=dict)  # hpcexec resources of the job

    @property
    def threads_per_process(self) -> int:
        return max(1, self.cores // self.processes)

    def lifetime(self) -> tuple[float, float] | None:
        """(lifetime, stagger) in seconds for ``--lifetime``, from the walltime."""
        if self.walltime is None or self.lifetime_margin == 0:
            return None
        if any(a == "--lifetime" or a.startswith("--lifetime=") for a in self.worker_extra_args):
            return None  # the user's own
        margin = self.lifetime_margin or default_lifetime_margin(self.walltime)
        return self.walltime - margin, margin / 4

    def command(self, scheduler: str, name: str) -> str:
        args = [
            self.python,
            "-m",
            self.worker_command,
            scheduler,
            "--name",
            name,
            "--nthreads",
            str(self.threads_per_process),
        ]
        if self.memory:
            args += [
                "--memory-limit",
                format_bytes(int(self.memory / self.processes)).replace(" ", ""),
            ]
        if self.worker_command == "distributed.cli.dask_worker":
            if self.processes > 1:
                args += ["--nworkers", str(self.processes)]
            args.append("--nanny" if self.nanny else "--no-nanny")
        if self.death_timeout is not None:
            args += ["--death-timeout", str(self.death_timeout)]
        if self.local_directory:
            args += ["--local-directory", self.local_directory]
        if self.interface:
            args += ["--interface", self.interface]
        if self.protocol:
            args += ["--protocol", self.protocol]
        life = self.lifetime()
        if life:
            args += ["--lifetime", f"{int(life[0])}s", "--lifetime-stagger", f"{int(life[1])}s"]
        args += list(self.worker_extra_args)
        return " ".join(shlex.quote(str(a)) for a in args)

    def body(self, scheduler: str, name: str) -> str:
        """The shell body of the job: the client's import directories, the prologue, then
        the worker (not exec'd, so the job script records its exit code)."""
        lines = list(self.job_script_prologue)
        if self.python_path:
            path = shlex.quote(":".join(self.python_path))
            lines.insert(0, f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}")
        return "\n".join([*lines, self.command(scheduler, name)])


__all__ = ["WorkerJobSpec", "default_lifetime_margin"]
