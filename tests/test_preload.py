"""Warm jobs start with what earlier jobs imported (hpcexec.preload), and stay isolated.

Each test puts a directory named ``site-packages`` (installed code, by hpcexec.environment's
rule) on ``PYTHONPATH`` with modules of unique names, so its jobs get a fork server of their
own (the environment differs) that has learned nothing yet.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest

import hpcexec
from hpcexec import forkserver


def starts_with(names: list[str], _nonce: str) -> dict:
    """Which of ``names`` were imported before this job began, and its fork server."""
    return {
        "loaded": [n for n in names if n in sys.modules],
        "server": os.getppid(),
        "server_env": Path(f"/proc/{os.getppid()}/environ").read_bytes().split(b"\0"),
    }


def imports(names: list[str]) -> int:
    import importlib

    for name in names:
        importlib.import_module(name)
    return os.getppid()


def draws(_nonce: str) -> tuple[float, float]:
    import random

    import numpy

    return numpy.random.random(), random.random()


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """A directory of installed modules on the jobs' import path; makes a module there."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(site))  # and on this process's, for tests that import one

    def make(code: str = "") -> str:
        name = f"hpx_installed_{uuid.uuid4().hex[:8]}"
        (site / f"{name}.py").write_text(code)
        return name

    yield make
    forkserver.stop(sys.executable)


def until(ex: hpcexec.Executor, names: list[str], want: list[str], timeout: float = 20) -> dict:
    """Probe jobs until one starts with exactly ``want`` of ``names`` loaded."""
    deadline = time.monotonic() + timeout
    while True:
        got = ex.submit(starts_with, names, uuid.uuid4().hex).result(timeout=60)
        if sorted(got["loaded"]) == sorted(want) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_a_job_starts_with_the_installed_modules_earlier_jobs_imported(ex, packages):
    name = packages("VALUE = 1\n")
    first = ex.submit(starts_with, [name], "first").result(timeout=60)
    assert first["loaded"] == []
    server = ex.submit(imports, [name]).result(timeout=60)
    later = until(ex, [name], [name])
    assert later["loaded"] == [name], "the next jobs start with it imported"
    assert later["server"] == server == first["server"]


def test_the_users_own_modules_are_never_preloaded(ex, packages, tmp_path):
    installed = packages()
    own_dir = tmp_path / "own"
    own_dir.mkdir()
    own = f"hpx_own_{uuid.uuid4().hex[:8]}"
    (own_dir / f"{own}.py").write_text("VALUE = 1\n")
    ex.options(workdir=str(own_dir)).submit(imports, [own, installed]).result(timeout=60)
    later = until(ex, [own, installed], [installed])
    assert later["loaded"] == [installed], "the installed one is learned, the user's never"


def test_jobs_forked_after_numpy_was_preloaded_draw_different_numbers(ex, packages):
    pytest.importorskip("numpy")
    ex.submit(imports, ["numpy.random"]).result(timeout=60)
    until(ex, ["numpy.random"], ["numpy.random"])
    a, b = (ex.submit(draws, str(i)).result(timeout=60) for i in range(2))
    assert a[0] != b[0], "numpy's global random state is each job's own"
    assert a[1] != b[1]


def test_each_job_environment_has_its_own_server_started_in_it(ex, packages):
    got = {
        n: ex.options(env={"OMP_NUM_THREADS": n}).submit(starts_with, [], n).result(timeout=60)
        for n in ("1", "2")
    }
    assert got["1"]["server"] != got["2"]["server"]
    for n in ("1", "2"):  # what the server imports sees the job's thread settings
        assert f"OMP_NUM_THREADS={n}".encode() in got[n]["server_env"]
        assert not [v for v in got[n]["server_env"] if v.startswith(b"HPCEXEC_JOB_NAME=")]


def test_a_server_whose_install_directory_changed_retires(ex, packages, tmp_path):
    name = packages()
    server = ex.submit(imports, [name]).result(timeout=60)
    assert until(ex, [name], [name])["server"] == server
    packages()  # an install there: what the server imported may be stale
    after = ex.submit(starts_with, [name], "after").result(timeout=60)
    assert after["server"] != server and after["loaded"] == [], "a fresh server"


def test_a_module_that_starts_a_thread_is_not_preloaded(ex, packages):
    quiet = packages()
    threaded = packages(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    )
    ex.submit(imports, [threaded, quiet]).result(timeout=60)
    seen = [ex.submit(starts_with, [threaded, quiet], str(i)).result(timeout=60) for i in range(8)]
    assert all(threaded not in s["loaded"] for s in seen), "never forked with its thread"
    assert len({s["server"] for s in seen[-3:]}) == 1, "the next server keeps serving"
    ex.submit(imports, [quiet]).result(timeout=60)
    assert until(ex, [threaded, quiet], [quiet])["loaded"] == [quiet]


def test_jobs_holding_gpus_get_a_server_that_preloads_nothing(cache, packages):
    name = packages()
    with hpcexec.Executor(cache_dir=cache, local_gpus="0", poll_interval=0.02) as ex:
        gpu = ex.options(gpus=1)
        server = gpu.submit(imports, [name]).result(timeout=60)
        time.sleep(1.0)  # time enough to learn, had it been told
        later = gpu.submit(starts_with, [name], "later").result(timeout=60)
    assert later["server"] == server and later["loaded"] == []


def test_what_loading_the_payload_imported_is_learned_while_the_job_runs(ex, packages):
    name = packages("import time\n\ndef nap(s):\n    time.sleep(s)\n    return s\n")
    import importlib

    nap = importlib.import_module(name).nap  # pickled by reference: the job imports it to load
    long = ex.submit(nap, 30)
    later = until(ex, [name], [name], timeout=15)
    assert later["loaded"] == [name] and not long.done(), "learned before the job ended"
    long.cancel()


def value_of(name: str) -> tuple[int, int]:
    import importlib

    return importlib.import_module(name).VALUE, os.getpid()


def test_a_job_whose_own_module_shadows_a_preloaded_one_imports_its_own(ex, packages, tmp_path):
    name = packages("VALUE = 1\n")
    ex.submit(imports, [name]).result(timeout=60)
    until(ex, [name], [name])  # preloaded now
    own_dir = tmp_path / "own"
    own_dir.mkdir()
    (own_dir / f"{name}.py").write_text("VALUE = 2\n")  # the job's directory comes first
    f = ex.options(workdir=str(own_dir)).submit(value_of, name)
    value, pid = f.result(timeout=60)
    assert value == 2, "the job's own module, as a job started from its script would import"
    assert int(f.job_id.split(":")[0]) == pid, "the same job process, started again"
    assert ex.submit(value_of, name).result(timeout=60)[0] == 1, "elsewhere, the installed one"
