"""Each backend tells a refusal at a limit on queued jobs from other refusals, and SLURM reads
the limit from accounting: against the text each scheduler prints (tests/clusters/recorded/,
each file naming its source)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from recorded_output import read_output

from hpcexec.backends import SCHEDULERS

RECORDED = Path(__file__).parent.parent / "clusters" / "recorded"


def recorded(name: str) -> str:
    return read_output(RECORDED / name)


@pytest.mark.parametrize(
    "backend, name, limit",
    [
        ("slurm", "slurm_sbatch_qos_max_submit_per_user.txt", "QOSMaxSubmitJobPerUserLimit"),
        ("slurm", "slurm_sbatch_assoc_max_submit.txt", "AssocMaxSubmitJobLimit"),
        ("slurm", "slurm_sbatch_policy_only.txt", "Job violates accounting/QOS policy"),
        ("sge", "sge_qsub_max_u_jobs.txt", "only 2000 jobs are allowed per user"),
        (
            "pbspro",
            "pbspro_qsub_queued_jobs_threshold.txt",
            "would exceed queue generic's per-user limit of jobs in 'Q' state",
        ),
        ("torque", "torque_qsub_max_user_queuable.txt", "Maximum number of jobs already in queue"),
        ("lsf", "lsf_bsub_pending_job_threshold.txt", "Pending job threshold reached"),
    ],
)
def test_a_refusal_at_a_limit_on_queued_jobs_is_named(backend, name, limit):
    got = SCHEDULERS[backend]().submit_limit(recorded(name))
    assert got is not None and got.startswith(limit)


@pytest.mark.parametrize(
    "backend, name",
    [
        ("slurm", "slurm_sbatch_qos_max_wall.txt"),  # a time limit: waiting would not help
        ("slurm", "slurm_sbatch_invalid_partition.txt"),
        ("slurm", "slurm_sbatch_invalid_array.txt"),
        ("sge", "sge_qsub_unknown_queue.txt"),
        ("sge", "sge_qsub_job_name_with_space_error.txt"),
    ],
)
def test_other_refusals_are_not_a_submit_limit(backend, name):
    assert SCHEDULERS[backend]().submit_limit(recorded(name)) is None


def test_slurm_tells_an_array_larger_than_max_array_size():
    slurm = SCHEDULERS["slurm"]()
    assert slurm.refused_array_size(recorded("slurm_sbatch_invalid_array.txt"))
    assert not slurm.refused_array_size(recorded("slurm_sbatch_qos_max_submit_per_user.txt"))
    assert not SCHEDULERS["sge"]().refused_array_size("anything")


def test_slurm_reads_the_submit_limit_of_the_qos_a_job_asks_for():
    slurm = SCHEDULERS["slurm"]()
    out = recorded("slurm_sacctmgr_submit_limits.txt")
    assert slurm.parse_submit_limit(out, ("--qos=hx_rec10",)) == 10
    assert slurm.parse_submit_limit(out, ("--qos hx_rec10", "--exclusive")) == 10
    assert slurm.parse_submit_limit(out, ()) is None  # the default QOS, normal: no limit
    # an association's MaxSubmit counts too; the smaller one applies
    assoc = out.replace("||hx_rec10,normal", "4||hx_rec10,normal")
    assert slurm.parse_submit_limit(assoc, ("--qos=hx_rec10",)) == 4
    assert slurm.parse_submit_limit(assoc, ()) == 4
    assert slurm.parse_submit_limit("sacctmgr: error: Problem talking to the database", ()) is None
    assert slurm.submit_limit_argv()[0] == "sh"
    assert SCHEDULERS["sge"]().submit_limit_argv() is None


def fake_sacctmgr(bin_dir: Path, assoc: str, qos: str, fail: str = "") -> None:
    """A ``sacctmgr`` that answers the two queries (``fail``: the one that errors); the assoc
    one answers only once the qos one has started (for at most 5 s): one after the other,
    assoc first, it fails."""
    started = bin_dir / "qos-started"
    script = bin_dir / "sacctmgr"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *'show qos'*) : > {started}; [ '{fail}' = qos ] && exit 1; printf '{qos}' ;;\n"
        f"  *'show assoc'*) i=0; while [ ! -e {started} ] && [ $i -lt 500 ]; do "
        "sleep 0.01; i=$((i+1)); done\n"
        f"    [ -e {started} ] && [ '{fail}' != assoc ] && printf '{assoc}' ;;\n"
        "esac\n"
    )
    script.chmod(0o755)


@pytest.mark.parametrize("fail", ["", "qos", "assoc"])
def test_slurm_asks_both_limits_at_once_and_fails_if_either_does(tmp_path, monkeypatch, fail):
    import subprocess

    fake_sacctmgr(tmp_path, "||hx_rec10,normal\\n", "normal|\\nhx_rec10|10\\n", fail)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    slurm = SCHEDULERS["slurm"]()
    out = subprocess.run(slurm.submit_limit_argv(), capture_output=True, text=True, check=False)
    if fail:
        assert out.returncode != 0
        return
    assert (out.returncode, out.stdout) == (0, "||hx_rec10,normal\n-- qos\nnormal|\nhx_rec10|10\n")
    assert slurm.parse_submit_limit(out.stdout, ("--qos=hx_rec10",)) == 10
