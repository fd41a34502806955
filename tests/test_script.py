"""Unit tests for hpcexec.script: placeholder filling, script rendering, and running the
rendered script for real with bash (quoting is only proven by a shell)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcexec.backends.local import LocalBackend, make_job_id, parse_proc_stat
from hpcexec.errors import ResourceError
from hpcexec.jobfiles import parse_exitcode
from hpcexec.layout import EXITCODE, STARTED
from hpcexec.resources import Resources
from hpcexec.script import CORE_VARS, ScriptParts, fill_placeholders, render

BASH = "/bin/bash"
NASTY = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "a; touch PWNED",
    "a && touch PWNED #",
    'it\'s "quoted"',
    "'; touch PWNED; '",
    '"; touch PWNED; "',
    "$HOME ${HOME} $$ $1 \\ !x *",
    "| touch PWNED",
    "> PWNED",
    "{name} {cores}",
]


def local_parts(res: Resources = Resources(), **kw) -> ScriptParts:
    return LocalBackend(4).script_parts(
        res, name="x", jobdir="/j", stdout="o", stderr="e", workdir="/w"
    )


def pwned(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if "PWNED" in p.name and p.is_file()]


def run_job(
    root: Path,
    *,
    res: Resources = Resources(),
    name: str = "job",
    shell_body: str | None = None,
    command: str | None = None,
    jobdir: Path | None = None,
    workdir: Path | None = None,
    submit_host: str = "login1",
) -> tuple[subprocess.CompletedProcess, Path, Path]:
    jobdir = jobdir or root / "job"
    workdir = workdir or root / "work"
    jobdir.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    text = render(
        local_parts(res),
        res,
        jobdir=str(jobdir),
        workdir=str(workdir),
        submit_host=submit_host,
        name=name,
        command=command,
        shell_body=shell_body,
    )
    script = jobdir / "job.sh"
    script.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCEXEC_")}
    proc = subprocess.run([BASH, str(script)], cwd=root, capture_output=True, timeout=30, env=env)
    return proc, jobdir, workdir


# -- fill_placeholders -----------------------------------------------------------------


def test_fill_replaces_known_keys():
    assert (
        fill_placeholders("run -n {cores} -t {threads}", {"cores": "8", "threads": "2"})
        == "run -n 8 -t 2"
    )


def test_fill_replaces_every_occurrence():
    assert fill_placeholders("{a}{a} {a}", {"a": "x"}) == "xx x"


def test_fill_leaves_unknown_keys():
    assert fill_placeholders("echo {unknown} {cores}", {"cores": "1"}) == "echo {unknown} 1"


@pytest.mark.parametrize(
    "body",
    [
        "echo ${name} ${cores}",
        "echo ${NAME}",
        "cp file.{a,b} /tmp",
        "echo {name,cores}",
        "awk '{print $1}' data.txt",
        "awk '{print}' data.txt",
        "echo {{name}} {{cores}}",
        "echo \\{name}",
        "f() { echo hi; }",
        "echo {NAME} {Cores}",
        "echo {na me}",
        "echo {}",
    ],
)
def test_fill_leaves_other_braces_alone(body):
    values = {"name": "N", "cores": "4", "a": "A", "b": "B", "NAME": "X", "Cores": "Y"}
    assert fill_placeholders(body, values) == body


@pytest.mark.parametrize(
    "value, quoted",
    [
        ("plain", "plain"),
        ("has space", "'has space'"),
        ("$(touch PWNED)", "'$(touch PWNED)'"),
        ("`id`", "'`id`'"),
        ("it's", "'it'\"'\"'s'"),
        ('say "hi"', "'say \"hi\"'"),
        ("a;b", "'a;b'"),
        ("", "''"),
    ],
)
def test_fill_quotes_values(value, quoted):
    assert fill_placeholders("echo {name} end", {"name": value}) == f"echo {quoted} end"
    assert fill_placeholders("echo {name}", {"name": value}) == "echo " + shlex.quote(value)


def test_filled_value_is_one_shell_word():
    value = "a b; $(touch PWNED) `x` 'q' \"d\""
    filled = fill_placeholders("prog {name} tail", {"name": value})
    assert shlex.split(filled) == ["prog", value, "tail"]


# -- render: the text ------------------------------------------------------------------

PARTS = ScriptParts(
    directives=["#SBATCH --job-name=x", "#SBATCH --time=01:00:00"],
    job_id_expr='"$SLURM_JOB_ID"',
    nodelist_expr='"$SLURM_JOB_NODELIST"',
    array_index_expr='"${SLURM_ARRAY_TASK_ID:-}"',
    prologue="module load python",
)


def render_shell(body="echo hi", res=Resources(), name="job"):
    return render(
        PARTS,
        res,
        jobdir="/jobs/a b",
        workdir="/work dir",
        submit_host="login1",
        name=name,
        shell_body=body,
    )


def test_render_layout_order():
    lines = render_shell().splitlines()
    assert lines[0] == "#!/bin/bash"
    assert lines[1:3] == PARTS.directives
    assert lines[3] == "# written by hpcexec"
    assert lines[4] == "module load python"
    exports = [line.split("=", 1)[0].removeprefix("export ") for line in lines[5:11]]
    assert exports == list(CORE_VARS)
    assert lines[5] == 'export HPCEXEC_JOB_ID="$SLURM_JOB_ID"'
    assert lines[9] == 'export HPCEXEC_NODELIST="$SLURM_JOB_NODELIST"'
    assert lines[10] == 'export HPCEXEC_ARRAY_INDEX="${SLURM_ARRAY_TASK_ID:-}"'


def test_render_without_prologue_has_no_blank_line():
    parts = ScriptParts(directives=[], job_id_expr="1", nodelist_expr="n", array_index_expr="")
    lines = render(
        parts, Resources(), jobdir="/j", workdir="/w", submit_host="h", name="n", command="true"
    ).splitlines()
    assert lines[0] == "#!/bin/bash"
    assert lines[1] == "# written by hpcexec"
    assert lines[2] == "export HPCEXEC_JOB_ID=1"
    assert "" not in lines


def test_render_quotes_core_values():
    text = render(
        PARTS,
        Resources(),
        jobdir="/jobs/a b",
        workdir="/work dir",
        submit_host="host;rm",
        name="my $(job)",
        shell_body="true",
    )
    lines = text.splitlines()
    assert "export HPCEXEC_JOB_NAME='my $(job)'" in lines
    assert "export HPCEXEC_WORKDIR='/work dir'" in lines
    assert "export HPCEXEC_SUBMIT_HOST='host;rm'" in lines
    assert "cd '/work dir' || exit 1" in lines
    assert any(line.endswith("> '/jobs/a b'/started") for line in lines)


def test_render_user_env_quoted_after_core_vars():
    res = Resources.create(env={"B_VAR": "$(touch PWNED)", "A_VAR": "x y", "C": "1"})
    lines = render_shell(res=res).splitlines()
    i = lines.index("export A_VAR='x y'")
    assert lines[i + 1] == "export B_VAR='$(touch PWNED)'"
    assert lines[i + 2] == "export C=1"
    assert i > max(n for n, line in enumerate(lines) if line.startswith("export HPCEXEC_"))


def test_render_command_uses_exec():
    text = render(
        PARTS,
        Resources(),
        jobdir="/j",
        workdir="/w",
        submit_host="h",
        name="n",
        command="/usr/bin/python3 -m hpcexec.runner /j",
    )
    lines = text.splitlines()
    assert text.endswith("\n")
    assert lines[-1] == "exec /usr/bin/python3 -m hpcexec.runner /j"
    assert lines[-2] == "cd /w || exit 1"
    assert "(" not in lines and "trap" not in text and EXITCODE not in text


def test_render_shell_body_subshell_and_exit_code_file():
    text = render_shell(
        body="echo {cores}\necho {name}\n\n", name="a b", res=Resources.create(threads=3)
    )
    lines = text.splitlines()
    start = lines.index("(")
    assert lines[start - 1] == "trap 'hpcexec_sig=TERM' TERM"
    assert lines[start + 1 : start + 4] == ["echo 3", "echo 'a b'", ")"]
    assert lines[start + 4] == "hpcexec_rc=$?"
    assert lines[start + 5].startswith("if [ ! -e '/jobs/a b'/usage ] && times > ")  # its CPU
    fi = lines.index("fi", start)
    assert "/.exitcode.tmp && mv -f '/jobs/a b'/.exitcode.tmp '/jobs/a b'/exitcode" in lines[fi + 1]
    assert lines[fi + 2] == 'exit "$hpcexec_rc"'
    assert lines[-1] == 'exit "$hpcexec_rc"'
    assert "exec " not in text


def test_render_body_name_placeholder_uses_name_argument():
    res = Resources.create(name="from-resources", threads=2)
    text = render_shell(body="echo {name} {threads} {other}", res=res, name="from-arg")
    assert "echo from-arg 2 {other}" in text.splitlines()  # not a resource: as written


def test_a_resource_placeholder_without_a_value_is_refused_by_name():
    """Left as written, the job would see "{time}", not a time."""
    res = Resources.create(threads=2)
    with pytest.raises(
        ResourceError, match=r"uses \{mem\}, \{time\} but the job sets no mem, time"
    ):
        render_shell(body="run --mem {mem} --time {time}", res=res)
    kept = "awk '{print $1}' {a,b} ${mem} {foo} x{ppn}"  # other braces stay exactly
    assert "awk '{print $1}' {a,b} ${mem} {foo} x1" in render_shell(body=kept, res=res)


# -- running rendered scripts with bash ------------------------------------------------


def test_a_shell_job_measures_the_cpu_time_of_what_it_ran(tmp_path):
    """No runner measures a shell body: the script writes its CPU time (bash's times, in the
    script's own shell) where the report reads it, and keeps a usage file already there."""
    spin = "python3 -c 'sum(range(3_000_000))'"
    proc, jobdir, _ = run_job(tmp_path, shell_body=f"{spin} & wait; {spin}")
    assert proc.stderr == b""  # in bash alone: nothing it lacks (awk, say) to complain of
    assert proc.returncode == 0, proc.stderr
    usage = dict(line.split() for line in (jobdir / "usage").read_text().splitlines())
    assert set(usage) == {"user_s", "sys_s"} and float(usage["user_s"]) > 0.05
    assert sorted(p.name for p in jobdir.iterdir() if p.name.startswith(".")) == []
    (jobdir / "usage").write_text("user_s 9\n")  # a runner's own (a multi-task job's rank 0)
    run_job(tmp_path, shell_body="true", jobdir=jobdir)
    assert (jobdir / "usage").read_text() == "user_s 9\n"


def test_shell_job_runs_and_records_exit_code(tmp_path):
    res = Resources.create(threads=2, ppn=3, time="1:00:00", env={"GREETING": "hello world"})
    body = "\n".join(
        [
            'echo "$GREETING"',
            'echo "$HPCEXEC_JOB_NAME"',
            'echo "$HPCEXEC_WORKDIR"',
            "pwd -P",
            'echo "$HPCEXEC_SUBMIT_HOST"',
            "echo {cores} {threads} {ppn} {nodes} {time}",
            "echo to-stderr >&2",
        ]
    )
    proc, jobdir, workdir = run_job(tmp_path, res=res, name="my job", shell_body=body)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [
        "hello world",
        "my job",
        str(workdir),
        str(workdir.resolve()),
        "login1",
        "6 2 3 1 01:00:00",
    ]
    assert proc.stderr.decode() == "to-stderr\n"
    assert (jobdir / EXITCODE).read_text() == "0\n\n"
    assert parse_exitcode((jobdir / EXITCODE).read_text()) == (0, None)
    assert not (jobdir / f".{EXITCODE}.tmp").exists()
    started = (jobdir / STARTED).read_text().splitlines()
    assert len(started) == 2
    expected_host = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert started[1] == expected_host
    assert started[0].split(":")[0].isdigit()


@pytest.mark.parametrize(
    "body, code",
    [("exit 3", 3), ("false", 1), ("echo x; exit 42", 42), ("true", 0), ("(exit 7)", 7)],
)
def test_shell_job_exit_code_file(tmp_path, body, code):
    proc, jobdir, _ = run_job(tmp_path, shell_body=body)
    assert proc.returncode == code
    assert (jobdir / EXITCODE).read_text() == f"{code}\n\n"


def test_exit_in_body_still_writes_exit_code_file(tmp_path):
    proc, jobdir, _ = run_job(tmp_path, shell_body="echo before\nexit 3\necho after")
    assert proc.stdout == b"before\n"
    assert proc.returncode == 3
    assert (jobdir / EXITCODE).read_text().splitlines()[0] == "3"


def test_job_id_is_pid_and_start_time_of_the_script(tmp_path):
    body = 'cat /proc/$$/stat > "$HPCEXEC_WORKDIR/stat.txt"\necho "$HPCEXEC_JOB_ID"'
    proc, jobdir, workdir = run_job(tmp_path, shell_body=body)
    assert proc.returncode == 0, proc.stderr
    stat_text = (workdir / "stat.txt").read_text()
    st = parse_proc_stat(stat_text)
    assert st is not None
    pid = int(stat_text.split()[0])
    job_id = proc.stdout.decode().strip()
    assert job_id == make_job_id(pid, st.start)
    assert (jobdir / STARTED).read_text().splitlines()[0] == job_id


def test_missing_workdir_exits_1_before_the_body(tmp_path):
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    text = render(
        local_parts(),
        Resources(),
        jobdir=str(jobdir),
        workdir=str(tmp_path / "nope"),
        submit_host="h",
        name="n",
        shell_body="touch ran",
    )
    (jobdir / "job.sh").write_text(text)
    proc = subprocess.run([BASH, str(jobdir / "job.sh")], cwd=tmp_path, capture_output=True)
    assert proc.returncode == 1
    assert not (tmp_path / "ran").exists()
    assert not (jobdir / EXITCODE).exists()


def test_command_job_is_execed(tmp_path):
    code = (
        "import os, sys; print(os.environ['HPCEXEC_JOB_NAME']); print(os.getcwd()); "
        "print(os.environ['HPCEXEC_JOB_ID']); print(os.getpid()); sys.exit(5)"
    )
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    proc, jobdir, workdir = run_job(tmp_path, name="py job", command=command)
    assert proc.returncode == 5
    name, cwd, job_id, pid = proc.stdout.decode().splitlines()
    assert name == "py job"
    assert cwd == str(workdir)
    assert job_id.split(":")[0] == pid  # exec: python replaced the script's own process
    assert not (jobdir / EXITCODE).exists()  # the runner, not the script, writes it


@pytest.mark.parametrize("evil", NASTY)
def test_metacharacters_never_execute(tmp_path, evil):
    res = Resources.create(env={"EVIL": evil})
    workdir = tmp_path / f"w {evil.replace('/', '_')}"
    jobdir = tmp_path / f"j {evil.replace('/', '_')}"
    body = "\n".join(
        [
            'printf "%s\\n" "$HPCEXEC_JOB_NAME"',
            'printf "%s\\n" "$EVIL"',
            'printf "%s\\n" "$HPCEXEC_WORKDIR"',
            'printf "%s\\n" "$HPCEXEC_SUBMIT_HOST"',
            "printf '%s\\n' {name}",
        ]
    )
    proc, jobdir, workdir = run_job(
        tmp_path,
        res=res,
        name=evil,
        shell_body=body,
        workdir=workdir,
        jobdir=jobdir,
        submit_host=evil,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [evil, evil, str(workdir), evil, evil]
    assert (jobdir / EXITCODE).read_text() == "0\n\n"
    assert pwned(tmp_path) == []


def test_sigterm_to_shell_job_is_recorded(tmp_path):
    jobdir, workdir = tmp_path / "job", tmp_path / "work"
    jobdir.mkdir()
    workdir.mkdir()
    text = render(
        local_parts(),
        Resources(),
        jobdir=str(jobdir),
        workdir=str(workdir),
        submit_host="h",
        name="n",
        shell_body="touch ready\nsleep 30\necho after",
    )
    (jobdir / "job.sh").write_text(text)
    proc = subprocess.Popen(
        [BASH, str(jobdir / "job.sh")],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not (workdir / "ready").exists():
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert out == b""
    assert proc.returncode == 143
    assert (jobdir / EXITCODE).read_text() == "143\nterminated by SIGTERM\n"
    assert parse_exitcode((jobdir / EXITCODE).read_text()) == (143, "terminated by SIGTERM")


# -- property: any text arrives verbatim and never runs --------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "$(touch PWNED)",
        "`touch PWNED`",
        ";",
        "'",
        '"',
        "\\",
        "$",
        "${X}",
        "{name}",
        "!",
        "*",
        "&&",
        "|",
        ">",
        "<",
        "#",
        " ",
        "~",
        "%s",
        "\t",
    ]
)
_NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"))
_ENV_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
names = (
    st.lists(
        st.one_of(_FRAGMENTS.filter(lambda f: f != "\t"), st.text(_NAME_CHARS, max_size=8)),
        min_size=1,
        max_size=8,
    )
    .map("".join)
    .filter(bool)
)
env_values = st.lists(
    st.one_of(_FRAGMENTS, st.just("\n"), st.text(_ENV_CHARS, max_size=8)), max_size=8
).map("".join)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, value=env_values)
def test_any_text_round_trips_and_never_executes(name, value):
    res = Resources.create(name=name, env={"USER_VALUE": value})  # both pass validation
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        body = "\n".join(
            [
                'printf "%s" "$HPCEXEC_JOB_NAME" > "$HPCEXEC_WORKDIR/name.out"',
                'printf "%s" "$USER_VALUE" > "$HPCEXEC_WORKDIR/value.out"',
                'printf "%s" {name} > "$HPCEXEC_WORKDIR/placeholder.out"',
            ]
        )
        proc, jobdir, workdir = run_job(root, res=res, name=name, shell_body=body)
        assert proc.returncode == 0, proc.stderr
        assert (workdir / "name.out").read_bytes().decode("utf-8") == name
        assert (workdir / "value.out").read_bytes().decode("utf-8") == value
        assert (workdir / "placeholder.out").read_bytes().decode("utf-8") == name
        assert (jobdir / EXITCODE).read_text() == "0\n\n"
        assert pwned(root) == []


def test_dependency_guard_stops_a_job_whose_dependency_failed(tmp_path):
    """Schedulers like SGE start a dependent when its dependency ends, whatever its exit code:
    the script checks the dependency's exit-code file before running anything."""
    ok_dep, bad_dep = tmp_path / "ok", tmp_path / "bad"
    ok_dep.mkdir()
    bad_dep.mkdir()
    (ok_dep / EXITCODE).write_text("0\n\n")
    (bad_dep / EXITCODE).write_text("3\n\n")
    for after, expect_run in (
        ([str(ok_dep)], True),
        ([str(ok_dep), str(bad_dep)], False),
        ([str(tmp_path / "missing")], False),
    ):
        jobdir = tmp_path / f"job{len(after)}{expect_run}"
        jobdir.mkdir()
        text = render(
            local_parts(),
            Resources(),
            jobdir=str(jobdir),
            workdir=str(tmp_path),
            submit_host="h",
            name="n",
            shell_body=f"touch {jobdir}/ran",
            after=after,
        )
        proc = subprocess.run(["bash", "-c", text], capture_output=True)
        assert (jobdir / "ran").exists() is expect_run
        code, reason = parse_exitcode((jobdir / EXITCODE).read_text())
        if expect_run:
            assert (code, proc.returncode) == (0, 0)
        else:
            assert code == 1 and proc.returncode == 1 and "did not complete" in reason


def _start_job(root: Path, **kw) -> tuple[subprocess.Popen, Path]:
    """A rendered job script started with bash (not waited for), and its job directory."""
    jobdir, workdir = root / "job", root / "work"
    jobdir.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    res = Resources()
    text = render(
        local_parts(res),
        res,
        jobdir=str(jobdir),
        workdir=str(workdir),
        submit_host="h",
        name="w",
        **kw,
    )
    (jobdir / "job.sh").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCEXEC_")}
    proc = subprocess.Popen(
        [BASH, str(jobdir / "job.sh")], cwd=root, env=env, start_new_session=True
    )
    return proc, jobdir


def test_a_warning_before_the_job_can_take_it_is_not_fatal(tmp_path):
    """A job that asks for the warning ignores it until its runner installs its handler (the
    local queue sends it again each second): an early one must not kill the job."""
    proc, jobdir = _start_job(tmp_path, command="sleep 1", warned=True)
    time.sleep(0.3)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=30) == 0
    assert not (jobdir / EXITCODE).exists() or (jobdir / EXITCODE).read_text().startswith("0")


def test_a_restartable_body_is_stopped_once_however_many_warnings_come(tmp_path):
    """The queue repeats the warning: a body that traps TERM to save its state gets one."""
    log = tmp_path / "terms"
    body = f"trap 'echo term >> {log}' TERM\nfor i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.2; done"
    proc, jobdir = _start_job(tmp_path, shell_body=body, restartable=True)
    time.sleep(0.5)
    for _ in range(3):
        proc.send_signal(signal.SIGUSR2)
        time.sleep(0.3)
    assert proc.wait(timeout=30) == 140
    assert log.read_text() == "term\n"
    assert parse_exitcode((jobdir / EXITCODE).read_text())[1].startswith("checkpointed")
