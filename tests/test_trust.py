"""What hpcexec trusts (hpcexec.trust): the cache, ``jobs/``, ``secrets/``, the keys, the store
and each job directory belong to the user and cannot be written by others. The other user is
played by uid 65534 (``setpriv``), so the end-to-end tests need root."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jobfns
import pytest

import hpcexec
from hpcexec import trust
from hpcexec.errors import IntegrityError, JobFailed, UntrustedPath
from hpcexec.integrity import SECRET, SECRETS, key_id, seal
from hpcexec.layout import PAYLOAD, RESULT
from hpcexec.payload import dumps_payload

NOBODY = 65534
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to play another user")


class Planted:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def as_nobody(script: str) -> None:
    """Run a shell script as the other user (uid/gid 65534, no groups)."""
    subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "sh",
            "-ec",
            script,
        ],
        check=True,
        timeout=60,
    )


@pytest.fixture
def base():
    """A directory the other user may traverse (not tmp_path: its parents are private)."""
    d = Path(tempfile.mkdtemp(prefix="hpcexec-trust-"))
    d.chmod(0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# -- the check itself --------------------------------------------------------------------------


def test_a_private_directory_and_file_pass(tmp_path):
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    trust.check(str(d), "the test directory")
    f = d / "key"
    f.write_bytes(b"k")
    f.chmod(0o600)
    trust.check(str(f), "the test key", forbidden=trust.ANY_ACCESS)


def test_a_directory_others_can_write_is_refused_with_the_chmod(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o775)
    with pytest.raises(UntrustedPath, match=rf"can be written by other users.*`chmod go-w {d}`"):
        trust.check(str(d), "the test directory")


def test_a_key_others_can_read_is_refused_with_the_chmod(tmp_path):
    f = tmp_path / "key"
    f.write_bytes(b"k")
    f.chmod(0o640)
    with pytest.raises(UntrustedPath, match=rf"read or written by other users.*`chmod 600 {f}`"):
        trust.check(str(f), "the test key", forbidden=trust.ANY_ACCESS)


def test_a_symlink_is_checked_at_its_target(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scratch.chmod(0o777)
    link = tmp_path / "jobs"
    link.symlink_to(scratch)
    with pytest.raises(
        UntrustedPath, match=rf"{link} \(a link to {scratch}\).*`chmod go-w {scratch}`"
    ):
        trust.check(str(link), "the jobs directory", repair=True)  # a link is never repaired
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o777


@needs_root
def test_a_path_of_another_user_is_refused_with_the_chown(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(
        UntrustedPath,
        match=rf"belongs to another user \(uid {NOBODY}\).*"
        rf"`chown {os.getuid()} {d}`",
    ):
        trust.check(str(d), "the test directory", repair=True)  # never repaired either
    link = tmp_path / "link"
    link.symlink_to(d)
    with pytest.raises(UntrustedPath, match=rf"a link to {d}.*belongs to another user"):
        trust.check(str(link), "the test directory")


def test_repair_takes_the_bits_away_and_says_so(tmp_path, caplog):
    d = tmp_path / "jobs"
    d.mkdir()
    d.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="hpcexec.trust"):
        trust.check(str(d), "the jobs directory", repair=True)
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert f"chmod go-w {d}" in caplog.text


def test_a_missing_path_is_a_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        trust.check(str(tmp_path / "none"), "the test directory")


# -- the attacks of issue 12, end to end on the local backend -----------------------------------


@needs_root
def test_a_swapped_held_job_directory_is_not_run(base, tmp_path):
    cache = base / "cache"
    cache.mkdir(mode=0o711)
    with hpcexec.Executor(cache_dir=cache) as ex:
        f = ex.options(hold=True).submit_shell("echo mine")
        jobdir = f.record.path
        (cache / "jobs").chmod(0o777)  # a careless chmod after the cache was opened
        as_nobody(
            f"mv {jobdir} {jobdir}.old && mkdir {jobdir} && "
            f"printf '#!/bin/sh\\nid -u > {jobdir}/ran\\n' > {jobdir}/job.sh && "
            f"chmod 755 {jobdir} {jobdir}/job.sh"
        )
        assert f.release()
        time.sleep(2)
        assert not (jobdir / "ran").exists(), "the other user's job.sh ran as the cache owner"
        with pytest.raises(JobFailed, match=rf"belongs to another user \(uid {NOBODY}\)"):
            f.result(timeout=60)
        time.sleep(0.5)
        assert not (jobdir / "ran").exists()


@needs_root
def test_a_jobs_directory_linked_to_a_world_writable_one_is_refused(base):
    cache = base / "cache"
    cache.mkdir(mode=0o700)
    scratch = base / "scratch"
    scratch.mkdir()
    scratch.chmod(0o1777)
    (cache / "jobs").symlink_to(scratch)
    with pytest.raises(
        UntrustedPath,
        match=rf"jobs directory {cache / 'jobs'} \(a link to "
        rf"{scratch}\).*chmod go-w {scratch}",
    ):
        hpcexec.Executor(cache_dir=cache)
    os.chown(scratch, NOBODY, NOBODY)
    scratch.chmod(0o700)
    with pytest.raises(UntrustedPath, match=r"belongs to another user"):
        hpcexec.Executor(cache_dir=cache)


@needs_root
def test_a_key_planted_in_secrets_makes_no_planted_result_load(base, tmp_path):
    cache = base / "cache"
    cache.mkdir(mode=0o711)
    with hpcexec.Executor(cache_dir=cache) as ex:
        f = ex.submit(jobfns.double, 21)
        assert f.result(timeout=60) == 42
        result = f.record.path / RESULT
    (cache / SECRETS).chmod(0o777)
    theirs = b"t" * 32
    as_nobody(f"printf %s {theirs.decode()} > {cache / SECRETS / key_id(theirs)}")
    marker = tmp_path / "loaded"
    result.write_bytes(seal(theirs, pickle.dumps([pickle.dumps(("ok", Planted(str(marker))))])))
    with hpcexec.Executor(cache_dir=cache) as again:
        g = again.submit(jobfns.double, 21)  # finished and cached: its result is read
        with pytest.raises(IntegrityError, match=f"sealed with key {key_id(theirs)}"):
            g.result(timeout=60)
    assert not marker.exists()
    assert stat.S_IMODE((cache / SECRETS).stat().st_mode) == 0o755  # repaired


def test_the_runner_trusts_only_the_key_it_is_given(tmp_path):
    files = tmp_path / "files"
    jobdir = files / "jobs" / "job"
    jobdir.mkdir(parents=True)
    secrets = files / SECRETS
    secrets.mkdir(mode=0o700)
    ours, theirs = b"o" * 32, b"t" * 32
    for key in (ours, theirs):
        (secrets / key_id(key)).write_bytes(key)
        (secrets / key_id(key)).chmod(0o600)
    marker = tmp_path / "loaded"
    data, _ = dumps_payload(os.system, [((f"touch {marker}",), {})], kind="call", sys_path=())
    (jobdir / PAYLOAD).write_bytes(seal(theirs, data))
    r = subprocess.run(
        [sys.executable, "-m", "hpcexec.runner", str(jobdir), str(secrets / key_id(ours))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and f"sealed with key {key_id(theirs)}" in r.stderr
    assert not marker.exists()


def test_the_runner_refuses_a_key_file_others_can_read(tmp_path):
    jobdir = tmp_path / "files" / "jobs" / "job"
    jobdir.mkdir(parents=True)
    secrets = tmp_path / "files" / SECRETS
    secrets.mkdir(mode=0o700)
    key = b"o" * 32
    (secrets / key_id(key)).write_bytes(key)
    (secrets / key_id(key)).chmod(0o644)
    data, _ = dumps_payload(jobfns.double, [((1,), {})], kind="call", sys_path=())
    (jobdir / PAYLOAD).write_bytes(seal(key, data))
    r = subprocess.run(
        [sys.executable, "-m", "hpcexec.runner", str(jobdir), str(secrets / key_id(key))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "chmod 600" in r.stderr
    assert not (jobdir / RESULT).exists()


def test_a_key_file_under_another_keys_name_is_refused_by_the_runner(tmp_path):
    jobdir = tmp_path / "files" / "jobs" / "job"
    jobdir.mkdir(parents=True)
    secrets = tmp_path / "files" / SECRETS
    secrets.mkdir(mode=0o700)
    key, other = b"o" * 32, b"x" * 32
    (secrets / key_id(key)).write_bytes(other)
    (secrets / key_id(key)).chmod(0o600)
    data, _ = dumps_payload(jobfns.double, [((1,), {})], kind="call", sys_path=())
    (jobdir / PAYLOAD).write_bytes(seal(other, data))
    r = subprocess.run(
        [sys.executable, "-m", "hpcexec.runner", str(jobdir), str(secrets / key_id(key))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "is not the key its name says" in r.stderr


def test_a_cache_key_and_store_others_could_touch_are_repaired(cache, caplog):
    with hpcexec.Executor(cache_dir=cache) as ex:
        assert ex.submit(jobfns.double, 1).result(timeout=60) == 2
    (cache / SECRET).chmod(0o644)
    (cache / "jobs.sqlite").chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="hpcexec.trust"):
        with hpcexec.Executor(cache_dir=cache) as ex:
            assert ex.submit(jobfns.double, 2).result(timeout=60) == 4
    assert stat.S_IMODE((cache / SECRET).stat().st_mode) == 0o600
    assert stat.S_IMODE((cache / "jobs.sqlite").stat().st_mode) == 0o644
    assert f"chmod 600 {cache / SECRET}" in caplog.text
    assert f"chmod go-w {cache / 'jobs.sqlite'}" in caplog.text


@needs_root
def test_a_store_of_another_user_is_refused_with_the_chown(cache):
    hpcexec.Executor(cache_dir=cache).shutdown()
    os.chown(cache / "jobs.sqlite", NOBODY, NOBODY)
    with pytest.raises(
        UntrustedPath,
        match=rf"job store {cache / 'jobs.sqlite'} belongs to "
        rf"another user.*chown {os.getuid()}",
    ):
        hpcexec.Executor(cache_dir=cache)


# -- the files directory on another host, over the loopback sshd ---------------------------------


@pytest.mark.ssh
@pytest.mark.slurm
@needs_root
def test_a_remote_files_directory_is_checked_over_ssh(
    slurm_cluster, remote_options, cache, tmp_path
):
    files = Path(remote_options["remote_dir"])
    files.mkdir(mode=0o700)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scratch.chmod(0o777)
    (files / "jobs").symlink_to(scratch)
    with pytest.raises(UntrustedPath, match=rf"jobs directory .*jobs \(a link to {scratch}\)"):
        hpcexec.Executor(cache_dir=cache, backend="slurm", **remote_options)
    (files / "jobs").unlink()
    (files / SECRETS).mkdir(mode=0o777)
    os.chown(files / SECRETS, NOBODY, NOBODY)
    with pytest.raises(UntrustedPath, match=rf"{SECRETS} .*belongs to another user"):
        hpcexec.Executor(cache_dir=cache, backend="slurm", **remote_options)
    shutil.rmtree(files / SECRETS)
    (files / "jobs").chmod(0o777)  # made by the first try; hpcexec's own: repaired
    with hpcexec.Executor(
        cache_dir=cache, backend="slurm", time="0:10:00", poll_interval=0.2, **remote_options
    ) as ex:
        assert ex.submit(jobfns.double, 4).result(timeout=120) == 8
    assert stat.S_IMODE((files / "jobs").stat().st_mode) == 0o755
    key = next((files / SECRETS).iterdir())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.ssh
@pytest.mark.slurm
def test_a_remote_files_directory_is_looked_at_in_one_exchange(
    slurm_cluster, remote_options, cache, monkeypatch
):
    """Connecting looks at the files directory, jobs/, secrets/ and the key together: on a
    distant link one round trip, not one per path (each was two or more before)."""
    from sshtest import Exchanges

    with hpcexec.Executor(cache_dir=cache, backend="slurm", **remote_options):
        pass  # sets the directory up: made, the key written
    trips = Exchanges(monkeypatch)
    with hpcexec.Executor(cache_dir=cache, backend="slurm", **remote_options):
        assert trips.count == 1
    files = Path(remote_options["remote_dir"])
    (files / "jobs").chmod(0o777)
    with hpcexec.Executor(cache_dir=cache, backend="slurm", **remote_options):
        pass  # still checked, and repaired
    assert stat.S_IMODE((files / "jobs").stat().st_mode) == 0o755
