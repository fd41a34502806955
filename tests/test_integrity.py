"""Sealed payloads and results, the cache key and a private cache directory: a planted or
altered pickle is refused, never loaded, by the job and by the client."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess

import jobfns
import pytest
from test_runner import TEST_KEY, install_key, runner_argv, write_payload

import hpcexec
from hpcexec.errors import CacheError, IntegrityError
from hpcexec.integrity import SECRET, SECRETS, KeyRing, client_key, key_id, seal, unseal
from hpcexec.jobfiles import parse_exitcode
from hpcexec.layout import EXITCODE, PAYLOAD, RESULT


class Planted:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_seal_round_trip_and_every_kind_of_bad_file():
    ring = KeyRing(TEST_KEY)
    data = b"some pickled bytes"
    sealed = seal(TEST_KEY, data)
    assert unseal(sealed, ring, "f") == (data, TEST_KEY)
    altered = bytearray(sealed)
    altered[-1] ^= 1
    with pytest.raises(IntegrityError, match="fails its integrity check"):
        unseal(bytes(altered), ring, "f")
    with pytest.raises(IntegrityError, match="not a sealed hpcexec file"):
        unseal(pickle.dumps([1]), ring, "f")
    with pytest.raises(IntegrityError, match="does not hold"):
        unseal(seal(b"o" * 32, data), ring, "f")


def test_a_keyring_holds_only_the_keys_it_is_given(tmp_path):
    other = b"x" * 32
    ring = KeyRing(TEST_KEY)
    assert ring.get(key_id(TEST_KEY)) == TEST_KEY
    assert ring.get(key_id(other)) is None
    assert ring.get("../../etc/passwd") is None


def test_runner_refuses_a_planted_payload_and_loads_nothing(tmp_path):
    jobdir = tmp_path / "files" / "jobs" / "job"
    jobdir.mkdir(parents=True)
    install_key(jobdir)
    marker = tmp_path / "loaded"
    (jobdir / PAYLOAD).write_bytes(pickle.dumps({"sys_path": []}) + pickle.dumps(Planted(marker)))
    r = subprocess.run(runner_argv(jobdir), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not a sealed hpcexec file" in r.stderr
    assert not marker.exists()
    code, reason = parse_exitcode((jobdir / EXITCODE).read_text())
    assert code == 1 and "not loaded" in reason
    assert not (jobdir / RESULT).exists()


def test_runner_refuses_an_altered_payload(tmp_path):
    jobdir = tmp_path / "files" / "jobs" / "job"
    write_payload(jobdir, jobfns.double, [((2,), {})])
    sealed = bytearray((jobdir / PAYLOAD).read_bytes())
    sealed[-3] ^= 0xFF
    (jobdir / PAYLOAD).write_bytes(bytes(sealed))
    r = subprocess.run(runner_argv(jobdir), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "fails its integrity check" in r.stderr


def test_client_refuses_a_planted_result(cache, tmp_path):
    with hpcexec.Executor(cache_dir=cache) as ex:
        f = ex.submit(jobfns.double, 21)
        assert f.result(timeout=60) == 42
        result = f.record.path / RESULT
    marker = tmp_path / "loaded"
    result.write_bytes(pickle.dumps([pickle.dumps(("ok", Planted(marker)))]))
    with hpcexec.Executor(cache_dir=cache) as again:
        g = again.submit(jobfns.double, 21)  # finished and cached: its result is read
        with pytest.raises(IntegrityError, match="not a sealed hpcexec file"):
            g.result(timeout=60)
    assert not marker.exists()


def test_the_cache_key_and_its_copy_for_jobs_are_private(cache):
    with hpcexec.Executor(cache_dir=cache) as ex:
        assert ex.submit(jobfns.double, 1).result(timeout=60) == 2
    key = (cache / SECRET).read_bytes()
    assert len(key) == 32 and client_key(cache) == key  # made once, then kept
    assert stat.S_IMODE((cache / SECRET).stat().st_mode) == 0o600
    assert stat.S_IMODE((cache / SECRETS).stat().st_mode) == 0o700
    assert (cache / SECRETS / key_id(key)).read_bytes() == key
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_a_cache_directory_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CacheError, match=r"can be written by other users.*chmod go-w"):
        hpcexec.Executor(cache_dir=shared)
    assert not (shared / "jobs.sqlite").exists()
    shared.chmod(0o755)
    hpcexec.Executor(cache_dir=shared).shutdown()


def test_a_cache_directory_of_another_user_is_refused(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to give the directory to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(CacheError, match="belongs to another user"):
        hpcexec.Executor(cache_dir=theirs)
