"""Nothing finished is lost when the store is lost: each job directory carries what a
lookup by key needs to rebuild its record, and a store file removed or replaced under a
running client is noticed and written again."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import jobfns
import pytest
from livecluster import running as started

import hpcexec
from hpcexec import JobState
from hpcexec.errors import TransportError
from hpcexec.jobfiles import write_started
from hpcexec.recovery import Submitted, note_job_ids, started_as
from hpcexec.store_schema import DB_NAME
from hpcexec.transport.local import LocalShell

N = 20


def remove_store(cache: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (cache / f"{DB_NAME}{suffix}").unlink(missing_ok=True)


def runs(counter: Path) -> list[str]:
    return sorted(counter.read_text().split(), key=int) if counter.exists() else []


def run_map(cache: Path, counter: Path, n: int = N, seconds: float = 0.0) -> list[int]:
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        return list(
            ex.map(jobfns.count_run, [str(counter)] * n, range(n), [seconds] * n, chunksize=1)
        )


def test_lost_store_reruns_no_finished_job(cache, tmp_path):
    counter = tmp_path / "runs"
    assert run_map(cache, counter) == [10 * i for i in range(N)]
    remove_store(cache)
    assert run_map(cache, counter) == [10 * i for i in range(N)]
    assert runs(counter) == [str(i) for i in range(N)]  # each task ran once
    store = hpcexec.Store(cache)
    records = store.select()
    assert len(records) == N
    assert all(r.state is JobState.COMPLETED and r.job_id and r.exit_code == 0 for r in records)
    store.close()


def test_restored_old_backup_reruns_no_finished_job(cache, tmp_path):
    counter = tmp_path / "runs"
    run_map(cache, counter, N // 2)
    backup = tmp_path / "backup.sqlite"
    with sqlite3.connect(cache / DB_NAME) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        held = ex.options(hold=True).submit(jobfns.count_run, str(counter), 100)
        with sqlite3.connect(cache / DB_NAME) as src, sqlite3.connect(backup) as dst:
            src.backup(dst)  # the backup: half the map, and a job held, never started
        held.release()
        assert held.result(timeout=60) == 1000
    assert run_map(cache, counter) == [10 * i for i in range(N)]
    remove_store(cache)
    shutil.copy(backup, cache / DB_NAME)
    assert run_map(cache, counter) == [10 * i for i in range(N)]
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        again = ex.submit(jobfns.count_run, str(counter), 100)
        assert again.result(timeout=60) == 1000
    assert runs(counter) == [str(i) for i in range(N)] + ["100"]


def test_store_removed_under_a_running_map(cache, tmp_path, caplog):
    counter = tmp_path / "runs"
    with (
        caplog.at_level(logging.WARNING, logger="hpcexec.store"),
        hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex,
    ):
        fs = ex.map(jobfns.count_run, [str(counter)] * N, range(N), [0.2] * N, chunksize=1)
        first = [next(fs) for _ in range(3)]
        remove_store(cache)
        rest = list(fs)
    assert first + rest == [10 * i for i in range(N)]
    assert "removed or replaced" in caplog.text
    store = hpcexec.Store(cache)  # the running client wrote what it knew into a new file
    assert len(store.select("finished")) == N
    store.close()
    assert run_map(cache, counter, seconds=0.2) == [10 * i for i in range(N)]
    assert runs(counter) == [str(i) for i in range(N)]


def test_lost_store_shell_job_is_not_run_again(cache, tmp_path):
    marker = tmp_path / "marker"
    body = f"echo ran >> {marker}; echo out; echo err >&2"
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        first = ex.submit_shell(body, check=False).result(timeout=60)
    remove_store(cache)
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        f = ex.submit_shell(body, check=False)
        again = f.result(timeout=60)
        assert f.done()
    assert (again.returncode, again.stdout, again.stderr) == (0, "out\n", "err\n")
    assert again == first
    assert marker.read_text() == "ran\n"


def test_attach_by_key_after_the_store_is_lost(cache, tmp_path):
    counter = tmp_path / "runs"
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        key = ex.submit(jobfns.count_run, str(counter), 4).key
        running = ex.submit(jobfns.count_run, str(counter), 5, 3.0)
        started(running)
        remove_store(cache)
        with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as other:
            assert other.attach(key).result(timeout=60) == 40
            # a job still running is re-inserted running with its job id, then followed
            assert other.attach(running.key).result(timeout=60) == 50
        assert running.result(timeout=60) == 50
    assert runs(counter) == ["4", "5"]


def test_attach_takes_the_record_another_client_put_back_while_it_rebuilt(cache, monkeypatch):
    """The old client still running puts its records back into the new cache (it found the
    file replaced) while attach rebuilds the same record from its directory: that record
    stands, and attach follows it."""
    from hpcexec import recovery

    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        f = ex.submit(jobfns.double, 21)
        assert f.result(timeout=60) == 42
        rec = ex.store.get(f.key)
    remove_store(cache)
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as other:
        rebuild = recovery.rebuild

        def racing(*args, **kwargs):
            found = rebuild(*args, **kwargs)
            with other.store.write() as tx:  # the other client, meanwhile
                tx.put(rec)
            return found

        monkeypatch.setattr(recovery, "rebuild", racing)
        assert other.attach(f.key).result(timeout=60) == 42


def test_failed_job_keeps_its_failure_after_the_store_is_lost(cache):
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        f = ex.submit(jobfns.fail, "once")
        with pytest.raises(ValueError):
            f.result(timeout=60)
        f_submitted = ex.store.get(f.key).submitted
    remove_store(cache)
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        g = ex.options(retry=False).submit(jobfns.fail, "once")
        with pytest.raises(ValueError, match="once"):
            g.result(timeout=60)
        rec = ex.store.get(g.key)
        assert rec is not None and rec.state is JobState.FAILED and rec.exit_code != 0
        assert rec.submitted == f_submitted  # the record rebuilt, not a new submission


def test_planted_record_file_is_not_trusted(cache, tmp_path):
    counter = tmp_path / "runs"
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        key = ex.submit(jobfns.count_run, str(counter), 7).key
    remove_store(cache)
    record = cache / "jobs" / key / "record.json"
    data = record.read_bytes()
    record.write_bytes(data.replace(b'"kind": "call"', b'"kind": "chunk"'))  # seal broken
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        with pytest.raises(hpcexec.UnknownJob):
            ex.attach(key)
        assert ex.submit(jobfns.count_run, str(counter), 7).result(timeout=60) == 70
    assert runs(counter) == ["7", "7"]  # run again, as if it had never been


def test_local_job_started_but_not_yet_saying_so_is_not_started_twice(cache, tmp_path):
    """The client started the job and died, and the store was lost, before the job wrote
    its started file: the job id file the client wrote at the start is adopted."""
    counter = tmp_path / "runs"
    client = f"""if True:
        import os, time, hpcexec, jobfns
        ex = hpcexec.Executor(cache_dir={str(cache)!r})
        f = ex.options(key="early").submit(jobfns.count_run, {str(counter)!r}, 6, 3.0)
        while not os.path.exists(os.path.join(f.record.jobdir, "started")):
            time.sleep(0.05)
        os._exit(0)
    """
    subprocess.run(
        [sys.executable, "-c", client], cwd=Path(jobfns.__file__).parent, check=True, timeout=120
    )
    (cache / "jobs" / "early" / "started").unlink()  # as if it had not got that far
    remove_store(cache)
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        f = ex.options(key="early").submit(jobfns.count_run, str(counter), 6, 3.0)
        assert f.result(timeout=60) == 60
    assert runs(counter) == ["6"]


def test_job_id_files_of_an_array_start_no_process_per_element(tmp_path, monkeypatch):
    """An array's job id files are written together, each whole (renamed into place), with
    no process per element: a shell loop forking `mv` per element took a second for 50
    elements here, on the monitor's path between `sbatch` and the first status."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    forks = tmp_path / "forks"
    (bin_dir / "mv").write_text(f'#!/bin/sh\necho mv >> {forks}\nexec /bin/mv "$@"\n')
    (bin_dir / "mv").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    dirs = [tmp_path / "a 'b' c" / f"job {i}" for i in range(3)]
    for d in dirs:
        d.mkdir(parents=True)
    what = {
        str(d): Submitted(f"77_{i}", i, str(tmp_path / "arrays/x y")) for i, d in enumerate(dirs)
    }
    note_job_ids(LocalShell(), what)
    for d in dirs:
        assert Submitted.parse((d / "jobid").read_text()) == what[str(d)]
        assert started_as(LocalShell(), str(d)) == what[str(d)].job_id
        assert sorted(p.name for p in d.iterdir()) == ["jobid"]  # no temporary file left
    assert not forks.exists()
    assert Submitted.parse("123\n") == Submitted("123")
    assert started_as(LocalShell(), str(tmp_path)) is None


def test_a_job_writes_its_job_id_file_with_its_started_file(tmp_path):
    """A fork server's child writes the job id file itself (its client leaves it to it): the
    same id, in place before the started file, and still there once that is gone."""
    (tmp_path / "jobid").write_text("999:1\n")  # an earlier one, replaced
    write_started(tmp_path, "123:456", with_job_id=True)
    assert started_as(LocalShell(), str(tmp_path)) == "123:456"
    (tmp_path / "started").unlink()
    assert started_as(LocalShell(), str(tmp_path)) == "123:456"
    assert Submitted.parse((tmp_path / "jobid").read_text()) == Submitted("123:456")
    assert [p.name for p in tmp_path.iterdir()] == ["jobid"], "a temporary file was left"


class _Unreachable(LocalShell):
    """A host the connection to which dropped: every command raises TransportError."""

    def run(self, argv, **kwargs):
        raise TransportError("the SSH connection to h dropped during a command")

    def stage(self, dirs, files, links=None):
        raise TransportError("the SSH connection to h dropped during write 2 files")


def test_job_ids_that_cannot_be_kept_are_said_not_raised(tmp_path, caplog):
    """The record holds the ids; a dropped connection while writing their files only warns."""
    what = {str(tmp_path / f"j{i}"): Submitted(f"8_{i}", i) for i in range(2)}
    with caplog.at_level(logging.WARNING, logger="hpcexec.recovery"):
        note_job_ids(_Unreachable(), what)
    assert "could not keep the job ids of 2 job(s)" in caplog.text and "dropped" in caplog.text


def test_lost_store_runs_no_epilogue_twice(cache, tmp_path):
    marker = tmp_path / "epilogue"
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        view = ex.options(epilogue=f"echo ran >> {marker}")
        assert view.submit(jobfns.double, 4).result(timeout=60) == 8
    remove_store(cache)
    with hpcexec.Executor(cache_dir=cache, poll_interval=0.05) as ex:
        f = ex.options(epilogue=f"echo ran >> {marker}").submit(jobfns.double, 4)
        assert f.result(timeout=60) == 8
        assert ex.store.get(f.key).epilogue_state == "done"
    assert marker.read_text() == "ran\n"
