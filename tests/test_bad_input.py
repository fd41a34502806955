"""The catalogue of bad input: for each case, the error's type, a message that names what is
wrong, nothing submitted, and the store unchanged."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jobfns
import pytest
from sshtest import DEST

import hpcexec
from hpcexec.errors import (
    BackendError,
    CacheError,
    ConfigError,
    PayloadError,
    ResourceError,
    TransportError,
)
from hpcexec.store import Store


@dataclass(frozen=True)
class Case:
    attempt: Callable[[Any], Any]  # given a ready local executor on the cache
    error: type[BaseException]
    names: str  # a regex the message must match: what is wrong


def res(**values: Any) -> Callable[[Any], Any]:
    """Submit a job with these resources or job options."""
    return lambda ex: ex.options(**values).submit(jobfns.double, 1)


def new(*args: Any, **kw: Any) -> Callable[[Any], Any]:
    """Open another executor on the same cache."""
    return lambda ex: hpcexec.Executor(*args, cache_dir=ex.cache_dir, **kw)


CASES = {
    # resources: every key's bad values
    "time-text": Case(res(time="soon"), ResourceError, r"'time'.*HH:MM:SS"),
    "time-zero": Case(res(time=0), ResourceError, r"'time'.*longer than zero"),
    "time-bool": Case(res(time=True), ResourceError, r"'time'.*not a bool"),
    "time-negative": Case(res(time="-1"), ResourceError, r"'time'"),
    "nodes-zero": Case(res(nodes=0), ResourceError, r"'nodes'.*>= 1"),
    "nodes-text": Case(res(nodes="two"), ResourceError, r"'nodes'"),
    "nodes-float": Case(res(nodes=1.5), ResourceError, r"'nodes'.*whole number"),
    "ppn-negative": Case(res(ppn=-1), ResourceError, r"'ppn'"),
    "threads-zero": Case(res(threads=0), ResourceError, r"'threads'"),
    "gpus-negative": Case(res(gpus=-1), ResourceError, r"'gpus'.*>= 0"),
    "mem-text": Case(res(mem="lots"), ResourceError, r"'mem'.*unit"),
    "mem-unit": Case(res(mem="5XB"), ResourceError, r"'mem'"),
    "mem-negative": Case(res(mem=-5), ResourceError, r"'mem'.*more than zero"),
    "queue-empty": Case(res(queue=""), ResourceError, r"'queue'.*non-empty"),
    "queue-space": Case(res(queue="a b"), ResourceError, r"'queue'.*only"),
    "account-shell": Case(res(account="x;rm -rf /"), ResourceError, r"'account'"),
    "name-empty": Case(res(name=""), ResourceError, r"'name'"),
    "stdout-int": Case(res(stdout=5), ResourceError, r"'stdout'"),
    "workdir-int": Case(res(workdir=3), ResourceError, r"'workdir'"),
    "env-name": Case(res(env={"1BAD": "x"}), ResourceError, r"'1BAD' is not a valid"),
    "env-not-mapping": Case(res(env="A=1"), ResourceError, r"'env'.*mapping"),
    "native-int": Case(res(native=5), ResourceError, r"'native'"),
    "unknown-resource": Case(res(memory="4G"), ResourceError, r"memory"),
    # job options
    "key-chars": Case(res(key="bad key!"), ResourceError, r"'key'.*'bad key!'"),
    "force-not-bool": Case(res(force="yes"), ResourceError, r"'force'"),
    "hold-not-bool": Case(res(hold=1), ResourceError, r"'hold'"),
    "reuse-slots-not-bool": Case(res(reuse_slots="no"), ResourceError, r"'reuse_slots'"),
    "array-limit-zero": Case(res(array_limit=0), ResourceError, r"'array_limit'"),
    "after-not-future": Case(res(after=[1]), ResourceError, r"'after' takes JobFutures"),
    # callables and arguments
    "not-callable": Case(lambda ex: ex.submit(5), PayloadError, r"not callable"),
    "unpicklable-arg": Case(
        lambda ex: ex.submit(jobfns.double, threading.Lock()),
        PayloadError,
        r"positional argument 0 \(lock\)",
    ),
    "unpicklable-kwarg": Case(
        lambda ex: ex.submit(jobfns.add, 1, b=threading.Lock()),
        PayloadError,
        r"keyword argument 'b'",
    ),
    "unpicklable-in-map": Case(
        lambda ex: ex.map(jobfns.double, [1, threading.Lock()]), PayloadError, r"cannot be pickled"
    ),
    "shell-not-text": Case(lambda ex: ex.submit_shell(123), ResourceError, r"shell body"),
    "shell-empty": Case(lambda ex: ex.submit_shell(""), ResourceError, r"non-empty"),
    # backends and executor settings
    "backend-unknown": Case(new("nosuch"), BackendError, r"'nosuch'.*available"),
    "backend-missing": Case(new("pbspro"), BackendError, r"'pbspro' needs qsub"),
    "poll-zero": Case(new(poll_interval=0), ResourceError, r"poll_interval"),
    "coalesce-text": Case(new(coalesce="x"), ResourceError, r"coalesce"),
    "coalesce-negative": Case(
        new(coalesce=-0.5), ResourceError, r"coalesce must be a non-negative number"
    ),
    "calls-negative": Case(new(calls_per_second=-1), ResourceError, r"calls_per_second"),
    # hosts and SSH
    "host-not-text": Case(new("slurm", host=123), BackendError, r"host must be a string"),
    "host-with-local": Case(new("local", host=DEST), BackendError, r"local backend runs jobs"),
    "remote-dir-no-host": Case(new(remote_dir="/tmp/x"), ResourceError, r"remote_dir.*host="),
    "ssh-key-missing": Case(
        new("slurm", host=DEST, ssh_key="/no/such/key"), TransportError, r"/no/such/key"
    ),
    "ssh-destination": Case(new("slurm", host="root@:x"), TransportError, r"'root@:x'"),
    # profiles
    "profile-unknown": Case(new(profile="nosuch"), ConfigError, r"'nosuch'"),
}


def snapshot(cache) -> tuple[list, list]:
    store = Store(cache)
    try:
        records = sorted((r.key, r.rev) for r in store.select())
    finally:
        store.close()
    return records, sorted(os.listdir(cache / "jobs"))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_and_changes_nothing(name, ex, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no hpcexec.toml of the project's
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    case = CASES[name]
    assert ex.submit(jobfns.double, 2).result(timeout=60) == 4  # a store with a record in it
    before = snapshot(ex.cache_dir)
    with pytest.raises(case.error, match=case.names):
        case.attempt(ex)
    assert snapshot(ex.cache_dir) == before


def test_the_catalogue_has_at_least_forty_cases():
    assert len(CASES) + len(CACHE_CASES) >= 40


# -- cache contents ----------------------------------------------------------------------------


def corrupt_store(cache) -> bytes:
    cache.mkdir(mode=0o700)
    (cache / "jobs.sqlite").write_bytes(b"this is not a database" * 100)
    return (cache / "jobs.sqlite").read_bytes()


def wrong_schema(cache) -> bytes:
    cache.mkdir(mode=0o700)
    conn = sqlite3.connect(cache / "jobs.sqlite")
    conn.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '999')")
    conn.commit()
    conn.close()
    return (cache / "jobs.sqlite").read_bytes()


def shared_dir(cache) -> bytes:
    cache.mkdir()
    cache.chmod(0o777)
    return b""


CACHE_CASES = {
    "store-corrupt": (corrupt_store, r"cannot be read.*left as it is"),
    "store-newer-schema": (wrong_schema, r"schema|version"),
    "cache-dir-world-writable": (shared_dir, r"written by other users"),
}


@pytest.mark.parametrize("name", list(CACHE_CASES))
def test_bad_cache_is_refused_and_kept(name, tmp_path):
    cache = tmp_path / "cache"
    make, names = CACHE_CASES[name]
    content = make(cache)
    with pytest.raises(CacheError, match=names):
        hpcexec.Executor(cache_dir=cache)
    if content:
        assert (cache / "jobs.sqlite").read_bytes() == content  # kept for the user, as it was
    assert not (cache / "jobs").exists() or not os.listdir(cache / "jobs")


def test_bad_cli_option_is_one_line_and_a_non_zero_exit(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcexec.cli",
            "--cache-dir",
            str(tmp_path / "c"),
            "submit",
            "--time",
            "soon",
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "time" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c" / "jobs").exists() or not os.listdir(tmp_path / "c" / "jobs")
