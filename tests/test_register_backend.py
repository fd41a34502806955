"""Third-party backends: hpcexec.register_backend and the ``hpcexec.backends`` entry points.

The backend written here ("site") is a dialect of its own as far as hpcexec can tell: its
commands are ``sitesub``, ``sitestat``, ``sitekill`` ... (small wrappers around the fake LSF in
tests/fakesched/), so nothing built in drives them."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jobfns
import pytest
from livecluster import _executor

import hpcexec
from hpcexec import BackendError, JobState
from hpcexec import backends as registry
from hpcexec.backends import SCHEDULERS, register_backend, unregister_backend
from hpcexec.backends.base import SchedulerBackend
from hpcexec.backends.slurm import SlurmBackend
from hpcexec.config import resolve

FAKE = Path(__file__).parent / "fakesched"
RENAMED = {
    "bsub": "sitesub",
    "bjobs": "sitestat",
    "bkill": "sitekill",
    "bstop": "sitestop",
    "bresume": "siteresume",
}
TOOLS = ["bash", "sh", "env", "mv", "cat", "sleep", "rm", "mkdir", "true", "false"]

SITE_MODULE = '''
from hpcexec.backends.lsf import LsfBackend

RENAMED = {"bsub": "sitesub", "bjobs": "sitestat", "bkill": "sitekill", "bstop": "sitestop",
           "bresume": "siteresume"}


class SiteBackend(LsfBackend):
    """A site's scheduler: LSF's dialect under other command names."""

    name = "site"
    commands = ("sitesub", "sitestat")
    poll_max = 0.3

    @staticmethod
    def _renamed(argv):
        return [RENAMED.get(argv[0], argv[0]), *argv[1:]] if argv else argv

    def submit_argv(self, spec):
        return self._renamed(super().submit_argv(spec))

    def status_argv(self, job_ids):
        return self._renamed(super().status_argv(job_ids))

    def cancel_argv(self, job_ids):
        return self._renamed(super().cancel_argv(job_ids))

    def hold_argv(self, job_ids):
        return self._renamed(super().hold_argv(job_ids))

    def release_argv(self, job_ids):
        return self._renamed(super().release_argv(job_ids))

    def max_array_argv(self):
        return None
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A directory on sys.path holding the module ``site_hpcexec`` and the dist-info of a
    package ``site-hpcexec`` whose entry point declares it; entry points are read again."""
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "site_hpcexec.py").write_text(SITE_MODULE)
    info = d / "site_hpcexec-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: site-hpcexec\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[hpcexec.backends]\nsite = site_hpcexec:SiteBackend\n")
    monkeypatch.syspath_prepend(str(d))
    _forget_plugins(monkeypatch)
    yield d
    SCHEDULERS.pop("site", None)
    SCHEDULERS.pop("broken", None)
    sys.modules.pop("site_hpcexec", None)


def _forget_plugins(monkeypatch):
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_broken", {})


@pytest.fixture
def site_path(tmp_path, monkeypatch):
    """PATH holding only the site's commands (wrappers of the fake LSF) and basic tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for real, renamed in RENAMED.items():
        (bin_dir / renamed).write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(FAKE)!r})\n"
            f"from _fakesched import main\nsys.exit(main({real!r}, sys.argv[1:]))\n"
        )
        (bin_dir / renamed).chmod(0o755)
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "python3").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKESCHED_DIR", str(tmp_path / "sched"))
    yield bin_dir
    subprocess.run([sys.executable, str(FAKE / "_fakesched.py"), "cleanup"], check=False)


# -- checks at registration -------------------------------------------------------------------
class _Incomplete(SchedulerBackend):
    name = "incomplete"
    array_index_pattern = "%I"

    def check(self, res):
        pass


@pytest.mark.parametrize(
    "cls, name, message",
    [
        (
            _Incomplete,
            "incomplete",
            r"lacks methods cancel_argv, .*parse_status, parse_submit, "
            r"script_parts, status_argv, submit_argv; class attribute "
            r"commands .*array_index_expr.*class attributes prefix and "
            r"rules .* or a directives\(\) method of its own",
        ),
        (
            type("Renamed", (SlurmBackend,), {}),
            "renamed",
            r"has name 'slurm' but is registered "
            r"as 'renamed'.*name = 'renamed'",
        ),
        (type("Local", (SlurmBackend,), {"name": "local"}), "local", r"not local or auto"),
        (type("Slurm2", (SlurmBackend,), {}), "slurm", r"built in and cannot be replaced"),
        (object, "thing", r"derived from hpcexec.backends.base.SchedulerBackend"),
        (
            type(
                "NeedsArgs",
                (SlurmBackend,),
                {"name": "needsargs", "__init__": lambda self, x: None},
            ),
            "needsargs",
            r"cannot be built with no arguments",
        ),
    ],
)
def test_registration_names_what_is_missing(cls, name, message):
    with pytest.raises(BackendError, match=message):
        register_backend(name, cls)
    assert SCHEDULERS.get(name) in (None, SlurmBackend)


def test_a_name_is_taken_once_unless_replaced():
    first = type("SiteA", (SlurmBackend,), {"name": "sitea"})
    second = type("SiteB", (SlurmBackend,), {"name": "sitea"})
    register_backend("sitea", first)
    try:
        register_backend("sitea", first)  # the same class again: fine
        with pytest.raises(BackendError, match=r"already registered.*replace=True"):
            register_backend("sitea", second)
        register_backend("sitea", second, replace=True)
        assert SCHEDULERS["sitea"] is second
    finally:
        unregister_backend("sitea")
    assert "sitea" not in SCHEDULERS


# -- a registered backend drives a whole job ---------------------------------------------------
def test_registered_backend_runs_jobs_and_is_chosen_by_auto(plugin_dir, site_path, tmp_path):
    import site_hpcexec

    register_backend("site", site_hpcexec.SiteBackend)
    with hpcexec.Executor("auto", cache_dir=tmp_path / "cache", poll_interval=0.1) as ex:
        assert ex.session.backend.name == "site"  # its commands are on PATH, no built-in's are
        f = ex.submit(jobfns.double, 21)
        assert f.result(timeout=60) == 42
        assert ex.submit_shell("echo via site; exit 3", check=False).result(
            timeout=60
        ) == hpcexec.ShellResult(3, "via site\n", "")
        assert list(ex.map(jobfns.double, range(4), timeout=60)) == [0, 2, 4, 6]
        assert ex.session.calls["sitesub"] == 3 and "bsub" not in ex.session.calls
        held = ex.options(hold=True).submit(jobfns.double, 5)
        assert held.release()
        assert held.result(timeout=60) == 10
    records = hpcexec.Store(tmp_path / "cache").select()
    assert {r.backend for r in records} == {"site"}
    assert all(r.state is JobState.COMPLETED or r.exit_code == 3 for r in records)


@pytest.mark.slurm
def test_live_slurm_under_another_name(slurm_cluster, tmp_path):
    register_backend("siteslurm", type("SiteSlurm", (SlurmBackend,), {"name": "siteslurm"}))
    try:
        for ex in _executor("siteslurm", tmp_path / "cache", time="0:10:00"):
            f = ex.submit(jobfns.add, 2, 3)
            assert f.result(timeout=120) == 5
            assert f.record.backend == "siteslurm" and f.job_id.isdigit()
            assert ex.session.calls["sbatch"] == 1
    finally:
        unregister_backend("siteslurm")


# -- entry points -------------------------------------------------------------------------------
def test_entry_point_is_found_once_and_works_in_profiles(plugin_dir, site_path, tmp_path):
    assert "site" not in SCHEDULERS
    assert "site" in registry.backend_names()  # the lookup loaded the entry point
    cls = SCHEDULERS["site"]
    assert cls.__module__ == "site_hpcexec"
    registry.load_entry_points()  # once: nothing changes
    assert SCHEDULERS["site"] is cls
    (tmp_path / "hpcexec.toml").write_text('[profiles.here]\nbackend = "site"\n')
    s = resolve("here", cwd=tmp_path, environ={"HOME": str(tmp_path)})
    assert s["backend"] == "site"
    with hpcexec.Executor("site", cache_dir=tmp_path / "cache", poll_interval=0.1) as ex:
        assert ex.submit(jobfns.add, 1, 2).result(timeout=60) == 3


def test_broken_plugin_warns_and_leaves_the_rest_working(plugin_dir, tmp_path, caplog, monkeypatch):
    (plugin_dir / "site_hpcexec-1.0.dist-info" / "entry_points.txt").write_text(
        "[hpcexec.backends]\nsite = site_hpcexec:SiteBackend\nbroken = site_hpcexec:Nothing\n"
    )
    with caplog.at_level(logging.WARNING, logger="hpcexec.backends"):
        with hpcexec.Executor(cache_dir=tmp_path / "cache", poll_interval=0.02) as ex:
            assert ex.submit(jobfns.double, 2).result(timeout=30) == 4  # local: unaffected
        names = registry.backend_names()
    assert "site" in names and "broken" not in names
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "the package site-hpcexec declares backend 'broken'" in warning
    assert "AttributeError" in warning
    with pytest.raises(BackendError, match=r"package site-hpcexec declares backend 'broken'"):
        hpcexec.Executor("broken", cache_dir=tmp_path / "cache")


def test_cli_knows_a_backend_from_an_entry_point(plugin_dir, site_path, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "cli"))
    from clirun import Cli

    work = tmp_path / "work"
    work.mkdir()
    cli = Cli(
        work,
        tmp_path / "xdg",
        PYTHONPATH=os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]),
    )
    found = cli.json("backends")
    assert found["auto"] == "site"
    assert [b["available"] for b in found["backends"] if b["backend"] == "site"] == [True]
    r = cli("--backend", "site", "submit", "--", "echo from the site")
    assert "site" in r.out
    assert cli.json("jobs", "--backend", "site")[0]["backend"] == "site"
    line = cli("--backend", "nosuch", "jobs", ok=False).err
    assert "unknown backend 'nosuch'" in line and "site" in line
    cli("wait", cli.json("jobs")[0]["key"])
