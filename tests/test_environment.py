"""Which environment a job runs in, and which of the client's modules are its own.

The virtual environments here are real ones, made with ``python -m venv --symlinks`` from the
base interpreter, so that every venv's ``python`` resolves to the same binary, as it does for
users; each client runs as a process of its own in its venv.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import cloudpickle
import pytest
from sshtest import DEST, KEY, KNOWN

import hpcexec
from hpcexec import environment, forkserver
from hpcexec import payload as pl
from hpcexec.environment import Environment

SITE = os.path.dirname(os.path.dirname(cloudpickle.__file__))  # where this venv's packages are
HPCEXEC_PARENT = os.path.dirname(os.path.dirname(hpcexec.__file__))
BASE_PYTHON = os.path.join(sys.base_prefix, "bin", f"python{sys.version_info[0]}")


def make_venv(where: Path, *, marker: str | None = None) -> tuple[str, Path]:
    """A venv at ``where`` whose python is a symlink to the base interpreter, with this
    process's packages after its own (a .pth) and ``envmarker.NAME == marker``. Returns its
    python and its site-packages."""
    subprocess.run(
        [BASE_PYTHON, "-m", "venv", "--symlinks", "--without-pip", str(where)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    site = where / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "zz_outer.pth").write_text(
        f"{HPCEXEC_PARENT}\nimport site; site.addsitedir({SITE!r})\n"
    )
    if marker is not None:
        (site / "envmarker.py").write_text(f"NAME = {marker!r}\n")
    python = str(where / "bin" / "python")
    assert os.path.realpath(python) == os.path.realpath(BASE_PYTHON)
    return python, site


def run_client(python: str, script: Path, *args: str, cwd: Path) -> str:
    p = subprocess.run(
        [python, str(script), *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_an_interpreter_is_the_path_it_is_given_with_what_it_says_of_itself(tmp_path):
    python, _ = make_venv(tmp_path / "venv")
    venv = environment.interpreter(python, forkserver.ask)
    base = environment.interpreter(BASE_PYTHON, forkserver.ask)
    assert os.path.realpath(python) == os.path.realpath(BASE_PYTHON)
    assert (venv.python, venv.prefix) == (python, str(tmp_path / "venv"))
    assert base.prefix == venv.base_prefix == sys.base_prefix
    assert venv.identity() != base.identity()
    assert environment.interpreter(python, forkserver.ask) is venv, "asked once"
    here = environment.interpreter(sys.executable, forkserver.ask)
    assert (here.prefix, here.base_prefix) == (sys.prefix, sys.base_prefix)


def _import_from(monkeypatch, directory: Path, name: str):
    monkeypatch.syspath_prepend(str(directory))
    mod = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, mod)  # gone again after the test
    return mod


def test_a_venv_under_the_project_holds_installed_packages_not_the_users_own(tmp_path, monkeypatch):
    project = tmp_path / "project"
    site = project / ".venv" / "lib" / "python3" / "site-packages"
    (site / "env_vendored").mkdir(parents=True)
    (site / "env_vendored" / "__init__.py").write_text("X = 1\n")
    (project / "env_own.py").write_text("X = 2\n")
    monkeypatch.chdir(project)
    _import_from(monkeypatch, site, "env_vendored")
    _import_from(monkeypatch, project, "env_own")
    env = Environment.describe(remote=True)
    assert str(project.resolve()) in env.own_dirs and str(site.resolve()) not in env.own_dirs
    assert "env_own" in env.own_modules() and "env_vendored" not in env.own_modules()
    assert env.by_value() == env.own_modules() and env.job_sys_path() == []
    local = Environment.describe()
    assert local.by_value() == [] and local.job_sys_path() == list(local.own_dirs)


def test_the_interpreters_own_files_are_installed_wherever_its_prefix_lies(monkeypatch):
    # The working directory holds the interpreter (~/.pyenv/versions, say): the directory is
    # the user's, the standard library under it is not.
    holder = os.path.dirname(sys.base_prefix)
    monkeypatch.chdir(holder)
    env = Environment.describe(remote=True)
    assert os.path.realpath(holder) in env.own_dirs
    assert env.is_installed(json.__file__) and env.is_installed(cloudpickle.__file__)
    assert not {"json", "cloudpickle", "pickle"} & set(env.own_modules())


def test_a_module_known_by_two_names_travels_by_value_once(tmp_path, monkeypatch):
    (tmp_path / "env_aliased.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.chdir(tmp_path)
    mod = _import_from(monkeypatch, tmp_path, "env_aliased")
    monkeypatch.setitem(sys.modules, "env_alias", mod)  # as an extension module can be
    names = Environment.describe(remote=True).own_modules()
    assert [n for n in names if sys.modules[n] is mod] == ["env_aliased"]
    _, body = pl.dumps_payload(
        mod.triple, [((2,), {})], kind="call", by_value=["env_alias", "env_aliased"]
    )
    assert "env_aliased" not in cloudpickle.list_registry_pickle_by_value()
    code = (
        "import pickle, sys; p = pickle.loads(sys.stdin.buffer.read()); "
        "print(p['fn'](*p['calls'][0][0]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=body,
        capture_output=True,
        cwd="/",
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == b"6", "by value: loaded where the module is not importable"


def test_a_module_the_user_registered_by_value_stays_registered(tmp_path, monkeypatch):
    (tmp_path / "env_registered.py").write_text("def f():\n    return 1\n")
    mod = _import_from(monkeypatch, tmp_path, "env_registered")
    cloudpickle.register_pickle_by_value(mod)
    try:
        pl.dumps_payload(mod.f, [((), {})], kind="call", by_value=["env_registered"])
        assert "env_registered" in cloudpickle.list_registry_pickle_by_value()
    finally:
        cloudpickle.unregister_pickle_by_value(mod)


def test_payloads_pickled_at_once_keep_their_modules_by_value(tmp_path, monkeypatch):
    (tmp_path / "env_shared.py").write_text("def triple(x):\n    return 3 * x\n")
    mod = _import_from(monkeypatch, tmp_path, "env_shared")
    other_done, failed = threading.Event(), []

    def other() -> None:
        try:
            pl.dumps_payload(mod.triple, [((1,), {})], kind="call", by_value=["env_shared"])
        except hpcexec.PayloadError as e:  # reported below
            failed.append(e)
        other_done.set()

    class StartsAnotherSubmit:
        def __reduce__(self):  # pickled after the callable, while its module is registered
            threading.Thread(target=other).start()
            other_done.wait(1.0)  # the other submit runs meanwhile, unless it must wait
            return (int, (2,))

    pl.dumps_payload(
        mod.triple, [((StartsAnotherSubmit(),), {})], kind="call", by_value=["env_shared"]
    )
    assert other_done.wait(30) and not failed
    assert "env_shared" not in cloudpickle.list_registry_pickle_by_value()


WHERE_CLIENT = """\
import json, sys
import hpcexec

def where():
    import os, sys
    import envmarker
    with open(f"/proc/{os.getppid()}/cmdline") as f:
        parent = f.read()
    return {"prefix": sys.prefix, "marker": envmarker.NAME, "parent": parent}

with hpcexec.Executor(cache_dir=sys.argv[1], poll_interval=0.02) as ex:
    print(json.dumps(ex.submit(where).result(timeout=120)))
"""


def stop_server(python: str) -> bool:
    code = "import sys; from hpcexec import forkserver; print(forkserver.stop(sys.executable))"
    p = subprocess.run(
        [python, "-c", code], check=False, capture_output=True, text=True, timeout=60, cwd="/"
    )
    return p.stdout.strip() == "True"


def test_jobs_run_in_the_venv_of_their_client_while_another_venvs_server_runs(tmp_path):
    (tmp_path / "work").mkdir()
    script = tmp_path / "client.py"
    script.write_text(WHERE_CLIENT)
    envs = {name: make_venv(tmp_path / f"venv{name}", marker=name)[0] for name in "AB"}
    try:
        for name in "AB":  # A's fork server is still running when B submits
            got = json.loads(
                run_client(
                    envs[name], script, str(tmp_path / f"cache{name}"), cwd=tmp_path / "work"
                )
            )
            assert "hpcexec.forkserver" in got["parent"], "warm-started from a fork server"
            assert got["prefix"] == str(tmp_path / f"venv{name}")
            assert got["marker"] == name
    finally:
        stopped = [stop_server(envs[name]) for name in "AB"]
    assert stopped == [True, True], "each venv's server is found again by its name"


def _where() -> list[str]:
    """Where a job runs: prefix, envmarker.NAME, its parent's command line."""

    def where() -> list[str]:  # local: it travels by value, into any venv
        import envmarker  # the job's venv's own module

        with open(f"/proc/{os.getppid()}/cmdline") as f:
            return [sys.prefix, envmarker.NAME, f.read()]

    return where


def test_python_given_runs_jobs_in_its_own_venv(tmp_path):
    envs = {name: make_venv(tmp_path / f"venv{name}", marker=name)[0] for name in "AB"}
    try:
        for name in "AB":  # A's fork server is still running when B's jobs start
            with hpcexec.Executor(
                cache_dir=tmp_path / f"cache{name}", poll_interval=0.02, python=envs[name]
            ) as ex:
                prefix, marker, parent = ex.submit(_where()).result(timeout=120)
            assert "hpcexec.forkserver" in parent, "warm-started from a fork server"
            assert (prefix, marker) == (str(tmp_path / f"venv{name}"), name)
    finally:
        stopped = [forkserver.stop(envs[name]) for name in "AB"]
    assert stopped == [True, True]


def test_python_given_as_a_command_is_found_on_path(tmp_path, monkeypatch):
    make_venv(tmp_path / "venv", marker="C")
    monkeypatch.setenv("PATH", f"{tmp_path / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    try:
        with hpcexec.Executor(
            cache_dir=tmp_path / "cache", poll_interval=0.02, python="python"
        ) as ex:
            prefix, marker, parent = ex.submit(_where()).result(timeout=120)
        assert "hpcexec.forkserver" in parent, "warm-started from a fork server"
        assert (prefix, marker) == (str(tmp_path / "venv"), "C")
    finally:
        assert forkserver.stop("python")


SSH_CLIENT = """\
import json, os, sys
import cloudpickle, paramiko
import hpcexec

host, key, known, remote_python, remote_dir, cache = sys.argv[1:]
with hpcexec.Executor("slurm", cache_dir=cache, host=host, ssh_key=key, known_hosts=known,
                      python=remote_python, remote_dir=remote_dir, poll_interval=0.2,
                      time="0:10:00") as ex:
    print(json.dumps({"loaded_from": [cloudpickle.__file__, paramiko.__file__],
                      "sum": ex.submit(sum, [1, 2, 3]).result(timeout=120)}))
"""


def copy_client_packages(site: Path) -> None:
    """Copy the packages an SSH client loads (cloudpickle, paramiko and what it imports)
    into ``site``, so that they are loaded from there, as from a project's own ``.venv``."""
    code = textwrap.dedent(f"""\
        import sys, hpcexec.executor, hpcexec.transport.ssh, paramiko, cloudpickle
        site = {SITE!r} + "/"
        tops = set()
        for mod in list(sys.modules.values()):
            path = getattr(mod, "__file__", None) or ""
            if path.startswith(site):
                tops.add(path[len(site):].split("/")[0])
        print("\\n".join(sorted(tops)))""")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for top in out.split():
        source = Path(SITE) / top
        if source.is_dir():
            shutil.copytree(source, site / top, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, site / top)


@pytest.mark.ssh
@pytest.mark.slurm
def test_callables_over_ssh_from_a_project_with_its_venv_inside(
    slurm_cluster, remote_options, tmp_path
):
    project = tmp_path / "project"
    python, site = make_venv(project / ".venv")
    copy_client_packages(site)
    script = project / "client.py"
    script.write_text(SSH_CLIENT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The venv lies under the working directory, then only under the script's directory.
    for n, cwd in enumerate((project, elsewhere)):
        got = json.loads(
            run_client(
                python,
                script,
                DEST,
                str(KEY),
                str(KNOWN),
                remote_options["python"],
                f"{remote_options['remote_dir']} {n}",
                str(tmp_path / f"cache{n}"),
                cwd=cwd,
            )
        )
        assert all(p.startswith(str(project / ".venv") + "/") for p in got["loaded_from"])
        assert got["sum"] == 6
