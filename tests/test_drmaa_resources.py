"""The DRMAA job-template keys (mail, begin, deadline, stdin, join_output): how they are
read, what they do to cache keys, how every backend renders them or refuses them, and the
local backend running them for real.

Flags of the schedulers that cannot be installed here, and the pages they come from:

- PBS Pro and Torque follow POSIX qsub (https://pubs.opengroup.org/onlinepubs/007904975/
  utilities/qsub.html): ``-a date_time`` ([[CC]YY]MMDDhhmm[.SS]), ``-j oe`` (join standard
  error into standard output), ``-m`` mail points a (abort), b (begin), e (end), ``-M``
  mail list; Torque's own qsub(1B) page (https://manpages.ubuntu.com/manpages/xenial/man1/
  qsub.1B.html) lists the same -a, -j, -m, -M. Neither has an input file or deadline option.
- LSF 10.1 bsub (https://www.ibm.com/docs/en/SSWRJV_10.1.0/lsf_command_ref/): ``-b``
  (bsub.b.1.html: begin, [[year:][month:]day:]hour:minute), ``-t`` (bsub.t.1.html:
  termination deadline, same form), ``-i`` (bsub.i.1.html: standard input file), ``-u``
  (bsub.u.1.html: mail destination), ``-B`` (mail at dispatch), ``-N`` (job report by mail
  when the job finishes), ``-Ne`` (bsub.__ne.1.html: only when it exits in EXIT status; not
  with -N).
- SLURM (sbatch(1), 22.05, installed here): --mail-user, --mail-type BEGIN/END/FAIL, --begin and
  --deadline YYYY-MM-DD[THH:MM[:SS]], --input, and "By default both standard output and
  standard error are directed to the same file" (no --error).
- SGE (sge_submit(1), 8.1.9, installed here): -M, -m b|e|a, -a [[CC]YY]MMDDhhmm[.SS], -i,
  -j y; -dl only raises a deadline job's priority.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from datetime import datetime, timedelta, timezone

import jobfns
import pytest

from hpcexec import BackendError, JobFailed, JobState
from hpcexec.backends.base import SubmitSpec
from hpcexec.backends.local import LocalBackend
from hpcexec.backends.lsf import LsfBackend
from hpcexec.backends.pbspro import PbsProBackend
from hpcexec.backends.sge import SgeBackend
from hpcexec.backends.slurm import SlurmBackend
from hpcexec.backends.torque import TorqueBackend
from hpcexec.errors import ResourceError
from hpcexec.resources import Resources
from hpcexec.resourcevalues import Mail, instant_epoch

BACKENDS = {
    "slurm": SlurmBackend(),
    "sge": SgeBackend(),
    "pbspro": PbsProBackend(),
    "torque": TorqueBackend(),
    "lsf": LsfBackend(),
}


@pytest.fixture
def tz(monkeypatch):
    """Set this process's time zone (schedulers read times in the submitting machine's)."""

    def set_tz(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def utc(tz):
    tz("UTC")


def spec(**values) -> SubmitSpec:
    res = Resources.create(**values)
    return SubmitSpec(
        "/c/jobs/k/submit.sh", res, "job", "/c/jobs/k/stdout", "/c/jobs/k/stderr", "/w"
    )


def lines(backend: str, **values) -> list[str]:
    """The directives the values add to a job without them."""
    b = BACKENDS[backend]
    b.check(Resources.create(**values))
    base = b.directives(spec())
    return [x for x in b.directives(spec(**values)) if x not in base]


def dropped(backend: str, **values) -> list[str]:
    b = BACKENDS[backend]
    got = b.directives(spec(**values))
    return [x for x in b.directives(spec()) if x not in got]


# -- reading the values ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, mail",
    [
        ("me@x.org", Mail("me@x.org", ("end",))),
        ("alice", Mail("alice", ("end",))),
        ("me@x.org:fail,begin", Mail("me@x.org", ("begin", "fail"))),
        ("me@x.org:all", Mail("me@x.org", ("begin", "end", "fail"))),
        ({"to": "me@x.org", "on": "fail"}, Mail("me@x.org", ("fail",))),
        ({"to": "me@x.org", "on": ["END", "all"]}, Mail("me@x.org", ("begin", "end", "fail"))),
        ({"to": "me@x.org"}, Mail("me@x.org", ("end",))),
        (Mail("me@x.org", ("begin",)), Mail("me@x.org", ("begin",))),
    ],
)
def test_mail_forms(value, mail):
    assert Resources.create(mail=value).mail == mail


def test_mail_errors_say_what_is_accepted():
    with pytest.raises(ResourceError, match=r"unknown mail event.*sometimes.*begin, end, fail"):
        Resources.create(mail="me@x.org:sometimes")
    with pytest.raises(ResourceError, match="use 'to' and 'on'"):
        Resources.create(mail={"to": "me@x.org", "when": "end"})


def test_begin_and_deadline_forms_are_stored_as_utc_text(tz):
    tz("Europe/Berlin")  # UTC+1 in January
    assert Resources.create(begin="2030-01-31T18:00").begin == "2030-01-31T17:00:00Z"
    assert Resources.create(begin=datetime(2030, 1, 31, 18)).begin == "2030-01-31T17:00:00Z"
    aware = datetime(2030, 1, 31, 18, tzinfo=timezone(timedelta(hours=-5)))
    assert Resources.create(begin=aware).begin == "2030-01-31T23:00:00Z"
    assert Resources.create(begin="2030-01-31T18:00:00Z").begin == "2030-01-31T18:00:00Z"
    assert Resources.create(deadline="2030-01-31 18:00+02:00").deadline == "2030-01-31T16:00:00Z"
    # a start is never earlier, a deadline never later, than asked
    assert Resources.create(begin="2030-01-31T18:00:00.2Z").begin == "2030-01-31T18:00:01Z"
    assert Resources.create(deadline="2030-01-31T18:00:00.8Z").deadline == "2030-01-31T18:00:00Z"


def test_begin_delays_count_from_now():
    before = time.time()
    for value in (timedelta(minutes=30), "+30", "+0:30:00"):
        at = instant_epoch(Resources.create(begin=value).begin)
        assert before + 1800 - 1 <= at <= time.time() + 1800 + 1


def test_deadline_not_after_begin_is_refused():
    with pytest.raises(ResourceError, match="could never run"):
        Resources.create(begin="2030-01-02T00:00Z", deadline="2030-01-01T00:00Z")
    with pytest.raises(ResourceError, match="could never run"):
        Resources.create(begin="2030-01-01T00:00Z").replace(deadline="2030-01-01T00:00Z")


def test_join_output_false_is_unset():
    assert Resources.create(join_output=False) == Resources()
    assert Resources.create(join_output="yes").join_output is True


def test_existing_cache_keys_do_not_change():
    # canonical() feeds cache keys: the text of a job without the DRMAA keys is as before
    # (time and mem are scheduling, never in the key).
    res = Resources.create(time="1:00:00", mem="1G", env={"A": "1"}, name="x")
    assert res.canonical() == '{"env":{"A":"1"}}'
    assert Resources().canonical() == "{}"


def test_when_and_whom_to_tell_are_not_part_of_the_cache_key():
    base = Resources.create(time=10)
    told = base.replace(mail="me@x.org", begin="+10", deadline="2031-01-01T00:00Z")
    assert told.canonical() == base.canonical()
    assert base.replace(stdin="in.txt").canonical() != base.canonical()
    assert base.replace(join_output=True).canonical() != base.canonical()


def test_record_round_trip_through_json():
    res = Resources.create(
        mail="me@x.org:begin",
        begin="2030-01-01T00:00Z",
        deadline="2030-01-02T00:00Z",
        stdin="in",
        join_output=True,
    )
    again = Resources.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again == res
    assert res.to_dict()["mail"] == {"to": "me@x.org", "on": ["begin"]}
    assert res.placeholders()["mail"] == "me@x.org" and res.placeholders()["stdin"] == "in"


# -- rendering, every backend --------------------------------------------------------------------
def test_mail_rendering(utc):
    m = {"to": "me@x.org", "on": ["begin", "end", "fail"]}
    assert lines("slurm", mail=m) == [
        "#SBATCH --mail-user=me@x.org",
        "#SBATCH --mail-type=BEGIN,END,FAIL",
    ]
    assert lines("sge", mail=m) == ["#$ -M me@x.org", "#$ -m bea"]
    assert lines("pbspro", mail=m) == ["#PBS -M me@x.org", "#PBS -m bea"]
    assert lines("torque", mail=m) == ["#PBS -M me@x.org", "#PBS -m bea"]
    assert lines("lsf", mail=m) == ['#BSUB -u "me@x.org"', "#BSUB -B", "#BSUB -N"]
    assert lines("slurm", mail="me@x.org") == [
        "#SBATCH --mail-user=me@x.org",
        "#SBATCH --mail-type=END",
    ]
    assert lines("sge", mail="me@x.org:fail") == ["#$ -M me@x.org", "#$ -m a"]


def test_lsf_mail_on_failure_only_is_ne_and_never_with_n():
    assert lines("lsf", mail="me@x.org:fail") == ['#BSUB -u "me@x.org"', "#BSUB -Ne"]
    assert lines("lsf", mail="me@x.org:end,fail") == ['#BSUB -u "me@x.org"', "#BSUB -N"]
    assert lines("lsf", mail="me@x.org:begin") == ['#BSUB -u "me@x.org"', "#BSUB -B"]


def test_begin_rendering(utc):
    when = "2030-01-31T18:05:09Z"
    assert lines("slurm", begin=when) == ["#SBATCH --begin=2030-01-31T18:05:09"]
    assert lines("sge", begin=when) == ["#$ -a 203001311805.09"]
    assert lines("pbspro", begin=when) == ["#PBS -a 203001311805.09"]
    assert lines("torque", begin=when) == ["#PBS -a 203001311805.09"]
    assert lines("lsf", begin=when) == ["#BSUB -b 2030:01:31:18:06"]  # whole minutes, later
    assert lines("lsf", begin="2030-01-31T18:05:00Z") == ["#BSUB -b 2030:01:31:18:05"]


def test_times_are_written_in_the_submitting_machines_local_time(tz):
    tz("Europe/Berlin")
    assert lines("slurm", begin="2030-01-31T18:00:00Z") == ["#SBATCH --begin=2030-01-31T19:00:00"]
    assert lines("sge", begin="2030-07-31T18:00:00Z") == ["#$ -a 203007312000.00"]  # summer


def test_deadline_rendering_and_refusals(utc):
    when = "2030-02-01T06:00:59Z"
    assert lines("slurm", deadline=when) == ["#SBATCH --deadline=2030-02-01T06:00:59"]
    assert lines("lsf", deadline=when) == ["#BSUB -t 2030:02:01:06:00"]  # whole minutes, earlier
    for name in ("sge", "pbspro", "torque"):
        with pytest.raises(BackendError) as info:
            BACKENDS[name].check(Resources.create(deadline=when))
        message = str(info.value)
        assert f"the {name} backend" in message and "'deadline'" in message
        assert "time" in message and "backend='slurm'" in message


def test_stdin_rendering_relative_to_workdir_and_refusals():
    assert lines("slurm", stdin="in put.txt") == ["#SBATCH --input='/w/in put.txt'"]
    assert lines("slurm", stdin="/data/in") == ["#SBATCH --input=/data/in"]
    assert lines("sge", stdin="in put.txt") == ['#$ -i "/w/in put.txt"']
    assert lines("lsf", stdin="in.txt") == ['#BSUB -i "/w/in.txt"']
    for name in ("pbspro", "torque"):
        with pytest.raises(BackendError, match=rf"the {name} backend .*'stdin'.*exec < FILE"):
            BACKENDS[name].check(Resources.create(stdin="in.txt"))
    with pytest.raises(BackendError, match="quote"):
        BACKENDS["sge"].check(Resources.create(stdin="it's.txt"))


def test_join_output_rendering():
    assert lines("slurm", join_output=True) == []
    assert dropped("slurm", join_output=True) == ["#SBATCH --error=/c/jobs/k/stderr"]
    assert lines("sge", join_output=True) == ["#$ -j y"]
    assert dropped("sge", join_output=True) == ["#$ -e /c/jobs/k/stderr"]
    assert lines("pbspro", join_output=True) == ["#PBS -j oe"]
    assert dropped("pbspro", join_output=True) == ["#PBS -e /c/jobs/k/stderr"]
    assert lines("torque", join_output=True) == ["#PBS -j oe"]
    assert dropped("torque", join_output=True) == ["#PBS -e /c/jobs/k/torque.err"]
    assert dropped("lsf", join_output=True) == ['#BSUB -e "/c/jobs/k/lsf.%J.err"']


@pytest.mark.parametrize("name", ["torque", "lsf"])
def test_join_output_in_the_script_of_backends_whose_jobs_write_their_own_output(name):
    # Torque and LSF jobs redirect their own output (see their module docs).
    def prologue(**values):
        return (
            BACKENDS[name]
            .script_parts(
                Resources.create(**values),
                name="j",
                jobdir="/j",
                stdout="/o",
                stderr="/e",
                workdir="/w",
            )
            .prologue
        )

    assert "exec >/o 2>/e" in prologue()
    assert "exec >/o 2>&1" in prologue(join_output=True)


def test_new_keys_come_after_the_old_and_before_native(utc):
    got = BACKENDS["slurm"].directives(
        spec(time=10, mail="a@b.c", begin="2030-01-01T00:00Z", stdin="in", native="--exclusive")
    )
    assert got[-1] == "#SBATCH --exclusive"
    assert got.index("#SBATCH --time=00:10:00") < got.index("#SBATCH --mail-user=a@b.c")


# -- the local backend, pure -------------------------------------------------------------------
def test_local_refuses_mail_and_says_why():
    with pytest.raises(BackendError, match=r"the local backend .*'mail'.*no scheduler"):
        LocalBackend(4).check(Resources.create(mail="me@x.org"))
    LocalBackend(4).check(Resources.create(begin="+1", deadline="+2", stdin="x", join_output=True))


def test_local_job_script_reads_stdin_relative_to_workdir():
    parts = LocalBackend(4).script_parts(
        Resources.create(stdin="in put"),
        name="n",
        jobdir="/j",
        stdout="/o",
        stderr="/e",
        workdir="/w",
    )
    assert "exec < '/w/in put' ||" in parts.prologue
    assert (
        "exec <"
        not in LocalBackend(4)
        .script_parts(Resources(), name="n", jobdir="/j", stdout="/o", stderr="/e", workdir="/w")
        .prologue
    )


# -- the local backend, for real ---------------------------------------------------------------
def test_local_begin_delays_the_start(ex):
    f = ex.options(begin=timedelta(seconds=2)).submit_shell("echo ran")
    assert f.result(timeout=60).stdout == "ran\n"
    rec = f.record
    assert rec.submitted < instant_epoch(rec.resources["begin"]) <= rec.started


def test_local_stdin_feeds_shell_and_python_jobs(ex, tmp_path):
    (tmp_path / "in.txt").write_text("line one\nline two\n")
    feed = ex.options(stdin="in.txt", workdir=str(tmp_path))
    shell = feed.submit_shell("tac")
    call = feed.submit(jobfns.read_stdin)
    assert shell.result(timeout=60).stdout == "line two\nline one\n"
    assert call.result(timeout=60) == "line one\nline two\n"


def test_local_missing_stdin_fails_with_the_reason(ex, tmp_path):
    f = ex.options(stdin=str(tmp_path / "absent")).submit_shell("cat")
    with pytest.raises(JobFailed) as info:
        f.result(timeout=60)
    assert "absent: No such file" in str(info.value)  # the shell's own words, from stderr
    assert f.state is JobState.FAILED and "cannot read the stdin file" in f.record.reason


def test_local_join_output_puts_stderr_into_stdout(ex):
    joined = ex.options(join_output=True)
    shell = joined.submit_shell("echo out; echo err >&2; echo more")
    call = joined.submit(jobfns.print_both, "to-out", "to-err")
    got = shell.result(timeout=60)
    assert (got.stdout, got.stderr) == ("out\nerr\nmore\n", "")
    assert call.result(timeout=60) is True
    assert "to-out\nto-err\n" in call.stdout() and call.stderr() == ""


def test_local_deadline_passed_before_start_cancels(ex):
    gone = ex.options(deadline=datetime.now() - timedelta(seconds=1)).submit_shell("echo no")
    held = ex.options(hold=True, deadline=timedelta(seconds=1)).submit_shell("echo no")
    cf.wait([gone, held], timeout=60)
    for f in (gone, held):
        with pytest.raises(JobFailed) as info:
            f.result(timeout=0)
        assert info.value.state is JobState.CANCELLED
        assert "deadline" in f.record.reason and "never ran" in f.record.reason
        assert f.record.started is None


def test_local_job_still_running_at_its_deadline_is_stopped(ex):
    f = ex.options(deadline=timedelta(seconds=1)).submit_shell("sleep 60")
    with pytest.raises(JobFailed) as info:
        f.result(timeout=60)
    assert info.value.state is JobState.TIMEOUT
    assert f.record.reason.startswith("deadline reached")


def test_local_executor_refuses_mail(ex):
    with pytest.raises(BackendError, match="mail"):
        ex.options(mail="me@x.org")
