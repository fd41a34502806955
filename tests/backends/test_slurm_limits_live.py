"""Submit limits on the live one-node SLURM, which enforces QOS limits
(AccountingStorageEnforce): a QOS with MaxSubmitJobsPerUser=10 and a map of 50 (never more
than 10 jobs queued, all 50 results), a refusal by slurmctld at a limit hpcexec had not read,
learned from sbatch's own words, and an sbatch that outlives the command timeout (adopted if
it went through, submitted again if not; never twice). Each test makes its own QOS and
removes it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import jobfns
import pytest

from hpcexec.schedsubmit import FEW_JOBS

pytestmark = pytest.mark.slurm
SUBMIT_LIMIT = "QOSMaxSubmitJobPerUserLimit"


def sacctmgr(*args: str) -> None:
    subprocess.run(["sacctmgr", "-i", *args], check=True, capture_output=True)


@pytest.fixture
def make_qos(slurm_cluster):
    """Makes a QOS of this test's own (``MaxSubmitJobsPerUser=limit`` where given) allowed for
    this user; each is removed at the end, its jobs cancelled."""
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    made: list[str] = []

    def make(limit: int | None = None) -> str:
        name = f"hx_limit_{uuid.uuid4().hex[:8]}"
        sacctmgr("add", "qos", name, *([f"MaxSubmitJobsPerUser={limit}"] if limit else []))
        made.append(name)
        sacctmgr("modify", "user", user, "set", f"qos+={name}")
        return name

    yield make
    for name in made:
        subprocess.run(["scancel", "-q", name], capture_output=True)
        subprocess.run(["sacctmgr", "-i", "modify", "user", user, "set", f"qos-={name}"])
        subprocess.run(["sacctmgr", "-i", "delete", "qos", name], capture_output=True)


def enforced() -> bool:
    """Whether slurmctld enforces QOS limits (AccountingStorageEnforce has limits or qos)."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("AccountingStorageEnforce")), "")
    return any(w in line for w in ("limits", "qos", "safe"))


class Peak:
    """The most jobs of a QOS in squeue (array elements one each), sampled from a thread."""

    def __init__(self, qos: str) -> None:
        self.qos, self.most = qos, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            out = subprocess.run(
                ["squeue", "-h", "-r", "-q", self.qos, "-o", "%i"], capture_output=True, text=True
            ).stdout
            self.most = max(self.most, len(out.split()))

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_a_qos_max_submit_of_10_and_a_map_of_50(sex, make_qos, caplog):
    qos = make_qos(10)
    caplog.set_level(logging.INFO, logger="hpcexec.schedqueue")
    ex = sex.options(native=[f"--qos={qos}"])
    with Peak(qos) as peak:
        futures = [ex.submit(jobfns.sleep_then, 0.5, i) for i in range(50)]
        assert [f.result(timeout=300) for f in futures] == list(range(50))
    assert 0 < peak.most <= 10, peak.most
    lines = [r.getMessage() for r in caplog.records]
    assert "slurm allows 10 queued jobs per user here" in lines  # read from sacctmgr
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # slurmctld enforces the limit, and refused nothing: hpcexec never asked for more than
    # the QOS allows (a refusal is logged as "... jobs queued when it was hit").
    assert enforced()
    assert not [line for line in lines if "when it was hit" in line], lines


def test_a_client_with_a_few_jobs_waits_for_no_accounting_query(sex, make_qos, caplog):
    """sacctmgr takes about half a second: a lone job goes without it, and the limit is
    still read before the client could hit one."""
    caplog.set_level(logging.INFO, logger="hpcexec.schedqueue")
    ex = sex.options(native=[f"--qos={make_qos(FEW_JOBS + 2)}"])
    assert ex.submit(jobfns.double, 1).result(timeout=120) == 2
    assert "sh" not in sex.session.calls  # the limit query is `sh -c 'sacctmgr ...'`
    futures = [ex.submit(jobfns.sleep_then, 0.5, i) for i in range(3 * FEW_JOBS)]
    assert [f.result(timeout=300) for f in futures] == list(range(3 * FEW_JOBS))
    assert sex.session.calls["sh"] == 1
    lines = [r.getMessage() for r in caplog.records]
    assert f"slurm allows {FEW_JOBS + 2} queued jobs per user here" in lines
    assert not [line for line in lines if "when it was hit" in line], lines


def wrapper(tmp_path: Path, body: str) -> Path:
    """A directory with an ``sbatch`` running ``body`` (bash; ``$REAL`` is the real sbatch)."""
    bin_dir = tmp_path / "wrapped"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/bash\nREAL={shutil.which('sbatch')}\n{body}\n")
    sbatch.chmod(0o755)
    return bin_dir


def test_a_refusal_at_the_limit_is_learned_and_all_complete(sex, make_qos):
    """The QOS gets MaxSubmitJobsPerUser=6 after this client read its limits (none then), so
    slurmctld itself refuses the array of 20 in its own words: hpcexec learns the limit from
    the refusals and submits the rest as jobs end, never more than 6 queued."""
    assert enforced(), "tests/clusters/slurm.sh sets AccountingStorageEnforce=...limits,qos"
    qos = make_qos()  # no limit yet
    ex = sex.options(native=[f"--qos={qos}"])
    # more than FEW_JOBS: the limits are read (none then)
    assert list(ex.map(jobfns.double, range(FEW_JOBS + 1))) == [2 * i for i in range(FEW_JOBS + 1)]
    assert sex.session.calls["sh"] == 1
    sacctmgr("modify", "qos", qos, "set", "MaxSubmitJobsPerUser=6")
    with Peak(qos) as peak:
        futures = [ex.submit(jobfns.sleep_then, 0.5, i) for i in range(20)]
        reasons = set()
        while not all(f.done() for f in futures):
            reasons.update(r.reason or "" for r in sex.session.store.query("1"))
            threading.Event().wait(0.1)
        assert [f.result(timeout=300) for f in futures] == list(range(20))
    assert 0 < peak.most <= 6, peak.most
    assert any(
        r.startswith(f"waiting: the scheduler's submit limit ({SUBMIT_LIMIT})") for r in reasons
    ), reasons


def jobs_named(name: str) -> int:
    """Jobs of that name in accounting (waiting a little for slurmdbd to record them)."""
    for _ in range(50):
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "--name", name, "-o", "JobID", "-S", "now-1hour"],
            capture_output=True,
            text=True,
        ).stdout
        if out.split():
            break
        threading.Event().wait(0.2)
    return len({j.split("_")[0] for j in out.split()})


@pytest.mark.parametrize("went_through", [True, False])
def test_an_sbatch_past_the_command_timeout(sex, tmp_path, monkeypatch, caplog, went_through):
    """The first sbatch takes longer than the command timeout (3 s here): if it submitted
    the job it is adopted, else submitted again; either way one job, and one line says so."""
    first = tmp_path / "first-done"
    submit = '"$REAL" "$@"; ' if went_through else ""
    body = f'if [ ! -e {first} ]; then : > {first}; {submit}exec sleep 8; fi\nexec "$REAL" "$@"'
    monkeypatch.setenv("PATH", f"{wrapper(tmp_path, body)}{os.pathsep}{os.environ['PATH']}")
    sex.session.queue.commands.timeout = 3.0
    caplog.set_level(logging.INFO, logger="hpcexec")
    name = f"hx-slow-{uuid.uuid4().hex[:8]}"
    futures = [sex.options(name=name).submit(jobfns.double, i) for i in range(3)]
    assert [f.result(timeout=120) for f in futures] == [0, 2, 4]
    assert jobs_named(name) == 1  # one array of 3: never submitted twice
    lines = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "command timed out after 3.0 s" in lines[0]
    assert ("found in the queue" in lines[0]) is went_through
    assert not [r for r in caplog.records if "polling jobs failed" in r.getMessage()]
