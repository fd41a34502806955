"""Unit tests for hpcexec.store: persistent job records in SQLite."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hpcexec.errors import CacheError
from hpcexec.record import JobRecord
from hpcexec.states import ACTIVE_STATES, FINAL_STATES, JobState
from hpcexec.store import Store
from hpcexec.store_schema import DB_NAME, SCHEMA_VERSION


def new_store(path: Path) -> Store:
    path.mkdir(parents=True, exist_ok=True)
    return Store(path)


def rec(key: str, **kw) -> JobRecord:
    kw.setdefault("backend", "local")
    kw.setdefault("host", "here")
    kw.setdefault("kind", "call")
    kw.setdefault("jobdir", f"/jobs/{key}")
    return JobRecord(key=key, **kw)


def put(store: Store, *records: JobRecord, touch: bool = True) -> None:
    with store.write() as tx:
        for r in records:
            tx.put(r, touch=touch)


@pytest.fixture
def store(tmp_path):
    (tmp_path / "cache").mkdir()
    s = Store(tmp_path / "cache")
    yield s
    s.close()


def keys(records) -> list[str]:
    return [r.key for r in records]


# -- records ---------------------------------------------------------------------------


def test_new_store_creates_database(tmp_path):
    s = Store(tmp_path)
    try:
        assert s.path == tmp_path / DB_NAME
        assert s.path.is_file()
        assert s.revision() == 0
        assert s.query() == []
    finally:
        s.close()


def test_put_get_round_trips_every_field(store):
    original = rec(
        "abc123",
        backend="slurm",
        host="cluster1",
        kind="chunk",
        jobdir="/scratch/jobs/abc123",
        state=JobState.FAILED,
        name="my job",
        job_id="4242_3",
        array_index=3,
        exit_code=2,
        signal=9,
        reason="killed by SIGKILL",
        submitted=1700000000.25,
        started=1700000010.5,
        finished=1700000020.75,
        cores=8,
        resources={"threads": 4, "env": {"A": "1"}, "native": ["--x"], "time": 3600},
        deps=["k2", "k1"],
        comment="first try",
        tags=["b", "a"],
        user_state="analysed",
    )
    before = time.time()
    put(store, original)
    got = store.get("abc123")
    assert got is not None
    assert got == original  # put() filled in modified and rev on the same object
    assert got.state is JobState.FAILED
    assert got.resources == {"threads": 4, "env": {"A": "1"}, "native": ["--x"], "time": 3600}
    assert got.deps == ["k2", "k1"]  # order kept
    assert got.tags == ["b", "a"]
    assert before <= got.modified <= time.time()
    assert got.rev == 1
    assert got.path == Path("/scratch/jobs/abc123")


def test_defaults_round_trip(store):
    put(store, rec("k"))
    got = store.get("k")
    assert got.state is JobState.PENDING
    assert got.resources == {} and got.deps == [] and got.tags == []
    assert got.name is None and got.job_id is None and got.exit_code is None
    assert got.cores == 1


def test_put_without_touch_keeps_modified(store):
    r = rec("k", modified=123.5)
    put(store, r, touch=False)
    assert store.get("k").modified == 123.5


def test_put_replaces_a_whole_record(store):
    put(store, rec("k", name="one", comment="c"))
    put(store, rec("k", name="two"))
    got = store.get("k")
    assert got.name == "two"
    assert got.comment is None
    assert len(store.query()) == 1


def test_get_missing_and_get_many(store):
    put(store, *[rec(f"k{i}") for i in range(5)])
    assert store.get("nope") is None
    many = store.get_many(["k1", "k3", "nope"])
    assert sorted(many) == ["k1", "k3"]
    assert many["k3"].key == "k3"


def test_get_many_more_than_one_batch(store):
    put(store, *[rec(f"k{i:04d}") for i in range(1200)])
    wanted = [f"k{i:04d}" for i in range(0, 1200, 1)]
    assert len(store.get_many([*wanted, "missing"])) == 1200


def test_update_changes_fields(store):
    put(store, rec("k"))
    with store.write() as tx:
        tx.update("k", state=JobState.RUNNING, job_id="77", tags=["x"], resources={"a": 1})
    got = store.get("k")
    assert got.state is JobState.RUNNING
    assert got.job_id == "77"
    assert got.tags == ["x"]
    assert got.resources == {"a": 1}
    assert got.rev == 2


def test_update_refuses_unknown_fields(store):
    put(store, rec("k"))
    with pytest.raises(ValueError, match="bogus"), store.write() as tx:
        tx.update("k", bogus=1)


# -- revisions -------------------------------------------------------------------------


def test_revision_increases_once_per_changing_transaction(store):
    assert store.revision() == 0
    put(store, rec("a"))
    assert store.revision() == 1
    put(store, rec("b"), rec("c"))  # one transaction, one revision
    assert store.revision() == 2
    assert store.get("b").rev == store.get("c").rev == 2
    assert store.get("a").rev == 1
    with store.write() as tx:
        tx.update("a", comment="x")
        tx.update("b", comment="y")
    assert store.revision() == 3
    assert store.get("a").rev == store.get("b").rev == 3


def test_revision_unchanged_by_transactions_that_change_nothing(store):
    put(store, rec("a"))
    assert store.revision() == 1
    with store.write():
        pass
    assert store.revision() == 1
    with store.write() as tx:
        assert tx.get("a") is not None
        assert tx.query("state = ?", ["running"]) == []
    assert store.revision() == 1
    store.annotate("a")  # nothing to set
    assert store.revision() == 1
    assert store.delete(["missing"]) == 0
    assert store.revision() == 1
    assert store.select("active") and store.find("a")
    assert store.revision() == 1


def test_failed_transaction_rolls_back(store):
    put(store, rec("a"))
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.put(rec("b"))
        tx.update("a", comment="lost")
        raise RuntimeError("boom")
    assert store.revision() == 1
    assert store.get("b") is None
    assert store.get("a").comment is None


def test_delete_bumps_revision(store):
    put(store, rec("a"), rec("b"))
    assert store.revision() == 1
    assert store.delete(["a"]) == 1
    assert store.revision() == 2


def test_update_of_missing_key_does_not_bump_revision(store):
    put(store, rec("a"))
    with store.write() as tx:
        tx.update("missing", comment="x")
    assert store.revision() == 1


def test_changed_since(store):
    put(store, rec("a"))
    r1 = store.revision()
    put(store, rec("b"))
    r2 = store.revision()
    store.annotate("a", comment="later")
    assert store.changed_since(0) and sorted(keys(store.changed_since(0))) == ["a", "b"]
    assert sorted(keys(store.changed_since(r1))) == ["a", "b"]
    assert keys(store.changed_since(r2)) == ["a"]
    assert store.changed_since(store.revision()) == []


# -- select ----------------------------------------------------------------------------


@pytest.fixture
def populated(store):
    put(
        store,
        rec("k1", state=JobState.PENDING, name="alpha", submitted=1.0, tags=["sweep", "x"]),
        rec("k2", state=JobState.RUNNING, name="beta", submitted=2.0, comment="looks good"),
        rec("k3", state=JobState.COMPLETED, name="gamma", submitted=3.0, backend="slurm"),
        rec("k4", state=JobState.FAILED, name="delta", submitted=4.0, host="other", tags=["retry"]),
        rec("k5", state=JobState.HELD, name="epsilon", submitted=5.0),
        rec("k6", state=JobState.TIMEOUT, name="zeta", submitted=6.0, user_state="analysed"),
    )
    return store


def test_select_all_in_submission_order(populated):
    assert keys(populated.select()) == ["k1", "k2", "k3", "k4", "k5", "k6"]


@pytest.mark.parametrize(
    "state, expected",
    [
        (JobState.RUNNING, ["k2"]),
        ("running", ["k2"]),
        (["failed", JobState.COMPLETED], ["k3", "k4"]),
        ("active", ["k1", "k2", "k5"]),
        ("finished", ["k3", "k4", "k6"]),
        (["active", "timeout"], ["k1", "k2", "k5", "k6"]),
        ("lost", []),
    ],
)
def test_select_by_state(populated, state, expected):
    assert keys(populated.select(state)) == expected


def test_active_and_finished_cover_every_state():
    assert set(JobState) == ACTIVE_STATES | FINAL_STATES
    assert not ACTIVE_STATES & FINAL_STATES


def test_select_by_backend_and_host(populated):
    assert keys(populated.select(backend="slurm")) == ["k3"]
    assert keys(populated.select(host="other")) == ["k4"]
    assert keys(populated.select("finished", backend="local", host="here")) == ["k6"]
    both = populated.select(host=["other", "here"])  # several hosts: any of them
    assert sorted(keys(both)) == sorted(keys(populated.select()))
    assert populated.count(host=("other", "nowhere")) == 1


@pytest.mark.parametrize(
    "match, expected",
    [
        ("^alpha$", ["k1"]),  # name
        ("good", ["k2"]),  # comment
        ("sweep", ["k1"]),  # tags
        ("retry", ["k4"]),
        ("analysed", ["k6"]),  # user_state
        ("^k[34]$", ["k3", "k4"]),  # key
        ("ta$", ["k2", "k4", "k6"]),  # beta, delta, zeta
        ("timeout", ["k6"]),  # state
        ("nothing-like-this", []),
    ],
)
def test_select_by_regex(populated, match, expected):
    assert keys(populated.select(match=match)) == expected


def test_select_regex_with_state_and_fields(populated):
    assert keys(populated.select("active", match="a")) == ["k1", "k2", "k5"]
    assert keys(populated.select(match="good", fields=["name"])) == []
    assert keys(populated.select(match="^gamma$", fields=["name", "comment"])) == ["k3"]


def test_select_bad_regex(populated):
    with pytest.raises(ValueError, match=r"bad regular expression '\(unclosed'"):
        populated.select(match="(unclosed")


def test_select_the_newest_and_count(populated):
    assert keys(populated.select(newest=2)) == ["k5", "k6"]  # still oldest first
    assert keys(populated.select("active", newest=2)) == ["k2", "k5"]
    assert keys(populated.select(match="ta$", newest=2)) == ["k4", "k6"]
    assert keys(populated.select(newest=100)) == keys(populated.select())
    assert populated.select(newest=0) == []
    assert populated.count() == 6 and populated.count("active") == 3
    assert populated.count(match="ta$") == 3 and populated.count(match="sweep|retry") == 2
    assert populated.count(backend="slurm", match="nothing") == 0


def test_iter_select_streams_what_select_returns(populated):
    rows = populated.iter_select("finished", match="a")
    assert next(rows).key == "k3"  # read as used
    assert keys(rows) == ["k4", "k6"]
    with pytest.raises(ValueError, match="unknown state 'finishd'"):
        populated.iter_select("finishd")  # at once, not when first read


def test_select_unknown_state_lists_valid_states(populated):
    with pytest.raises(ValueError) as info:
        populated.select("runing")
    message = str(info.value)
    assert "'runing'" in message
    for s in [*list(JobState), "active", "finished"]:
        assert str(s) in message


def test_active(populated):
    assert sorted(keys(populated.active("local", "here"))) == ["k1", "k2", "k5"]
    assert populated.active("slurm", "here") == []


# -- the drivers' named queries ----------------------------------------------------------
QUEUED = (JobState.PENDING, JobState.HELD)
RUNNING = (JobState.RUNNING, JobState.SUSPENDED)


def test_jobs_in_by_backend_host_states_and_submission(store):
    put(
        store,
        rec("b", state=JobState.PENDING, submitted=2.0, job_id="12"),
        rec("a", state=JobState.HELD, submitted=1.0),
        rec("c", state=JobState.PENDING, submitted=3.0, host="other"),
        rec("d", state=JobState.PENDING, submitted=0.5, backend="slurm"),
        rec("e", state=JobState.RUNNING, submitted=0.1, cores=3),
        rec("f", state=JobState.SUSPENDED, submitted=0.2, cores=2),
    )
    assert keys(store.jobs_in("local", "here", QUEUED)) == ["a", "b"]  # oldest first
    assert keys(store.jobs_in("local", "here", QUEUED, submitted=False)) == ["a"]
    assert keys(store.jobs_in("local", "here", QUEUED, submitted=True)) == ["b"]
    assert keys(store.jobs_in("slurm", "here", QUEUED)) == ["d"]
    assert store.any_in("local", "here", [JobState.HELD])
    assert not store.any_in("local", "other", [JobState.HELD])
    with store.write() as tx:  # the same queries inside a transaction
        assert tx.cores_in("local", "here", RUNNING) == 5
        assert tx.cores_in("local", "other", RUNNING) == 0
        assert keys(tx.jobs_in("local", "here", RUNNING)) == ["e", "f"]


def test_queue_head_gives_light_columns_of_pending_jobs_in_order(store):
    put(
        store,
        rec("x", state=JobState.PENDING, submitted=2.0, cores=4, deps=["y"]),
        rec(
            "y", state=JobState.PENDING, submitted=1.0, resources={"begin": "2030-01-01T00:00:00Z"}
        ),
        rec("z", state=JobState.HELD, submitted=0.5),
    )
    with store.write() as tx:
        head = list(tx.queue_head("local", "here"))
        assert [(q.key, q.cores, q.has_deps, q.begin) for q in head] == [
            ("y", 1, False, "2030-01-01T00:00:00Z"),
            ("x", 4, True, None),
        ]
        assert [q.key for q in tx.queue_head("local", "here", limit=1)] == ["y"]


def test_past_deadline_finds_queued_jobs_whose_deadline_passed(store):
    at = "2030-01-01T00:00:00Z"
    put(
        store,
        rec("p", state=JobState.PENDING, resources={"deadline": at}),
        rec("h", state=JobState.HELD, resources={"deadline": at}),
        rec("r", state=JobState.RUNNING, resources={"deadline": at}),
        rec("n", state=JobState.PENDING),
    )
    deadline = 1893456000.0  # 2030-01-01T00:00:00Z
    assert store.past_deadline("local", "here", deadline - 1) == []
    assert sorted(keys(store.past_deadline("local", "here", deadline))) == ["h", "p"]
    with store.write() as tx:
        assert sorted(keys(tx.past_deadline("local", "here", deadline + 60))) == ["h", "p"]
    assert store.past_deadline("local", "other", deadline + 60) == []


# -- annotate, delete, find ------------------------------------------------------------


def test_annotate(store):
    put(store, rec("k", modified=1.0), touch=False)
    got = store.annotate("k", comment="bad input", user_state="analysed", tags=["b", "a", "b"])
    assert got.comment == "bad input"
    assert got.user_state == "analysed"
    assert got.tags == ["a", "b"]
    assert got.modified > 1.0
    assert got.rev == store.revision() == 2
    assert store.get("k") == got
    again = store.annotate("k", tags=[])
    assert again.tags == [] and again.comment == "bad input"


def test_annotate_unknown_key(store):
    with pytest.raises(KeyError, match="nope"):
        store.annotate("nope", comment="x")
    assert store.revision() == 0


def test_delete(store):
    put(store, rec("a"), rec("b"), rec("c"))
    assert store.delete(["a", "c", "zzz"]) == 2
    assert keys(store.query()) == ["b"]
    assert store.delete([]) == 0


def test_find_by_prefix_and_job_id(store):
    put(
        store,
        rec("abc111"),
        rec("abc222", job_id="999"),
        rec("abd333"),
        rec("x_y"),
        rec("xzy"),
        rec("99x", job_id="12:34"),
    )
    assert sorted(keys(store.find("abc"))) == ["abc111", "abc222"]
    assert keys(store.find("abc1")) == ["abc111"]
    assert sorted(keys(store.find("ab"))) == ["abc111", "abc222", "abd333"]
    assert keys(store.find("999")) == ["abc222"]
    assert keys(store.find("12:34")) == ["99x"]
    assert keys(store.find("x_")) == ["x_y"]  # '_' is literal, not a wildcard
    assert store.find("%") == []  # '%' is literal too
    assert store.find("nothing") == []


# -- merge -----------------------------------------------------------------------------


def test_merge_newest_wins_both_ways(tmp_path):
    mine = new_store(tmp_path / "mine")
    theirs = new_store(tmp_path / "theirs")
    try:
        put(
            mine,
            rec("both_theirs_newer", name="mine-old", modified=100.0),
            rec("both_mine_newer", name="mine-new", modified=300.0),
            rec("same_time", name="mine-same", modified=200.0),
            rec("only_mine", name="m", modified=50.0),
            touch=False,
        )
        put(
            theirs,
            rec(
                "both_theirs_newer",
                name="theirs-new",
                modified=200.0,
                host="h2",
                state=JobState.COMPLETED,
                tags=["t"],
            ),
            rec("both_mine_newer", name="theirs-old", modified=150.0, host="h2"),
            rec("same_time", name="theirs-same", modified=200.0, host="h2"),
            rec("only_theirs", name="t", modified=10.0, host="h2", resources={"threads": 2}),
            touch=False,
        )
        theirs.close()
        rev_before = mine.revision()
        taken, kept = mine.merge(tmp_path / "theirs", host="remote")
        assert (taken, kept) == (2, 2)

        newer = mine.get("both_theirs_newer")
        assert newer.name == "theirs-new"
        assert newer.host == "remote"  # rewritten
        assert newer.state is JobState.COMPLETED and newer.tags == ["t"]
        assert newer.modified == 200.0  # not touched by the merge

        older = mine.get("both_mine_newer")
        assert older.name == "mine-new" and older.host == "here" and older.modified == 300.0
        assert mine.get("same_time").name == "mine-same"
        assert mine.get("only_mine").name == "m"

        only = mine.get("only_theirs")
        assert only.host == "remote" and only.resources == {"threads": 2}
        assert only.modified == 10.0

        assert mine.revision() == rev_before + 1
        assert sorted(keys(mine.changed_since(rev_before))) == ["both_theirs_newer", "only_theirs"]
        # the source cache is left as it was
        src = Store(tmp_path / "theirs")
        assert src.get("only_theirs").host == "h2"
        src.close()
    finally:
        mine.close()
        theirs.close()


def test_merge_relabels_only_the_other_machines_own_jobs(tmp_path):
    """job_manager's rule: the records of jobs that ran on the other cache's machine take
    --host; those it ran on a third host over SSH keep theirs."""
    made_on = os.uname().nodename  # the machine a cache is made on, as it records it
    theirs = new_store(tmp_path / "theirs")
    put(
        theirs,
        rec("local-job", host="laptop"),  # its local backend: its own machine, by that name
        rec("login-node-slurm", backend="slurm", host=made_on),  # sbatch run where it is
        rec("by-localhost", backend="sge", host="localhost"),
        rec("over-ssh", backend="slurm", host="me@cluster-b"),  # a third host
    )
    theirs.close()
    mine = new_store(tmp_path / "mine")
    try:
        assert mine.merge(tmp_path / "theirs", host="cluster-a") == (4, 0)
        hosts = {r.key: r.host for r in mine.select()}
        assert hosts == {
            "local-job": "cluster-a",
            "login-node-slurm": "cluster-a",
            "by-localhost": "cluster-a",
            "over-ssh": "me@cluster-b",
        }
    finally:
        mine.close()


def test_merge_from_database_file_and_again_is_idempotent(tmp_path):
    mine = new_store(tmp_path / "mine")
    theirs = new_store(tmp_path / "theirs")
    try:
        put(theirs, rec("k", modified=5.0), touch=False)
        theirs.close()
        assert mine.merge(tmp_path / "theirs" / DB_NAME, host="r") == (1, 0)
        rev = mine.revision()
        assert mine.merge(tmp_path / "theirs", host="r") == (0, 1)
        assert mine.revision() == rev
    finally:
        mine.close()


def test_merge_missing_or_corrupt_source(tmp_path, store):
    with pytest.raises(CacheError, match="no job cache"):
        store.merge(tmp_path / "nowhere", host="r")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CacheError, match="cannot be read"):
        store.merge(bad, host="r")


def test_missing_cache_directory_is_not_reported_as_corrupt(tmp_path):
    missing = tmp_path / "not" / "yet"
    try:
        s = Store(missing)
    except CacheError as e:
        assert "move it aside" not in str(e)
        assert "mv " not in str(e)
        assert str(missing) in str(e)
    else:
        s.close()
        assert (missing / DB_NAME).is_file()


# -- damaged caches --------------------------------------------------------------------


def test_schema_version_mismatch(tmp_path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("UPDATE meta SET v = ? WHERE k = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(CacheError) as info:
        Store(tmp_path)
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"reads version {SCHEMA_VERSION}" in message
    assert str(tmp_path / DB_NAME) in message


def test_corrupt_database_is_reported_and_left_alone(tmp_path):
    garbage = bytes(range(256)) * 64
    db = tmp_path / DB_NAME
    db.write_bytes(garbage)
    with pytest.raises(CacheError) as info:
        Store(tmp_path)
    message = str(info.value)
    assert str(db) in message
    assert "move it aside" in message
    assert db.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]


def test_cache_error_is_not_a_sqlite_error(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"\x00garbage" * 200)
    with pytest.raises(CacheError) as info:
        Store(tmp_path)
    assert not isinstance(info.value, sqlite3.Error)


# -- concurrency -----------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from hpcexec.record import JobRecord
    from hpcexec.store import Store
    cache, tag = sys.argv[1], sys.argv[2]
    s = Store(cache)
    for i in range(300):
        with s.write() as tx:
            tx.put(JobRecord(key=f"{tag}-{i:03d}", backend="local", host=tag, kind="call",
                             jobdir=f"/j/{tag}/{i}"))
    s.close()
""")


def test_two_processes_write_concurrently(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    Store(cache).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(cache), tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tag in ("p1", "p2")
    ]
    results = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err.decode()
        assert err == b""
    s = Store(cache)
    try:
        records = s.query()
        assert len(records) == 600
        assert len({r.key for r in records}) == 600
        assert sum(r.host == "p1" for r in records) == 300
        assert s.revision() == 600  # every insert was its own transaction
        assert len({r.rev for r in records}) == 600
    finally:
        s.close()


def test_store_waits_for_a_client_initialising_a_new_cache(tmp_path):
    holder = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # like another client half way through creating it
    holder.execute("CREATE TABLE other_client (x)")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        s = Store(tmp_path)
        s.close()
    finally:
        release.join()
        holder.close()


# -- a store file removed or replaced under an open store -------------------------------


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_store_removed_under_a_client_is_noticed_and_rewritten(store, caplog):
    put(store, rec("a", state=JobState.COMPLETED), rec("b"))
    seen = store.revision()
    _remove_db(store.path)
    with caplog.at_level("WARNING", logger="hpcexec.store"), store.write() as tx:
        tx.update("b", state=JobState.RUNNING)
    assert "removed or replaced" in caplog.text
    assert store.path.is_file()
    fresh = Store(store.path.parent)
    try:  # what the open client knew, and its change, are in the new file
        got = {r.key: r.state for r in fresh.query()}
        assert got == {"a": JobState.COMPLETED, "b": JobState.RUNNING}
        assert fresh.revision() > seen  # a monitor's last-seen revision stays behind
        assert {r.key for r in fresh.changed_since(seen)} == {"a", "b"}
    finally:
        fresh.close()


def test_store_replaced_by_an_older_copy_keeps_the_newest_records(tmp_path, store):
    put(store, rec("a"), rec("b"))
    backup = tmp_path / "backup"
    backup.mkdir()
    with sqlite3.connect(store.path) as src, sqlite3.connect(backup / DB_NAME) as dst:
        src.backup(dst)
    copy = Store(backup)  # the copy also holds a record this client never saw
    put(copy, rec("d"))
    copy.close()
    put(store, rec("a", state=JobState.COMPLETED))
    _remove_db(store.path)
    (backup / DB_NAME).rename(store.path)  # the backup restored under the running client
    with store.write() as tx:
        tx.update("b", comment="seen")
    fresh = Store(store.path.parent)
    try:
        got = {r.key: (r.state, r.comment) for r in fresh.query()}
        assert got == {
            "a": (JobState.COMPLETED, None),
            "b": (JobState.PENDING, "seen"),
            "d": (JobState.PENDING, None),
        }
    finally:
        fresh.close()


def test_store_noticed_removed_by_a_monitor_pass_that_only_reads(store):
    put(store, rec("a"))
    _remove_db(store.path)
    assert [r.key for r in store.changed_since(0)] == ["a"]
    assert store.path.is_file()


def test_cache_directory_removed_under_a_client_is_said(tmp_path):
    s = Store(tmp_path / "cache")
    put(s, rec("a"))
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(CacheError, match=r"cache directory .* was removed"), s.write() as tx:
        tx.update("a", comment="lost")
    assert not (tmp_path / "cache").exists()  # not made again behind the user's back
    s.close()


def test_store_removed_while_threads_write_loses_no_change(store, caplog):
    put(store, *(rec(f"t{i}-{j}") for i in range(6) for j in range(60)))
    removed = threading.Event()

    def writer(i: int) -> None:
        for j in range(60):
            if i == 0 and j == 10:
                _remove_db(store.path)
                removed.set()
            with store.write() as tx:
                tx.update(f"t{i}-{j}", comment="done")
            if j == 5 and i:  # the others write on, into the file as it is, meanwhile
                removed.wait(10)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    with caplog.at_level("WARNING", logger="hpcexec.store"):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert caplog.text.count("removed or replaced") == 1
    fresh = Store(store.path.parent)
    try:
        assert sorted(r.comment or "" for r in fresh.query()) == ["done"] * 360
    finally:
        fresh.close()


def test_a_cache_another_process_keeps_busy_says_so_and_by_whom(tmp_path, monkeypatch):
    """Not a raw "database is locked", nor advice to move a "corrupt" cache aside."""
    from hpcexec import store_schema

    store = Store(tmp_path / "cache")
    put(store, rec("a"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sqlite3, sys, time
                c = sqlite3.connect({str(store.path)!r}, isolation_level=None)
                c.execute("BEGIN IMMEDIATE")
                print("holding", flush=True)
                time.sleep(30)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        monkeypatch.setattr(store_schema, "BUSY_TIMEOUT", 0.5)
        busy = Store(tmp_path / "cache")
        with pytest.raises(CacheError) as info:
            with busy.write() as tx:
                tx.update("a", comment="later")
        message = str(info.value)
        assert "has been busy for over 0.5 s: another process is writing to it" in message
        assert f"open in {holder.pid} (python" in message and "run again once it is done" in message
        assert "corrupt" not in message and "aside" not in message
        assert busy.get("a") is not None  # reading goes on (WAL)
    finally:
        holder.kill()
        holder.wait()
    with Store(tmp_path / "cache").write() as tx:  # free again
        tx.update("a", comment="later")


def test_row_data_is_the_record_as_json_without_building_it():
    from dataclasses import asdict

    from hpcexec.record import FIELD_NAMES, row_data

    full = rec("a", tags=["x"], comment="c")
    full.resources = {"time": 60}
    full.attempts = [{"job_id": "1", "state": "failed"}]
    want = {**asdict(full), "state": full.state.value}
    assert row_data(full.to_row()) == want
    assert list(row_data(full.to_row())) == list(FIELD_NAMES)  # one order for every listing
    old = {k: v for k, v in full.to_row().items() if k not in ("summary", "attempts")}
    assert "summary" not in row_data(old) and row_data(old)["tags"] == ["x"]  # an older file's
    assert JobRecord.from_row(full.to_row()) == full  # type: ignore[arg-type]
