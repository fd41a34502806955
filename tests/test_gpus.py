"""GPUs (issue 14, item 3): ``gpus`` (per node) and ``gpus_per_task``, each scheduler's
rendering, and the local backend's pool of devices.

No test here needs a GPU: each sets the pool itself (``HPCEXEC_LOCAL_GPUS`` or the
``local_gpus`` setting) to ids that need not exist, so the same tests pass on a machine
with GPUs, and none is skipped.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import jobfns
import pytest

import hpcexec
from hpcexec import config
from hpcexec.backends import lsf, pbspro, sge, slurm, torque
from hpcexec.backends.base import SubmitSpec
from hpcexec.backends.local import LocalBackend, hand_out_gpus, plan_starts
from hpcexec.errors import BackendError, ConfigError, ResourceError
from hpcexec.launch import task_env
from hpcexec.resources import Resources, node_gpu_count
from hpcexec.settings import parse_gpu_ids
from hpcexec.transport.base import parse_gpu_list
from hpcexec.transport.local import LocalShell

FIXTURE = Path(__file__).parent / "fixtures" / "nvidia" / "nvidia-smi_L_mig.txt"
CORES = len(os.sched_getaffinity(0))
CUDA = "CUDA_VISIBLE_DEVICES"


def devices(seconds: float = 0.0) -> str | None:
    """The GPUs this job (task) was given, after ``seconds``."""
    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _directives(backend, **res):
    spec = SubmitSpec("/j/submit.sh", Resources.create(**res), "job", "/o", "/e", "/w")
    return backend.directives(spec)


# -- the resource model ------------------------------------------------------------------------
def test_gpus_per_node_is_gpus_or_gpus_per_task_times_ppn():
    assert Resources().gpus_per_node == 0
    assert Resources.create(gpus=2, ppn=4).gpus_per_node == 2
    assert Resources.create(gpus_per_task=2, ppn=4).gpus_per_node == 8
    assert Resources.create(gpus_per_task=1).gpus_per_node == 1
    assert node_gpu_count({"gpus_per_task": 3, "ppn": 2}) == 6
    assert node_gpu_count({"gpus": 0, "ppn": 2}) == 0


def test_gpus_and_gpus_per_task_together_are_refused_saying_how_they_differ():
    with pytest.raises(ResourceError, match="not both: gpus is the GPUs of each node"):
        Resources.create(gpus=1, gpus_per_task=1)


def test_a_view_giving_one_gpu_key_replaces_the_other():
    res = Resources.create(gpus=2)
    assert res.replace(gpus_per_task=1).to_dict() == {"gpus_per_task": 1}
    assert res.replace(gpus_per_task=1).replace(gpus=4).to_dict() == {"gpus": 4}


def test_executor_defaults_and_options_mix_the_gpu_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCEXEC_LOCAL_GPUS", "0,1")
    with hpcexec.Executor(cache_dir=tmp_path, gpus=1) as ex:
        assert ex.options(gpus_per_task=1).resources.gpus is None
        with pytest.raises(ResourceError, match="not both"):
            ex.options(gpus=1, gpus_per_task=1)


# -- each scheduler's rendering ------------------------------------------------------------------
def test_slurm_renders_gpus_per_task_with_the_task_count():
    b = slurm.SlurmBackend()
    assert "#SBATCH --gpus-per-node=2" in _directives(b, gpus=2, ppn=2)
    lines = _directives(b, gpus_per_task=1, nodes=2, ppn=2)
    assert "#SBATCH --gpus-per-task=1" in lines
    assert "#SBATCH --ntasks=4" in lines and "#SBATCH --ntasks-per-node=2" in lines
    assert not any("gpus-per-node" in x for x in lines)
    # sbatch refuses --gpus-per-task without --ntasks (or --gpus)
    assert "#SBATCH --ntasks=1" in _directives(b, gpus_per_task=2)
    assert not any("gpus" in x or "ntasks" in x for x in _directives(b, gpus_per_task=0))


def test_pbspro_and_torque_render_gpus_per_node():
    pro = pbspro.PbsProBackend()
    assert "#PBS -l select=2:ncpus=3:mpiprocs=3:ngpus=6" in _directives(
        pro, nodes=2, ppn=3, gpus_per_task=2
    )
    assert "#PBS -l select=1:ngpus=2" in _directives(pro, gpus=2)
    tq = torque.TorqueBackend()
    assert "#PBS -l nodes=2:ppn=3:gpus=3" in _directives(tq, nodes=2, ppn=3, gpus_per_task=1)
    assert "#PBS -l nodes=1:ppn=1:gpus=2" in _directives(tq, gpus=2)


def test_lsf_renders_per_host_and_per_task_gpus():
    b = lsf.LsfBackend()
    assert '#BSUB -gpu "num=2"' in _directives(b, gpus=2)
    assert '#BSUB -gpu "num=1/task"' in _directives(b, gpus_per_task=1, ppn=2)


def test_sge_refuses_both_gpu_keys_naming_the_one_given():
    b = sge.SgeBackend()
    with pytest.raises(BackendError, match=r"leave gpus_per_task unset.*native='-l gpu=1'"):
        b.check(Resources.create(gpus_per_task=1))
    with pytest.raises(BackendError, match="leave gpus unset"):
        b.check(Resources.create(gpus=1))
    b.check(Resources.create(gpus_per_task=0))


# -- the local backend, pure ---------------------------------------------------------------------
def test_local_backend_refuses_more_gpus_than_its_pool():
    b = LocalBackend(64, gpu_ids=["0", "1"])
    b.fits(Resources.create(gpus=2))
    b.fits(Resources.create(gpus_per_task=1, ppn=2))
    with pytest.raises(BackendError, match=r"asks for 4 GPUs but .* has 2 \(0, 1\).*local_gpus"):
        b.fits(Resources.create(gpus_per_task=2, ppn=2))
    with pytest.raises(BackendError, match=r"has 0 \(none\).*HPCEXEC_LOCAL_GPUS"):
        LocalBackend(64).fits(Resources.create(gpus=1))
    assert "gpus" not in LocalBackend(4).ignored(Resources.create(gpus=1, queue="q"))


def test_plan_starts_fits_gpus_as_it_fits_cores():
    pending = [("a", 1, 2), ("b", 1, 1), ("c", 1, 0), ("d", 1, 1)]
    assert plan_starts(pending, 8, 2) == ["a", "c"]
    assert plan_starts(pending, 8, 3) == ["a", "b", "c"]
    assert plan_starts(pending, 8, 0) == ["c"]
    assert plan_starts([("a", 1), ("b", 1)], 2) == ["a", "b"]  # without GPUs, as before
    assert hand_out_gpus([2, 0, 1], ["1", "3", "4"]) == [("1", "3"), (), ("4",)]


def test_the_local_launcher_gives_each_task_its_share():
    b = LocalBackend(4, gpu_ids=["0", "1"])
    assert b.task_launcher(Resources.create(ppn=2), "PY") == [
        "PY",
        "-m",
        "hpcexec.launch",
        "2",
        "--",
    ]
    assert b.task_launcher(Resources.create(ppn=2, gpus_per_task=1), "PY")[3:] == [
        "2",
        "--gpus-per-task",
        "1",
        "--",
    ]
    assert b.gpu_env(()) == {CUDA: ""}
    assert LocalBackend(4).gpu_env(()) == {}


def test_task_env_slices_the_jobs_devices(monkeypatch):
    monkeypatch.setenv(CUDA, "4,5,6,7")
    assert [task_env(r, 2)[CUDA] for r in range(2)] == ["4,5", "6,7"]
    assert task_env(1)[CUDA] == "4,5,6,7"  # gpus: every task sees them all
    monkeypatch.delenv(CUDA)
    assert CUDA not in task_env(0, 1)


# -- the pool: setting, variable, detection ----------------------------------------------------
def test_parse_gpu_ids():
    assert parse_gpu_ids("0, 1,3") == ("0", "1", "3")
    assert parse_gpu_ids([0, 2]) == ("0", "2")
    assert parse_gpu_ids("none") == parse_gpu_ids("") == ()
    assert parse_gpu_ids("GPU-2fa5cf01-9520") == ("GPU-2fa5cf01-9520",)
    for bad in ("0;rm", "0,0", 3, True, "0,,1"):
        with pytest.raises(ValueError):
            parse_gpu_ids(bad)


def test_the_variable_gives_the_pool_and_the_setting_wins(tmp_path, monkeypatch):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "HPCEXEC_LOCAL_GPUS": "2,3"}
    s = config.resolve("", cwd=tmp_path, environ=env)
    assert (s["local_gpus"], s.values["local_gpus"].source) == ("2,3", "env HPCEXEC_LOCAL_GPUS")
    assert config.resolve("", {"local_gpus": "0"}, cwd=tmp_path, environ=env)["local_gpus"] == "0"
    (tmp_path / "hpcexec.toml").write_text('[profiles.p]\nlocal_gpus = "0;1"\n')
    with pytest.raises(
        ConfigError, match=r"hpcexec.toml:2: .*local_gpus takes GPU ids .*'0;1' is not a GPU id"
    ):
        config.resolve("p", cwd=tmp_path, environ=env)
    monkeypatch.setenv("HPCEXEC_LOCAL_GPUS", "7,5")
    with hpcexec.Executor(cache_dir=tmp_path / "c") as ex:
        assert ex.session.backend.gpu_ids == ("7", "5")
    with hpcexec.Executor(cache_dir=tmp_path / "c", local_gpus="none") as ex:
        assert ex.session.backend.gpu_ids == ()
    with pytest.raises(ResourceError, match="local_gpus takes"):
        hpcexec.Executor(cache_dir=tmp_path / "c", local_gpus="a b")


def test_nvidia_smi_list_is_parsed_gpus_only():
    text = FIXTURE.read_text().split("notes:", 1)[1].split("\n", 1)[1]
    assert parse_gpu_list(text) == ["0"]  # the MIG devices under it are not GPUs of their own
    lines = ["GPU 0: NVIDIA H100 (UUID: GPU-a)", "GPU 1: NVIDIA H100 (UUID: GPU-b)"]
    assert parse_gpu_list("\n".join(lines) + "\n") == ["0", "1"]
    assert parse_gpu_list("") == []


def _fake_nvidia_smi(tmp_path, monkeypatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_the_transport_detects_gpus_with_nvidia_smi(tmp_path, monkeypatch):
    lines = FIXTURE.read_text().splitlines()[3:]
    out = tmp_path / "out.txt"
    out.write_text("\n".join([*lines, "GPU 1: A100-SXM4-40GB (UUID: GPU-x)"]) + "\n")
    _fake_nvidia_smi(tmp_path, monkeypatch, f'[ "$1" = -L ] && exec cat {out}; exit 9')
    assert LocalShell().gpu_ids() == ["0", "1"]
    monkeypatch.delenv("HPCEXEC_LOCAL_GPUS", raising=False)
    with hpcexec.Executor(cache_dir=tmp_path / "c") as ex:  # the default: detected
        assert ex.session.backend.gpu_ids == ("0", "1")


def test_a_failing_or_missing_nvidia_smi_gives_no_gpus(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert LocalShell().gpu_ids() == []
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert LocalShell().gpu_ids() == []


# -- the local queue hands out devices -----------------------------------------------------------
@pytest.fixture
def gex(tmp_path, monkeypatch):
    """A local executor whose pool is two made-up GPUs."""
    monkeypatch.setenv("HPCEXEC_LOCAL_GPUS", "0,1")
    with hpcexec.Executor(cache_dir=tmp_path / "cache", poll_interval=0.02) as ex:
        yield ex


def test_concurrent_jobs_get_distinct_gpus_and_a_third_waits(gex):
    fs = [gex.options(gpus=1, key=f"k{i}").submit(devices, 1.5) for i in range(3)]
    got = [f.result(timeout=60) for f in fs]
    first, second, third = (f.record for f in fs)
    assert {got[0], got[1]} == {"0", "1"}
    assert third.started >= min(first.finished, second.finished)  # it waited for a device
    assert got[2] == (got[0] if first.finished <= second.finished else got[1])
    assert [r.gpu_ids for r in (first, second, third)] == got


def test_a_job_waits_for_a_gpu_while_a_job_without_one_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCEXEC_LOCAL_GPUS", "3")
    with hpcexec.Executor(cache_dir=tmp_path / "cache", poll_interval=0.02) as ex:
        a = ex.options(gpus=1, key="a").submit(devices, 1.5)
        b = ex.options(gpus=1, key="b").submit(devices, 0.0)
        c = ex.options(key="c").submit(devices, 0.0)
        assert c.result(timeout=60) == ""  # no GPU asked, none seen; it did not wait for one
        assert (a.result(timeout=60), b.result(timeout=60)) == ("3", "3")
        assert c.record.finished < b.record.started
        assert b.record.started >= a.record.finished


@pytest.mark.skipif(CORES < 2, reason="two tasks need two cores")
def test_gpus_per_task_gives_each_rank_its_own(gex):
    assert gex.options(ppn=2, gpus_per_task=1).submit(devices).results(timeout=60) == ["0", "1"]


@pytest.mark.skipif(CORES < 2, reason="two tasks need two cores")
def test_gpus_per_node_is_seen_by_every_rank(gex):
    assert gex.options(ppn=2, gpus=2).submit(devices).results(timeout=60) == ["0,1", "0,1"]


def test_more_gpus_than_the_pool_is_refused_at_submit(gex):
    with pytest.raises(BackendError, match="asks for 3 GPUs but the local backend has 2"):
        gex.options(gpus=3).submit(devices)
    assert gex.session.store.select() == []


def test_the_jobs_own_env_wins_and_shell_jobs_get_their_gpus_too(gex):
    f = gex.options(gpus=1, env={CUDA: "9"}).submit(devices)
    assert f.result(timeout=60) == "9"
    cold = gex.options(gpus=2, stdin=os.devnull).submit(devices)  # through its job script
    assert cold.result(timeout=60) == "0,1"
    body = gex.options(gpus=1).submit_shell('echo "[$CUDA_VISIBLE_DEVICES]"')
    assert body.result(timeout=60).stdout.strip() in ("[0]", "[1]")


def test_two_executors_on_one_cache_do_not_double_book(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCEXEC_LOCAL_GPUS", "0,1")
    cache = tmp_path / "cache"
    with (
        hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as one,
        hpcexec.Executor(cache_dir=cache, poll_interval=0.02) as two,
    ):
        a = one.options(gpus=1, key="a").submit(jobfns.sleep_then, 2.0, None)
        while a.record.state is not hpcexec.JobState.RUNNING:
            time.sleep(0.02)
        b = two.options(gpus=1, key="b").submit(devices, 0.0)
        c = two.options(gpus=1, key="c").submit(devices, 0.0)
        held = a.record.gpu_ids
        assert b.result(timeout=60) == c.result(timeout=60) != held
        assert {held, b.result()} == {"0", "1"}
        a.result(timeout=60)


def test_no_gpu_pool_leaves_the_variable_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HPCEXEC_LOCAL_GPUS", "none")
    monkeypatch.setenv(CUDA, "client's")
    with hpcexec.Executor(cache_dir=tmp_path / "cache", poll_interval=0.02) as ex:
        assert ex.submit(devices).result(timeout=60) == "client's"
