"""Tests of the in-job runner: `python -m hpcexec.runner JOBDIR KEYFILE` in a real subprocess."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest

from hpcexec.errors import CacheError, RemoteError, RemoteTraceback
from hpcexec.integrity import SECRETS, KeyRing, key_id, seal, unseal
from hpcexec.jobfiles import parse_exitcode
from hpcexec.layout import CHECKPOINT, EXITCODE, PAYLOAD, RESULT
from hpcexec.payload import dumps_payload, load_outcomes, outcome_value

TEST_KEY = b"k" * 32


def key_file(jobdir: Path, key: bytes = TEST_KEY) -> Path:
    """Where the executor puts the key for the jobs of ``jobdir``: <files dir>/secrets/<id>."""
    return jobdir.parent.parent / SECRETS / key_id(key)


def install_key(jobdir: Path, key: bytes = TEST_KEY) -> None:
    """Put the key where :func:`key_file` says, private as the executor makes it."""
    path = key_file(jobdir, key)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(key)
    path.chmod(0o600)


def runner_argv(jobdir: Path) -> list[str]:
    """The command a job script runs: the runner, its job directory and its key file."""
    return [sys.executable, "-m", "hpcexec.runner", str(jobdir), str(key_file(jobdir))]


def write_payload(jobdir: Path, fn, calls, *, kind="call", sys_path=(), by_value=()) -> None:
    jobdir.mkdir(parents=True, exist_ok=True)
    install_key(jobdir)
    data, _ = dumps_payload(fn, calls, kind=kind, sys_path=sys_path, by_value=by_value)
    (jobdir / PAYLOAD).write_bytes(seal(TEST_KEY, data))


def run_runner(jobdir: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(runner_argv(jobdir), capture_output=True, timeout=timeout, cwd=jobdir)


def outcomes(jobdir: Path) -> list[bytes]:
    path = jobdir / RESULT
    data, _ = unseal(path.read_bytes(), KeyRing(TEST_KEY), str(path))
    return load_outcomes(data, str(path))


def exitcode_text(jobdir: Path) -> str:
    return (jobdir / EXITCODE).read_text()


def leftovers(jobdir: Path) -> list[str]:
    return sorted(p.name for p in jobdir.iterdir() if p.name.startswith("."))


# -- success and errors ----------------------------------------------------------------


def test_successful_call(tmp_path):
    def add(a, b, *, scale=1):
        return {"sum": (a + b) * scale, "pid": os.getpid()}

    write_payload(tmp_path, add, [((2, 3), {"scale": 10})])
    proc = run_runner(tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert exitcode_text(tmp_path) == "0\n\n"
    items = outcomes(tmp_path)
    assert len(items) == 1
    value = outcome_value(items[0], "here")
    assert value["sum"] == 50
    assert value["pid"] != os.getpid()  # it really ran in the job process
    assert pickle.loads(items[0])[0] == "ok"
    assert leftovers(tmp_path) == []  # no temporary files left behind


def test_result_written_before_exit_code(tmp_path):
    # the exit-code file is the "finished" signal: the result must already be complete
    write_payload(tmp_path, pow, [((2, 10), {})])
    run_runner(tmp_path)
    assert (tmp_path / RESULT).stat().st_mtime_ns <= (tmp_path / EXITCODE).stat().st_mtime_ns
    assert outcome_value(outcomes(tmp_path)[0], "here") == 1024


def _chatty(x):
    print("the last line", x)  # to a file: buffered, not yet written
    return x


def test_the_jobs_output_is_written_before_its_exit_code(tmp_path, monkeypatch):
    # a client may take the exit-code file for the job's end before the process has
    # exited (and flushed at exit): what the job printed must be in its file by then
    from hpcexec import runner

    write_payload(tmp_path / "job", _chatty, [((7,), {})])
    with open(tmp_path / "stdout", "w", buffering=8192) as out:  # as a job's stdout: a file
        monkeypatch.setattr(sys, "stdout", out)
        assert runner.run(tmp_path / "job", key_file(tmp_path / "job")) == 0
        assert (tmp_path / "job" / EXITCODE).exists()
        assert (tmp_path / "stdout").read_text() == "the last line 7\n"


def test_a_job_started_without_stdout_still_writes_its_exit_code(tmp_path, monkeypatch):
    from hpcexec import runner

    write_payload(tmp_path / "job", pow, [((2, 3), {})])
    monkeypatch.setattr(sys, "stdout", None)  # as Python sets it when fd 1 was closed
    assert runner.run(tmp_path / "job", key_file(tmp_path / "job")) == 0
    assert parse_exitcode((tmp_path / "job" / EXITCODE).read_text()) == (0, None)


def test_call_raising_value_error(tmp_path):
    def fail(x):
        raise ValueError(f"bad x: {x}")

    write_payload(tmp_path, fail, [((7,), {})])
    proc = run_runner(tmp_path)
    assert proc.returncode == 1
    assert exitcode_text(tmp_path) == "1\n\n"
    items = outcomes(tmp_path)
    assert len(items) == 1
    tag, exc, tb, type_name, message = pickle.loads(items[0])
    assert tag == "err"
    assert isinstance(pickle.loads(exc), ValueError) and str(pickle.loads(exc)) == "bad x: 7"
    assert (type_name, message) == ("builtins.ValueError", "bad x: 7")
    assert "Traceback (most recent call last)" in tb
    assert "ValueError: bad x: 7" in tb
    assert "in fail" in tb
    with pytest.raises(ValueError, match="bad x: 7") as info:
        outcome_value(items[0], "here")
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "ValueError: bad x: 7" in info.value.__cause__.tb


def test_system_exit_in_the_call_is_reported_not_fatal(tmp_path):
    write_payload(tmp_path, sys.exit, [((3,), {})])
    proc = run_runner(tmp_path)
    assert proc.returncode == 1
    with pytest.raises(SystemExit) as info:
        outcome_value(outcomes(tmp_path)[0], "here")
    assert info.value.code == 3


def test_chunk_with_one_failing_element(tmp_path):
    def inverse(x):
        return 12 // x

    write_payload(tmp_path, inverse, [((x,), {}) for x in (1, 2, 0, 4)], kind="chunk")
    proc = run_runner(tmp_path)
    assert proc.returncode == 1
    assert exitcode_text(tmp_path) == "1\n\n"
    items = outcomes(tmp_path)
    assert len(items) == 4
    assert outcome_value(items[0], "r") == 12
    assert outcome_value(items[1], "r") == 6
    with pytest.raises(ZeroDivisionError) as info:
        outcome_value(items[2], "r")
    assert "ZeroDivisionError" in info.value.__cause__.tb
    assert outcome_value(items[3], "r") == 3


def test_chunk_all_ok(tmp_path):
    write_payload(tmp_path, str.upper, [(("a",), {}), (("b",), {})], kind="chunk")
    assert run_runner(tmp_path).returncode == 0
    assert [outcome_value(i, "r") for i in outcomes(tmp_path)] == ["A", "B"]


# -- import paths ----------------------------------------------------------------------


@pytest.fixture
def private_module(tmp_path, monkeypatch):
    """A module importable here only through an added path, as a user's script dir is."""
    moddir = tmp_path / "userlib"
    moddir.mkdir()
    name = f"hpcexec_test_usermod_{os.getpid()}"
    (moddir / f"{name}.py").write_text(
        textwrap.dedent("""
        import sys
        def triple(x):
            return (3 * x, __name__, sys.path.index(__file__.rsplit("/", 1)[0]))
    """)
    )
    monkeypatch.syspath_prepend(str(moddir))
    module = __import__(name)
    yield moddir, module
    sys.modules.pop(name, None)


def test_payload_needs_header_sys_path(tmp_path, private_module):
    moddir, module = private_module
    jobdir = tmp_path / "job"
    write_payload(jobdir, module.triple, [((5,), {})], sys_path=[str(moddir)])
    proc = run_runner(jobdir)
    assert proc.returncode == 0, proc.stderr.decode()
    value, modname, index = outcome_value(outcomes(jobdir)[0], "r")
    assert value == 15
    assert modname == module.__name__
    assert index == 1  # inserted after the script's own directory entry


def test_payload_without_sys_path_reports_the_import_error(tmp_path, private_module):
    _, module = private_module
    jobdir = tmp_path / "job"
    write_payload(jobdir, module.triple, [((5,), {})])
    proc = run_runner(jobdir)
    assert proc.returncode == 1
    code, reason = parse_exitcode(exitcode_text(jobdir))
    assert code == 1
    assert reason.startswith(f"cannot load the payload {jobdir / PAYLOAD}: ModuleNotFoundError")
    assert module.__name__ in reason and reason in proc.stderr.decode()
    items = outcomes(jobdir)
    assert len(items) == 1
    with pytest.raises(ModuleNotFoundError, match=module.__name__):
        outcome_value(items[0], "r")


def test_missing_payload_is_reported(tmp_path):
    jobdir = tmp_path / "files" / "jobs" / "job"
    jobdir.mkdir(parents=True)
    install_key(jobdir)
    proc = run_runner(jobdir)
    assert proc.returncode == 1
    code, reason = parse_exitcode(exitcode_text(jobdir))
    assert code == 1
    assert reason.startswith(f"cannot load the payload {jobdir / PAYLOAD}: FileNotFoundError")
    assert f"hpcexec: {reason}" in proc.stderr.decode()
    assert not (jobdir / RESULT).exists()  # nothing to seal it with: the reason tells


def test_payload_whose_key_is_gone_is_reported(tmp_path):
    jobdir = tmp_path / "files" / "jobs" / "job"
    write_payload(jobdir, pow, [((2, 10), {})])
    for key in (jobdir.parent.parent / SECRETS).iterdir():
        key.unlink()
    proc = run_runner(jobdir)
    assert proc.returncode == 1
    _, reason = parse_exitcode(exitcode_text(jobdir))
    assert reason.startswith(f"cannot load the payload {jobdir / PAYLOAD}: IntegrityError")
    assert "does not exist" in reason and f"hpcexec: {reason}" in proc.stderr.decode()


def test_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hpcexec.runner"], capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"usage: python -m hpcexec.runner JOBDIR" in proc.stderr


def test_a_job_taking_the_value_of_a_failed_job_says_what_it_raised(tmp_path):
    from hpcexec.runner import DependencyFailed, FutureRef

    jobs = tmp_path / "files" / "jobs"

    def fail():
        raise ValueError("no value")

    write_payload(jobs / "a", fail, [((), {})])
    run_runner(jobs / "a")
    b = jobs / "b"
    b.mkdir()
    data, _ = dumps_payload(
        pow, [((FutureRef(str(jobs / "a"), 0, "keya"), 2), {})], kind="call", refs=True
    )
    (b / PAYLOAD).write_bytes(seal(TEST_KEY, data))
    assert run_runner(b).returncode == 1
    with pytest.raises(
        DependencyFailed,
        match=r"job keya, whose result this job takes, raised builtins.ValueError: no value",
    ):
        outcome_value(outcomes(b)[0], "r")


# -- results that plain pickle cannot write --------------------------------------------


def test_result_needing_cloudpickle(tmp_path):
    def make_multiplier(k):
        return lambda x: x * k

    write_payload(tmp_path, make_multiplier, [((3,), {})])
    proc = run_runner(tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    fn = outcome_value(outcomes(tmp_path)[0], "r")
    assert fn(14) == 42


def test_unpicklable_result_becomes_a_type_error(tmp_path):
    def make_lock():
        import threading

        return threading.Lock()

    write_payload(tmp_path, make_lock, [((), {})])
    run_runner(tmp_path)
    items = outcomes(tmp_path)
    assert len(items) == 1
    with pytest.raises(TypeError, match="return value cannot be pickled") as info:
        outcome_value(items[0], "r")
    assert "lock" in str(info.value)
    assert isinstance(info.value.__cause__, RemoteTraceback)


def test_unpicklable_result_exits_nonzero(tmp_path):
    def make_lock():
        import threading

        return threading.Lock()

    write_payload(tmp_path, make_lock, [((), {})])
    proc = run_runner(tmp_path)
    assert exitcode_text(tmp_path) == "1\n\n"
    assert proc.returncode == 1


def test_unpicklable_exception_gets_a_stand_in(tmp_path):
    def raise_odd():
        import threading

        class Odd(Exception):
            pass

        raise Odd(threading.Lock())  # the exception's argument cannot be pickled

    write_payload(tmp_path, raise_odd, [((), {})])
    proc = run_runner(tmp_path)
    assert proc.returncode == 1
    with pytest.raises(RuntimeError, match="Odd") as info:
        outcome_value(outcomes(tmp_path)[0], "r")
    assert "raise Odd(" in info.value.__cause__.tb


# -- tracebacks of code pickled by value ----------------------------------------------

USER_CODE = """\
def helper(x):
    return 10 / x


def compute(x):
    def inner(y):
        return helper(y) + 1
    return inner(x)
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Import a module written to a private directory (a user's own code, sent by value)."""
    made = []

    def make(text: str):
        moddir = tmp_path / "userlib"
        moddir.mkdir(exist_ok=True)
        name = f"hpcexec_test_byvalue_{os.getpid()}_{len(made)}"
        (moddir / f"{name}.py").write_text(text)
        monkeypatch.syspath_prepend(str(moddir))
        made.append(name)
        return __import__(name)

    yield make
    for name in made:
        sys.modules.pop(name, None)


def test_traceback_of_by_value_code_shows_its_file_line_and_source(tmp_path, user_module):
    module = user_module(USER_CODE)
    jobdir = tmp_path / "job"
    write_payload(jobdir, module.compute, [((0,), {})], by_value=[module.__name__])
    path = Path(module.__file__)
    path.unlink()  # the job's host need not have the file: its lines travel with the payload
    proc = run_runner(jobdir)
    assert proc.returncode == 1
    with pytest.raises(ZeroDivisionError) as info:
        outcome_value(outcomes(jobdir)[0], "r")
    tb = info.value.__cause__.tb
    assert f'File "{path}", line 8, in compute\n    return inner(x)\n' in tb
    assert f'File "{path}", line 7, in inner\n    return helper(y) + 1\n' in tb
    assert f'File "{path}", line 2, in helper\n    return 10 / x\n' in tb


def test_only_the_lines_of_code_sent_by_value_travel(tmp_path, user_module):
    module = user_module("# " + "x" * 2_000_000 + "\n" + USER_CODE)
    jobdir = tmp_path / "job"
    write_payload(jobdir, module.compute, [((0,), {})], by_value=[module.__name__])
    assert (jobdir / PAYLOAD).stat().st_size < 20_000
    path = Path(module.__file__)
    path.unlink()
    run_runner(jobdir)
    with pytest.raises(ZeroDivisionError) as info:
        outcome_value(outcomes(jobdir)[0], "r")
    assert f'File "{path}", line 9, in compute\n    return inner(x)\n' in info.value.__cause__.tb
    assert f'File "{path}", line 3, in helper\n    return 10 / x\n' in info.value.__cause__.tb


def test_the_source_lines_shipped_are_capped(tmp_path, user_module):
    module = user_module("def compute(x):\n    # " + "x" * 2_000_000 + "\n    return 10 / x\n")
    jobdir = tmp_path / "job"
    write_payload(jobdir, module.compute, [((0,), {})], by_value=[module.__name__])
    assert (jobdir / PAYLOAD).stat().st_size < 20_000
    run_runner(jobdir)
    with pytest.raises(ZeroDivisionError) as info:
        outcome_value(outcomes(jobdir)[0], "r")
    assert f'File "{module.__file__}", line 3, in compute\n    return 10 / x\n' in (
        info.value.__cause__.tb
    )  # read from the file, which the job's host has here


def test_code_imported_in_the_job_shows_its_lines_beside_code_sent_by_value(tmp_path, user_module):
    module = user_module(
        textwrap.dedent("""\
        def make(k):
            def scaled(x):
                return check(x) * k
            return scaled


        def check(x):
            return 10 / x
    """)
    )
    jobdir = tmp_path / "job"
    path = Path(module.__file__)
    write_payload(jobdir, module.make(2), [((0,), {})], sys_path=[str(path.parent)])
    run_runner(jobdir)
    with pytest.raises(ZeroDivisionError) as info:
        outcome_value(outcomes(jobdir)[0], "r")
    tb = info.value.__cause__.tb
    assert f'File "{path}", line 3, in scaled\n    return check(x) * k\n' in tb  # by value
    assert f'File "{path}", line 8, in check\n    return 10 / x\n' in tb  # imported there


def test_the_payload_body_stays_cloudpickles_bytes():  # the cache key hashes it
    offset = 3

    def shift(x):
        return x + offset

    _, body = dumps_payload(shift, [((1,), {})], kind="call")
    assert body == cloudpickle.dumps(
        {"kind": "call", "fn": shift, "calls": [((1,), {})], "refs": False},
        protocol=pickle.HIGHEST_PROTOCOL,
    )


def _raiser(kind: str):
    """A function raising an exception whose ``__init__`` cannot take its own ``args`` back
    (local, so both travel by value)."""

    def two_arguments():
        class TwoArgs(Exception):
            def __init__(self, a, b):
                super().__init__(f"{a} and {b}")

        raise TwoArgs("first", "second")

    def keyword_only():
        class KeywordOnly(Exception):
            def __init__(self, *, code):
                super().__init__(f"code {code}")
                self.code = code

        raise KeywordOnly(code=7)

    return {"two": two_arguments, "keyword": keyword_only}[kind]


@pytest.mark.parametrize(
    "kind, name, message",
    [
        ("two", "two_arguments.<locals>.TwoArgs", "first and second"),
        ("keyword", "keyword_only.<locals>.KeywordOnly", "code 7"),
    ],
)
def test_exception_that_cannot_be_rebuilt_gets_a_stand_in(tmp_path, kind, name, message):
    fn = _raiser(kind)
    write_payload(tmp_path, fn, [((), {})])
    proc = run_runner(tmp_path)
    assert proc.returncode == 1
    with pytest.raises(RemoteError) as info:
        outcome_value(outcomes(tmp_path)[0], "r")
    err = info.value
    type_name = f"test_runner._raiser.<locals>.{name}"
    assert err.type_name == type_name and err.message == message
    assert str(err).startswith(f"{type_name}: {message} (")  # and why it is a stand-in
    assert isinstance(err.__cause__, RemoteTraceback) and err.remote_traceback == err.__cause__.tb
    assert f"in {fn.__name__}" in err.__cause__.tb and message in err.__cause__.tb


def test_damaged_result_file(tmp_path):
    with pytest.raises(CacheError, match="damaged"):
        load_outcomes(b"not a pickle", str(tmp_path / RESULT))
    with pytest.raises(CacheError, match="damaged"):
        load_outcomes(pickle.dumps({"not": "a list"}), "x")


# -- SIGTERM ---------------------------------------------------------------------------


def _start_and_term(jobdir: Path, marker: Path) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        runner_argv(jobdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=jobdir
    )
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.01)
        time.sleep(0.05)  # let it get into time.sleep
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigterm_during_a_call(tmp_path):
    marker = tmp_path / "marker"

    def slow(path):
        import time

        open(path, "w").close()
        time.sleep(30)
        return "finished"

    jobdir = tmp_path / "job"
    write_payload(jobdir, slow, [((str(marker),), {})])
    start = time.monotonic()
    proc = _start_and_term(jobdir, marker)
    assert time.monotonic() - start < 15
    assert proc.returncode == 143
    text = exitcode_text(jobdir)
    assert text.splitlines()[0] == "143"
    assert "SIGTERM" in text.splitlines()[1]
    assert parse_exitcode(text) == (143, "terminated by SIGTERM")
    assert not (jobdir / RESULT).exists()
    assert leftovers(jobdir) == []


def test_sigterm_during_a_chunk_keeps_finished_elements(tmp_path):
    marker = tmp_path / "marker"

    def work(i, path):
        import time

        if i == 2:
            open(path, "w").close()
            time.sleep(30)
        return i * 10

    jobdir = tmp_path / "job"
    write_payload(jobdir, work, [((i, str(marker)), {}) for i in range(4)], kind="chunk")
    proc = _start_and_term(jobdir, marker)
    assert proc.returncode == 143
    assert parse_exitcode(exitcode_text(jobdir)) == (143, "terminated by SIGTERM")
    assert [outcome_value(i, "r") for i in outcomes(jobdir)] == [0, 10]


def test_a_warning_while_the_payload_loads_is_kept_not_fatal(tmp_path):
    """Seen in CI: a checkpointable job warned 1 s after it started, on a loaded machine,
    died of the signal (exit 140, no result, no checkpoint) before its runner had installed
    its handler. The runner holds the warning from its first line and checkpoints once the
    callable is loaded."""
    import jobfns

    tests_dir = str(Path(jobfns.__file__).parent)
    jobdir = tmp_path / "job"
    marker = tmp_path / "loading"
    write_payload(jobdir, jobfns.SlowToLoad(str(marker), 1.5), [((), {})], sys_path=[tests_dir])
    proc = subprocess.Popen(runner_argv(jobdir), cwd=jobdir, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the payload never loaded"
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR2)  # while it still loads
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGUSR2, err.decode()
    code, reason = parse_exitcode(exitcode_text(jobdir))
    assert code == 140 and reason.startswith("checkpointed on SIGUSR2")
    assert (jobdir / CHECKPOINT).exists()  # what the next run calls
