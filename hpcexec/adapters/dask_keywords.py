"""dask-jobqueue's keywords and ``jobqueue.*`` config read into a :class:`WorkerJobSpec`."""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field, fields
from typing import Any

import dask
from dask.utils import parse_bytes
from distributed.deploy.utils import nprocesses_nthreads

from hpcexec.adapters.dask_workerspec import WorkerJobSpec
from hpcexec.environment import Environment
from hpcexec.errors import ResourceError

log = logging.getLogger(__name__)

# dask-jobqueue's configuration section for each backend (``jobqueue.<name>.*`` in dask's
# config), read for keywords not given, as dask-jobqueue does.
CONFIG_NAMES = {
    "slurm": "slurm",
    "sge": "sge",
    "pbspro": "pbs",
    "torque": "pbs",
    "lsf": "lsf",
    "local": "local",
}
RENAMED = {
    "project": "account",
    "job_extra": "job_extra_directives",
    "env_extra": "job_script_prologue",
    "extra": "worker_extra_args",
}
REFUSED = {
    "security": "TLS between scheduler and workers is not supported by HPCCluster yet; "
    "drop security= (or use dask-jobqueue for TLS)",
    "shebang": "hpcexec writes the job script, shell line included; drop shebang=",
    "job_directives_skip": "hpcexec renders the directives from the resources; leave a "
    "resource unset rather than skipping its directive",
    "header_skip": "hpcexec renders the directives from the resources; leave a "
    "resource unset rather than skipping its directive",
    "shared_temp_directory": "only used for TLS files, which HPCCluster does not support",
    "dashboard_address": "pass it in scheduler_options={'dashboard_address': ...}",
    "host": "pass it in scheduler_options={'host': ...}",
    "job_cls": "HPCCluster's workers are always hpcexec jobs",
}


@dataclass(frozen=True)
class JobqueueKeywords:
    """dask-jobqueue's keywords that HPCCluster takes, as dask-jobqueue documents them; None:
    not given (the ``jobqueue.<config_name>`` section of dask's config, then the default)."""

    cores: int | None = None
    memory: str | int | None = None
    processes: int | None = None
    walltime: Any = None
    queue: str | None = None
    account: str | None = None
    job_cpu: int | None = None
    job_mem: str | int | None = None
    job_extra_directives: list[str] | None = None
    job_script_prologue: list[str] | None = None
    worker_extra_args: list[str] | None = None
    interface: str | None = None
    protocol: str | None = None
    death_timeout: float | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    nanny: bool = True
    python: str | None = None
    job_name: str | None = None
    worker_command: str | None = None
    #: seconds before the walltime at which workers retire (hpcexec's own keyword)
    lifetime_margin: float | None = None
    scheduler_options: dict[str, Any] | None = field(default=None)

    @classmethod
    def take(cls, values: dict[str, Any]) -> JobqueueKeywords:
        """The keywords of this class found in ``values``, removed from it (the rest are
        hpcexec resources)."""
        return cls(**{f.name: values.pop(f.name) for f in fields(cls) if f.name in values})


def client_import_dirs() -> tuple[str, ...]:
    """The directories this process imports its own modules from (see
    :class:`hpcexec.environment.Environment`), so that functions pickled by reference import
    in the workers as they do here. hpcexec gives its Python jobs the same; a worker job is a
    shell job, so it gets them through PYTHONPATH."""
    return Environment.describe().own_dirs


def _config(config_name: str, key: str, default: Any = None) -> Any:
    return dask.config.get(f"jobqueue.{config_name}.{key}", default)


def from_jobqueue_keywords(
    config_name: str, resources: dict[str, Any], keywords: JobqueueKeywords
) -> tuple[WorkerJobSpec, dict[str, Any]]:
    """Read dask-jobqueue's keywords (and, for those not given, its ``jobqueue.<config_name>``
    section of dask's config) into a worker job spec; also the job name, log directory and
    scheduler options. ``resources`` are hpcexec resources, and may hold jobqueue's old or
    refused keyword names."""
    resources = dict(resources)
    kw = _renamed(resources, {f.name: getattr(keywords, f.name) for f in fields(keywords)})

    def given(key: str, default: Any = None) -> Any:
        value = kw.get(key)
        if value is None:
            value = _config(config_name, key.replace("_", "-"), None)
        return default if value is None else value

    cores = given("cores", 1)
    memory = given("memory")
    processes = given("processes") or nprocesses_nthreads(cores)[0]
    if processes < 1 or cores < processes:
        raise ResourceError(f"processes={processes} must be between 1 and cores={cores}")
    job_resources = {
        "threads": given("job_cpu") or cores,
        "mem": _mib(given("job_mem") or memory),
        "time": given("walltime"),
        "queue": given("queue"),
        "account": given("account"),
        "native": list(given("job_extra_directives", [])),
        **resources,
    }
    spec = WorkerJobSpec(
        cores=cores,
        memory=parse_bytes(memory) if memory else None,
        processes=processes,
        nanny=kw.get("nanny", True),
        death_timeout=given("death_timeout", 60),
        local_directory=given("local_directory"),
        interface=given("interface"),
        protocol=kw.get("protocol"),
        worker_extra_args=tuple(given("worker_extra_args", [])),
        job_script_prologue=tuple(given("job_script_prologue", [])),
        python=given("python", sys.executable),
        worker_command=given("worker_command", "distributed.cli.dask_worker"),
        lifetime_margin=kw.get("lifetime_margin"),
        python_path=client_import_dirs(),
        resources={k: v for k, v in job_resources.items() if v not in (None, [])},
    )
    meta = {
        "job_name": given("job_name") or _config(config_name, "name") or "dask-worker",
        "log_directory": given("log_directory"),
        "scheduler_options": given("scheduler_options", {}),
    }
    return spec, meta


def _renamed(resources: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with the values of dask-jobqueue's old keyword names in ``resources`` (taken out
    of it) under their new names; its refused keywords raise ResourceError saying why."""
    for old, new in RENAMED.items():
        if old in resources:
            log.warning("%s= is dask-jobqueue's old name of %s=; taking it as %s=", old, new, new)
            value = resources.pop(old)
            if kw.get(new) is None:
                kw[new] = value
    refused = [k for k in resources if k in REFUSED]
    if refused:
        raise ResourceError("; ".join(f"{k}=: {REFUSED[k]}" for k in refused))
    return kw


def _mib(memory: str | int | None) -> int | None:
    """MiB for hpcexec's ``mem`` from dask's byte strings (``"16GB"``, ``"4 GiB"``)."""
    if memory is None:
        return None
    return max(1, math.ceil(parse_bytes(memory) / 2**20))
