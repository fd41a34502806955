"""Which task of its job this process is (:func:`task`): rank, peers and the job's meeting
point, read from the variables of the launcher that started it, and the conventional
variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...) exported from it.

The job script of a multi-task job passes the runner the job's facts (tasks, nodes,
processes per node, the first node and a free port), which the runner exports as
``HPCEXEC_NTASKS`` and its siblings before calling the function; each launcher says the
rank. In-job code: standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

NTASKS, NODES, PPN = "HPCEXEC_NTASKS", "HPCEXEC_NODES", "HPCEXEC_PPN"
MASTER_ADDR, MASTER_PORT = "HPCEXEC_MASTER_ADDR", "HPCEXEC_MASTER_PORT"
#: what hpcexec's local launcher (:mod:`hpcexec.launch`) sets in each task
RANK, LOCAL_RANK = "HPCEXEC_TASK_RANK", "HPCEXEC_TASK_LOCAL_RANK"

#: each launcher's (rank, local rank, node rank) variables, asked in this order; a rank
#: variable ending in ``-1`` counts from 1 (LSF's ``blaunch``)
LAUNCHERS: tuple[tuple[str, str | None, str | None], ...] = (
    (RANK, LOCAL_RANK, None),
    ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", None),
    ("PMI_RANK", "MPI_LOCALRANKID", None),
    ("PMIX_RANK", None, None),
    ("LSF_PM_TASKID-1", None, None),
)


@dataclass(frozen=True)
class Task:
    """One task of a job: its rank among ``world_size`` tasks, its rank on its node, its
    node's rank among ``nodes``, and where rank 0 listens (``master_addr``, the job's first
    node, and ``master_port``, a free port chosen once per job)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    node_rank: int = 0
    nodes: int = 1
    master_addr: str = "localhost"
    master_port: int | None = None


def _int(env: Mapping[str, str], name: str | None) -> int | None:
    if name is None:
        return None
    base, _, minus = name.partition("-")
    text = env.get(base, "")
    try:
        return int(text) - int(minus or 0)
    except ValueError:
        return None


def task(env: Mapping[str, str] | None = None) -> Task:
    """The task this process is in. Outside a multi-task job (no ``HPCEXEC_NTASKS`` above
    1): rank 0 of 1."""
    env = os.environ if env is None else env
    world = _int(env, NTASKS) or 1
    if world <= 1:
        return Task()
    nodes = _int(env, NODES) or 1
    ppn = _int(env, PPN) or max(1, world // nodes)
    rank = local = node = None
    for rank_var, local_var, node_var in LAUNCHERS:
        rank = _int(env, rank_var)
        if rank is not None:
            local, node = _int(env, local_var), _int(env, node_var)
            break
    rank = rank or 0
    port = _int(env, MASTER_PORT)
    return Task(
        rank=rank,
        local_rank=rank % ppn if local is None else local,
        world_size=world,
        node_rank=rank // ppn if node is None else node,
        nodes=nodes,
        master_addr=env.get(MASTER_ADDR) or "localhost",
        master_port=port,
    )


def export(t: Task, env: MutableMapping[str, str]) -> None:
    """Set the conventional variables of ``t`` (torch.distributed's) in ``env``."""
    env["RANK"] = str(t.rank)
    env["LOCAL_RANK"] = str(t.local_rank)
    env["WORLD_SIZE"] = str(t.world_size)
    env["LOCAL_WORLD_SIZE"] = str(max(1, t.world_size // t.nodes))
    env["NODE_RANK"] = str(t.node_rank)
    env["MASTER_ADDR"] = t.master_addr
    if t.master_port is not None:
        env["MASTER_PORT"] = str(t.master_port)
