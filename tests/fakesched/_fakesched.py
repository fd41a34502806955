"""A fake PBS Pro / Torque / LSF for tests: the commands (``qsub``, ``qstat``, ``qdel``,
``qhold``, ``qrls``, ``pbs_rstat``; ``bsub``, ``bjobs``, ``bkill``, ``bstop``, ``bresume``) are
small scripts beside this file that call :func:`main`.

State lives in ``$FAKESCHED_DIR/fakesched`` (one JSON file per job, under one lock).
``FAKESCHED_FLAVOR=pbspro|torque`` says which PBS the ``q*`` commands play.
``FAKESCHED_MAX_QUEUED=N`` refuses a ``qsub`` that would leave more than N unfinished jobs
(array elements one each) with PBS Pro's words for its per-user queued_jobs_threshold; the
most unfinished ever seen is kept in ``$FAKESCHED_DIR/fakesched/peak``. Submitting
records the job and starts a detached supervisor (``_fakesched.py supervise <seq>``) that
waits for holds and dependencies, runs each element's script with the scheduler's
variables, spools its output and delivers it to the ``-o``/``-e`` paths when it ends (LSF:
with a job report on top, as LSF does), then records the exit status. The status commands
print output shaped like the recorded fixtures in ``tests/fixtures/`` (PBS Pro
``qstat -f -F json``, Torque ``qstat -x`` XML, LSF ``bjobs -o ... -json``), including the
unknown-id error lines. ``qdel``/``bkill`` signal the element's process group.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HOST = "fakenode01"
SERVERS = {"pbspro": "pbs-fake01.example.org", "torque": "torque-fake01"}
FINAL = ("done", "deleted")
KILL_AFTER = 2.0  # seconds from SIGTERM to SIGKILL, like PBS's kill_delay


def state_dir() -> Path:
    d = Path(os.environ["FAKESCHED_DIR"]) / "fakesched"
    for sub in ("jobs", "spool", "scripts"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    return d


@contextmanager
def locked():
    d = state_dir()
    with open(d / "lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load(d: Path, seq: int) -> dict | None:
    try:
        return json.loads((d / "jobs" / f"{seq}.json").read_text())
    except FileNotFoundError:
        return None


def save(d: Path, job: dict) -> None:
    tmp = d / "jobs" / f".{job['seq']}.tmp"
    tmp.write_text(json.dumps(job))
    os.replace(tmp, d / "jobs" / f"{job['seq']}.json")


def all_jobs(d: Path) -> list[dict]:
    jobs = [json.loads(p.read_text()) for p in (d / "jobs").glob("*.json")]
    return sorted(jobs, key=lambda j: j["seq"])


def user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def stamp(t: float | None) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(t or time.time()))


# -- submission ------------------------------------------------------------------------------
def parse_range(text: str) -> tuple[list[int], int | None]:
    """``0-4%2`` -> ([0..4], 2); also comma lists."""
    text, _, limit = text.partition("%")
    indices: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        indices += list(range(int(a), int(b or a) + 1))
    return indices, int(limit) if limit else None


def parse_dep_id(text: str) -> list:
    """``12.srv`` -> [12, None]; ``12[].srv`` -> [12, None]; ``12[3].srv`` -> [12, 3]."""
    m = re.match(r"^(\d+)(?:\[(\d*)\])?", text.strip())
    if not m:
        raise ValueError(text)
    return [int(m[1]), int(m[2]) if m[2] else None]


def directive_args(script: str, prefix: str) -> list[str]:
    args: list[str] = []
    for line in script.splitlines()[1:]:
        if line.startswith(prefix + " "):
            args += shlex.split(line[len(prefix) + 1 :])
        elif line.strip() and not line.startswith("#"):
            break
    return args


PBS_VALUED = set(
    [
        "-a",
        "-A",
        "-c",
        "-C",
        "-d",
        "-D",
        "-e",
        "-j",
        "-J",
        "-k",
        "-l",
        "-m",
        "-M",
        "-N",
        "-o",
        "-p",
        "-P",
        "-q",
        "-r",
        "-S",
        "-t",
        "-u",
        "-v",
        "-W",
        "-w",
    ]
)
LSF_VALUED = set(
    [
        "-J",
        "-o",
        "-oo",
        "-e",
        "-eo",
        "-q",
        "-P",
        "-W",
        "-n",
        "-R",
        "-M",
        "-gpu",
        "-w",
        "-cwd",
        "-G",
        "-g",
        "-u",
        "-m",
        "-b",
        "-E",
        "-Ep",
    ]
)


def parse_opts(args: list[str], valued: set[str]) -> tuple[dict[str, list[str]], list[str]]:
    opts: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in valued and i + 1 < len(args):
            opts.setdefault(a, []).append(args[i + 1])
            i += 2
        elif a.startswith("-") and len(a) > 1 and not rest:
            opts.setdefault(a, []).append("")
            i += 1
        else:
            rest.append(a)
            i += 1
    return opts, rest


def next_seq(d: Path) -> int:
    f = d / "seq"
    seq = int(f.read_text()) + 1 if f.exists() else 100
    f.write_text(str(seq))
    return seq


def submit(flavor: str, script_text: str, script_path: str, opts: dict[str, list[str]]) -> dict:
    last = {k: v[-1] for k, v in opts.items()}
    job: dict = {
        "flavor": flavor,
        "script": script_path,
        "cwd": os.getcwd(),
        "submitted": time.time(),
        "env": dict(os.environ),
        "deps": [],
        "limit": None,
        "array": None,
        "kill": {},
    }
    if flavor == "lsf":
        spec = last.get("-J", os.path.basename(script_path))
        m = re.match(r"^(.*?)\[([^\]]+)\](%\d+)?$", spec)
        if m:
            job["name"] = m[1]
            job["array"], job["limit"] = parse_range(m[2] + (m[3] or ""))
        else:
            job["name"] = spec
        job["out"] = last.get("-oo", last.get("-o"))
        job["err"] = last.get("-eo", last.get("-e"))
        job["queue"] = last.get("-q", "normal")
        job["hold"] = "-H" in opts
        for cond in opts.get("-w", []):
            for _kind, ref in re.findall(r"(\w+)\(([^)]*)\)", cond):
                job["deps"].append(parse_dep_id(ref))
    else:
        job["name"] = last.get("-N", os.path.basename(script_path))
        job["out"], job["err"] = last.get("-o"), last.get("-e")
        job["queue"] = last.get("-q", "workq" if flavor == "pbspro" else "batch")
        job["hold"] = "-h" in opts
        rng = last.get("-J" if flavor == "pbspro" else "-t")
        if rng:
            job["array"], job["limit"] = parse_range(rng)
        for w in opts.get("-W", []):
            if w.startswith("depend="):
                for cond in w[len("depend=") :].split(","):
                    _kind, *ids = cond.split(":")
                    job["deps"] += [parse_dep_id(i) for i in ids]
    job["resources"] = opts.get("-l", [])
    job["over_out"], job["over_err"] = "-oo" in opts, "-eo" in opts
    first = "held" if job["hold"] else "queued"
    job["elements"] = {str(i): {"state": first} for i in job["array"] or [""]}
    with locked() as d:
        job["seq"] = next_seq(d)
        if flavor == "lsf":
            path = d / "scripts" / f"{job['seq']}.sh"
            path.write_text(script_text)
            job["script"] = str(path)
        save(d, job)
    pid = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "supervise", str(job["seq"])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    ).pid
    with locked() as d:
        cur = load(d, job["seq"])
        cur["supervisor"] = pid
        save(d, cur)
    return job


def cmd_qsub(flavor: str, args: list[str]) -> int:
    opts, rest = parse_opts(args, PBS_VALUED)
    if not rest:
        print("usage: qsub [options] script", file=sys.stderr)
        return 2
    path = os.path.abspath(rest[0])
    try:
        text = Path(path).read_text()
    except OSError as e:
        print(f"qsub: script file:: {e.strerror}", file=sys.stderr)
        return 1
    merged, _ = parse_opts(directive_args(text, "#PBS"), PBS_VALUED)
    for k, v in opts.items():  # the command line wins over directives
        merged[k] = v
    if "-J" in merged and flavor == "pbspro":
        indices, _ = parse_range(merged["-J"][-1])
        if len(indices) < 2:
            print("qsub: Array job range must have at least two indices", file=sys.stderr)
            return 2
    if merged.get("-q", ["x"])[-1] == "nosuchqueue":
        print("qsub: Unknown queue", file=sys.stderr)
        return 1
    if not within_max_queued(parse_range(merged["-J"][-1])[0] if "-J" in merged else [""]):
        print("qsub: would exceed queue generic's per-user limit of jobs in 'Q' state")
        return 38
    job = submit(flavor, text, path, merged)
    note_peak()
    array = "[]" if job["array"] else ""
    print(f"{job['seq']}{array}.{SERVERS[flavor]}")
    return 0


def unfinished() -> int:
    with locked() as d:
        return sum(
            el["state"] not in FINAL for job in all_jobs(d) for el in job["elements"].values()
        )


def within_max_queued(elements: list) -> bool:
    limit = os.environ.get("FAKESCHED_MAX_QUEUED")
    return not limit or unfinished() + len(elements) <= int(limit)


def note_peak() -> None:
    now = unfinished()
    with locked() as d:
        peak = d / "peak"
        if not peak.exists() or int(peak.read_text()) < now:
            peak.write_text(str(now))


def cmd_bsub(args: list[str]) -> int:
    text = sys.stdin.read()
    opts, rest = parse_opts(args, LSF_VALUED)
    if rest:
        print("this fake bsub reads the job script from standard input only", file=sys.stderr)
        return 255
    merged, _ = parse_opts(directive_args(text, "#BSUB"), LSF_VALUED)
    merged.update(opts)
    if merged.get("-q", ["x"])[-1] == "nosuchqueue":
        print("nosuchqueue: No such queue. Job not submitted.", file=sys.stderr)
        return 255
    job = submit("lsf", text, "stdin", merged)
    if "-q" in merged:
        print(f"Job <{job['seq']}> is submitted to queue <{job['queue']}>.")
    else:
        print(f"Job <{job['seq']}> is submitted to default queue <{job['queue']}>.")
    return 0


# -- running ---------------------------------------------------------------------------------
def output_path(job: dict, stream: str, idx: str) -> str | None:
    path = job[stream]
    flavor, seq = job["flavor"], job["seq"]
    if flavor == "lsf":
        if not path:
            return None  # LSF mails the output when no -o is given
        return path.replace("%J", str(seq)).replace("%I", idx or "0")
    letter = "o" if stream == "out" else "e"
    if not path:
        path = os.path.join(job["cwd"], f"{job['name']}.{letter}{seq}")
        return path + (("." if flavor == "pbspro" else "-") + idx if idx else "")
    path = re.sub(r"^[^/]*:", "", path)  # host:path
    if flavor == "pbspro":
        return path.replace("^array_index^", idx)
    return f"{path}-{idx}" if idx else path  # Torque appends -<index> for array elements


def job_env(job: dict, idx: str) -> dict[str, str]:
    env = dict(job["env"])
    seq, flavor, d = job["seq"], job["flavor"], state_dir()
    nodefile = d / "spool" / f"{seq}.{idx}.nodes"
    nodefile.write_text(f"{HOST}\n{HOST}\n")
    if flavor == "lsf":
        env.update(
            LSB_JOBID=str(seq),
            LSB_JOBINDEX=idx or "0",
            LSB_HOSTS=f"{HOST} {HOST}",
            LSB_MCPU_HOSTS=f"{HOST} 2",
            LSB_QUEUE=job["queue"],
            LS_SUBCWD=job["cwd"],
            LSB_JOBNAME=job["name"] + (f"[{idx}]" if idx else ""),
        )
        return env
    server = SERVERS[flavor]
    env.update(
        PBS_JOBNAME=job["name"],
        PBS_O_WORKDIR=job["cwd"],
        PBS_NODEFILE=str(nodefile),
        PBS_QUEUE=job["queue"],
        PBS_ENVIRONMENT="PBS_BATCH",
        PBS_O_HOST=HOST,
        PBS_SERVER=server,
    )
    env["PBS_JOBID"] = f"{seq}[{idx}].{server}" if idx else f"{seq}.{server}"
    if idx and flavor == "pbspro":
        env.update(PBS_ARRAY_INDEX=idx, PBS_ARRAY_ID=f"{seq}[].{server}")
    elif idx:
        env["PBS_ARRAYID"] = idx
    return env


def dep_state(d: Path, dep: list) -> str:
    """ok | wait | never for one dependency."""
    job = load(d, dep[0])
    if job is None:
        return "ok"  # long gone
    els = job["elements"].values() if dep[1] is None else [job["elements"].get(str(dep[1]))]
    states = []
    for el in els:
        if el is None:
            return "never"
        if el["state"] == "done" and el.get("exit") == 0:
            states.append("ok")
        elif el["state"] in FINAL:
            return "never"
        else:
            states.append("wait")
    return "wait" if "wait" in states else "ok"


def deliver(job: dict, idx: str, el: dict) -> None:
    """Copy the spooled output to its destinations when the element ends."""
    d = state_dir()
    for stream in ("out", "err"):
        spool = d / "spool" / f"{job['seq']}.{idx}.{stream}"
        data = spool.read_bytes() if spool.exists() else b""
        dest = output_path(job, stream, idx)
        if job["flavor"] == "lsf" and stream == "out" and dest:
            status = "Done" if el.get("exit") == 0 else "Exited"
            name = job["name"] + (f"[{idx}]" if idx else "")
            data = (
                f"Sender: LSF System <lsfadmin@{HOST}>\nSubject: Job {job['seq']}"
                f"{f'[{idx}]' if idx else ''}: <{name}> in cluster <fake> {status}\n\n"
                f"Job <{name}> was submitted from host <{HOST}> by user <{user()}>.\n"
                f"{'-' * 60}\n\nThe output (if any) follows:\n\n"
            ).encode() + data
        if not dest:
            continue
        mode = "wb" if job["flavor"] != "lsf" or job.get(f"over_{stream}") else "ab"
        try:
            with open(dest, mode) as f:
                f.write(data)
        except OSError:
            pass


def finish(job: dict, idx: str, el: dict, rc: int) -> None:
    killed = idx in job["kill"]
    if job["flavor"] == "lsf":
        el["exit"] = None if killed else (rc if rc >= 0 else 128 - rc)
        el["reason"] = "TERM_OWNER: job killed by owner" if killed else ""
    else:
        el["exit"] = 256 + signal.SIGTERM if killed else (rc if rc >= 0 else 256 - rc)
    el["state"], el["end"] = "done", time.time()
    el["killed"] = killed
    deliver(job, idx, el)


def supervise(seq: int) -> int:
    procs: dict[str, subprocess.Popen] = {}
    while True:
        with locked() as d:
            job = load(d, seq)
            if job is None:
                return 0
            before = json.dumps(job)
            els = job["elements"]
            for idx, p in list(procs.items()):
                rc = p.poll()
                if rc is None:
                    at = job["kill"].get(idx)
                    if at and time.time() > at + KILL_AFTER:
                        _killpg(p.pid, signal.SIGKILL)
                    continue
                del procs[idx]
                finish(job, idx, els[idx], rc)
            if all(el["state"] in FINAL for el in els.values()):
                save(d, job)
                return 0
            deps = [dep_state(d, dep) for dep in job["deps"]]
            if "never" in deps:
                for el in els.values():
                    if el["state"] in ("queued", "held"):
                        if job["flavor"] == "lsf":
                            el["never"] = True  # LSF leaves it pending for ever
                        else:  # PBS deletes a job whose dependency failed
                            el.update(
                                state="deleted",
                                end=time.time(),
                                reason=f"dependency on job {job['deps'][0][0]} failed",
                            )
            elif "wait" not in deps:
                running = sum(1 for el in els.values() if el["state"] == "running")
                for idx, el in els.items():
                    if el["state"] != "queued" or (job["limit"] and running >= job["limit"]):
                        continue
                    procs[idx] = start(job, idx)
                    el.update(state="running", start=time.time(), pid=procs[idx].pid)
                    running += 1
            if json.dumps(job) != before:
                save(d, job)
        time.sleep(0.05)


def start(job: dict, idx: str) -> subprocess.Popen:
    d = state_dir()
    cwd = job["cwd"] if job["flavor"] == "lsf" else os.environ.get("HOME", "/")
    if not os.path.isdir(cwd):
        cwd = "/"
    with (
        open(d / "spool" / f"{job['seq']}.{idx}.out", "wb") as out,
        open(d / "spool" / f"{job['seq']}.{idx}.err", "wb") as err,
    ):
        return subprocess.Popen(
            ["/bin/bash", job["script"]],
            cwd=cwd,
            env=job_env(job, idx),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            close_fds=True,
        )


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- control ---------------------------------------------------------------------------------
def find(d: Path, text: str) -> tuple[dict | None, list[str]]:
    """The job an id names, and which of its elements ("" for a plain job)."""
    m = re.match(r"^(\d+)(?:\[(\d*)\])?", text.strip())
    job = load(d, int(m[1])) if m else None
    if job is None:
        return None, []
    if m[2]:
        return (job, [m[2]]) if m[2] in job["elements"] else (None, [])
    return job, list(job["elements"])


def control(flavor: str, action: str, ids: list[str]) -> int:
    rc = 0
    with locked() as d:
        for text in ids:
            job, idxs = find(d, text)
            if job is None:
                rc = _unknown(flavor, action, text) or rc
                continue
            els = [job["elements"][i] for i in idxs]
            if action == "delete" and all(el["state"] in FINAL for el in els):
                rc = _finished(flavor, text) or rc
                continue
            for idx, el in zip(idxs, els, strict=True):
                if action == "delete":
                    if el["state"] == "running":
                        job["kill"][idx] = time.time()
                        _killpg(el["pid"], signal.SIGTERM)
                    elif el["state"] in ("queued", "held"):
                        el.update(
                            state="deleted",
                            end=time.time(),
                            killed=True,
                            reason="TERM_OWNER: job killed by owner"
                            if flavor == "lsf"
                            else f"Job deleted by {user()}",
                        )
                elif action == "hold" and el["state"] == "queued":
                    el["state"] = "held"
                elif action == "release" and el["state"] == "held":
                    el["state"] = "queued"
            save(d, job)
            if flavor == "lsf":
                verb = {"delete": "terminated", "hold": "stopped", "release": "resumed"}[action]
                print(f"Job <{text}> is being {verb}")
    return rc


def _unknown(flavor: str, action: str, text: str) -> int:
    if flavor == "lsf":
        print(f"Job <{text}>: No matching job found", file=sys.stderr)
        return 255
    command = {"delete": "qdel", "hold": "qhold", "release": "qrls"}[action]
    print(f"{command}: Unknown Job Id {text}", file=sys.stderr)
    return 1 if flavor == "pbspro" else 153


def _finished(flavor: str, text: str) -> int:
    if flavor == "lsf":
        print(f"Job <{text}>: Job has already finished", file=sys.stderr)
        return 255
    print(f"qdel: Job has finished {text}", file=sys.stderr)
    return 1


# -- status ----------------------------------------------------------------------------------
def pbs_letter(job: dict, el: dict, subjob: bool) -> str:
    s = el["state"]
    if s in FINAL:
        return (
            "X"
            if subjob and job["flavor"] == "pbspro"
            else ("F" if job["flavor"] == "pbspro" else "C")
        )
    return {"queued": "Q", "held": "H", "running": "R"}[s]


def pbs_exit(el: dict) -> int | None:
    if el["state"] == "deleted":
        return None  # deleted before it ran: no exit status
    return el.get("exit")


def pbspro_record(job: dict, idx: str | None) -> tuple[str, dict]:
    server, seq = SERVERS["pbspro"], job["seq"]
    els = job["elements"]
    parent = idx is None and job["array"] is not None
    job_id = (
        f"{seq}[].{server}" if parent else (f"{seq}[{idx}].{server}" if idx else f"{seq}.{server}")
    )
    if parent:
        states = [el["state"] for el in els.values()]
        letter = (
            "F"
            if all(s in FINAL for s in states)
            else (
                "B"
                if any(s != "queued" and s != "held" for s in states)
                else ("H" if all(s == "held" for s in states) else "Q")
            )
        )
        el = {"state": "done" if letter == "F" else "queued"}
    else:
        el = els[idx or ""]
        letter = pbs_letter(job, el, bool(idx))
    rec: dict = {
        "Job_Name": job["name"],
        "Job_Owner": f"{user()}@{HOST}",
        "job_state": letter,
        "queue": job["queue"],
        "server": server,
        "Checkpoint": "u",
        "ctime": stamp(job["submitted"]),
        "Error_Path": f"{HOST}:{job['err'] or ''}",
        "Hold_Types": "u" if letter == "H" else "n",
        "Join_Path": "n",
        "Keep_Files": "n",
        "Mail_Points": "a",
        "mtime": stamp(el.get("end") or el.get("start") or job["submitted"]),
        "Output_Path": f"{HOST}:{job['out'] or ''}",
        "Priority": 0,
        "qtime": stamp(job["submitted"]),
        "Rerunable": "True",
        "Resource_List": {"ncpus": 1, "nodect": 1, "place": "pack", "select": "1:ncpus=1"},
        "substate": {"Q": 10, "H": 20, "R": 42, "B": 41, "F": 92, "X": 92}[letter],
        "Variable_List": {
            "PBS_O_HOME": os.environ.get("HOME", "/"),
            "PBS_O_LOGNAME": user(),
            "PBS_O_WORKDIR": job["cwd"],
            "PBS_O_SYSTEM": "Linux",
            "PBS_O_QUEUE": job["queue"],
            "PBS_O_HOST": HOST,
        },
        "etime": stamp(job["submitted"]),
        "Submit_arguments": job["script"],
        "project": "_pbs_project_default",
        "Submit_Host": HOST,
    }
    if letter == "H":
        rec["comment"] = f"Job held by {user()} on {stamp(job['submitted'])}"
    if el.get("start"):
        rec["exec_host"], rec["exec_vnode"] = f"{HOST}/0", f"({HOST}:ncpus=1)"
        rec["comment"] = f"Job run at {stamp(el['start'])} on ({HOST}:ncpus=1)"
        rec["resources_used"] = {
            "cpupercent": 0,
            "cput": "00:00:00",
            "mem": "2888kb",
            "ncpus": 1,
            "vmem": "13988kb",
            "walltime": _hms(el),
        }
    if letter in ("F", "X") and not parent:
        code = pbs_exit(el)
        if code is not None:
            rec["Exit_status"] = code
            rec["comment"] = rec.get("comment", "Job run") + (
                " and terminated" if el.get("killed") else " and finished"
            )
        else:
            rec["comment"] = el.get("reason") or "Job deleted before it ran"
        rec["history_timestamp"] = int(el.get("end") or time.time())
    if idx:
        rec["array_id"], rec["array_index"] = f"{seq}[].{server}", int(idx)
    if parent:
        rec["array"] = "True"
        rec["array_indices_submitted"] = f"{min(job['array'])}-{max(job['array'])}"
        done = sum(1 for e in els.values() if e["state"] in FINAL)
        run = sum(1 for e in els.values() if e["state"] == "running")
        rec["array_state_count"] = (
            f"Queued:{len(els) - done - run} Running:{run} Exiting:0 Expired:{done} "
        )
    return job_id, rec


def _hms(el: dict) -> str:
    secs = int((el.get("end") or time.time()) - el["start"])
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


def torque_record(job: dict, idx: str | None) -> str:
    server, seq = SERVERS["torque"], job["seq"]
    els = job["elements"]
    parent = idx is None and job["array"] is not None
    job_id = (
        f"{seq}[].{server}" if parent else (f"{seq}[{idx}].{server}" if idx else f"{seq}.{server}")
    )
    el = (
        {"state": "done" if all(e["state"] in FINAL for e in els.values()) else "queued"}
        if parent
        else els[idx or ""]
    )
    letter = pbs_letter(job, el, False)
    parts = [
        ("Job_Id", job_id),
        ("Job_Name", job["name"] + (f"-{idx}" if idx else "")),
        ("Job_Owner", f"{user()}@{HOST}"),
    ]
    if el.get("start"):
        parts.append(
            (
                "resources_used",
                [
                    ("cput", "00:00:00"),
                    ("energy_used", "0"),
                    ("mem", "2888kb"),
                    ("vmem", "13988kb"),
                    ("walltime", _hms(el)),
                ],
            )
        )
    parts += [
        ("job_state", letter),
        ("queue", job["queue"]),
        ("server", server),
        ("Checkpoint", "u"),
        ("ctime", str(int(job["submitted"]))),
        ("Error_Path", f"{HOST}:{job['err'] or ''}" + (f"-{idx}" if idx else "")),
    ]
    if el.get("start"):
        parts.append(("exec_host", f"{HOST}/0"))
    parts += [
        ("Hold_Types", "u" if letter == "H" else "n"),
        ("Join_Path", "n"),
        ("Keep_Files", "n"),
        ("Mail_Points", "a"),
        ("mtime", str(int(time.time()))),
        ("Output_Path", f"{HOST}:{job['out'] or ''}" + (f"-{idx}" if idx else "")),
        ("Priority", "0"),
        ("qtime", str(int(job["submitted"]))),
        ("Rerunable", "True"),
        ("Resource_List", [("nodect", "1"), ("nodes", "1:ppn=1")]),
    ]
    if el.get("pid"):
        parts.append(("session_id", str(el["pid"])))
    variables = f"PBS_ARRAYID={idx}," if idx else ""
    variables += (
        f"PBS_O_QUEUE={job['queue']},PBS_O_HOME={os.environ.get('HOME', '/')},"
        f"PBS_O_LOGNAME={user()},PBS_O_WORKDIR={job['cwd']},PBS_O_HOST={HOST},"
        f"PBS_O_SERVER={server}"
    )
    parts += [
        ("Variable_List", variables),
        ("euser", user()),
        ("egroup", user()),
        ("queue_type", "E"),
        ("etime", str(int(job["submitted"]))),
    ]
    code = pbs_exit(el) if letter == "C" and not parent else None
    if code is not None:
        parts.append(("exit_status", str(code)))
    parts.append(("submit_args", job["script"]))
    if parent:
        parts.append(("job_array_request", f"{min(job['array'])}-{max(job['array'])}"))
    elif idx:
        parts.append(("job_array_id", idx))
    if el.get("start"):
        parts += [("start_time", str(int(el["start"]))), ("start_count", "1")]
    parts += [("fault_tolerant", "False")]
    if el.get("end") and letter == "C":
        parts.append(("comp_time", str(int(el["end"]))))
    parts += [("job_radix", "0"), ("submit_host", HOST), ("request_version", "1")]
    return "<Job>" + _xml(parts) + "</Job>"


def escape(text: str) -> str:  # xml.sax.saxutils would import urllib: slow for every qstat
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml(parts: list) -> str:
    return "".join(f"<{k}>{_xml(v) if isinstance(v, list) else escape(v)}</{k}>" for k, v in parts)


def lsf_record(job: dict, idx: str, fields: list[str]) -> dict:
    el = job["elements"][idx]
    s = el["state"]
    stat = {"queued": "PEND", "held": "PSUSP", "running": "RUN"}.get(s)
    if stat is None:
        stat = "DONE" if s == "done" and el.get("exit") == 0 else "EXIT"
    pend = ""
    if stat == "PEND":
        pend = (
            "Dependency condition invalid or never satisfied;"
            if el.get("never")
            else "New job is waiting for scheduling;"
        )
    elif stat == "PSUSP":
        pend = "The job was suspended by the user while pending;"
    code = el.get("exit")
    values = {
        "JOBID": str(job["seq"]),
        "JOBINDEX": idx or "0",
        "STAT": stat,
        "USER": user(),
        "QUEUE": job["queue"],
        "JOB_NAME": job["name"] + (f"[{idx}]" if idx else ""),
        "EXIT_CODE": "" if code in (None, 0) else str(code),
        "EXIT_REASON": el.get("reason", "") if stat == "EXIT" else "",
        "PEND_REASON": pend,
        "FROM_HOST": HOST,
        "EXEC_HOST": HOST if el.get("start") else "",
        "RUN_TIME": f"{int((el.get('end') or time.time()) - el['start'])} second(s)"
        if el.get("start")
        else "0 second(s)",
        "MAX_MEM": "2 Mbytes" if el.get("start") else "",
        "SUBMIT_TIME": time.strftime("%b %d %H:%M", time.localtime(job["submitted"])),
    }
    return {f.upper(): values.get(f.upper(), "") for f in fields}


def cmd_qstat(flavor: str, args: list[str]) -> int:
    history = "-x" in args
    expand = "-t" in args
    ids = [a for a in args if not a.startswith("-") and a != "json"]
    rc, found = 0, []
    with locked() as d:
        jobs = (
            [(t, *find(d, t)) for t in ids]
            if ids
            else [(str(j["seq"]), j, list(j["elements"])) for j in all_jobs(d)]
        )
    for text, job, idxs in jobs:
        if job is None:
            err = "Unknown Job Id Error" if flavor == "torque" else "Unknown Job Id"
            print(f"qstat: {err} {text}", file=sys.stderr)
            rc = 153
            continue
        if (
            flavor == "pbspro"
            and not history
            and all(job["elements"][i]["state"] in FINAL for i in idxs)
        ):
            print(
                f"qstat: {text} Job has finished, use -x or -H to obtain historical job "
                "information",
                file=sys.stderr,
            )
            rc = 35
            continue
        element = re.match(r"^\d+\[\d+\]", text.strip())
        if job["array"] is None:
            found.append((job, ""))
        elif not element:  # the array as a whole, and its elements with -t
            found.append((job, None))
            if expand:
                found += [(job, i) for i in idxs]
        else:
            found += [(job, i) for i in idxs]
    if flavor == "pbspro" and found:
        out = {
            "timestamp": int(time.time()),
            "pbs_version": "2022.1.7.20241004133957",
            "pbs_server": SERVERS["pbspro"],
            "Jobs": {},
        }
        for job, idx in found:
            job_id, rec = pbspro_record(job, idx)
            out["Jobs"][job_id] = rec
        print(json.dumps(out, indent=4, separators=(",", ":")))
    elif flavor == "torque" and found:
        sys.stdout.write("<Data>" + "".join(torque_record(j, i) for j, i in found) + "</Data>")
    return rc


def cmd_bjobs(args: list[str]) -> int:
    opts, ids = parse_opts(args, {"-o"})
    fields = [f.split(":")[0] for f in opts.get("-o", ["jobid stat"])[-1].split()]
    rc, records = 0, []
    with locked() as d:
        for text in ids:
            job, idxs = find(d, text)
            if job is None:
                print(f"Job <{text}> is not found", file=sys.stderr)
                rc = 255
                continue
            records += [lsf_record(job, i, fields) for i in idxs]
    if records or not ids:
        out = {"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}
        print(json.dumps(out, indent=2, separators=(",", ":")))
    return rc


# -- entry points ----------------------------------------------------------------------------
def cleanup() -> int:
    """Kill what the fake started and is still alive (supervisors, running elements)."""
    with locked() as d:
        jobs = all_jobs(d)
    for job in jobs:
        for el in job["elements"].values():
            if el.get("pid") and el["state"] == "running" and _is_ours(el["pid"], job["script"]):
                _killpg(el["pid"], signal.SIGKILL)
        pid = job.get("supervisor")
        if pid and _is_ours(pid, "supervise"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return 0


def _is_ours(pid: int, needle: str) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def main(command: str, args: list[str]) -> int:
    flavor = os.environ.get("FAKESCHED_FLAVOR", "pbspro")
    if command == "qsub":
        return cmd_qsub(flavor, args)
    if command == "qstat":
        return cmd_qstat(flavor, args)
    if command in ("qdel", "qhold", "qrls"):
        action = {"qdel": "delete", "qhold": "hold", "qrls": "release"}[command]
        return control(flavor, action, [a for a in args if not a.startswith("-")])
    if command == "pbs_rstat":
        return 0  # no reservations
    if command == "bsub":
        return cmd_bsub(args)
    if command == "bjobs":
        return cmd_bjobs(args)
    if command in ("bkill", "bstop", "bresume"):
        action = {"bkill": "delete", "bstop": "hold", "bresume": "release"}[command]
        return control("lsf", action, [a for a in args if not a.startswith("-")])
    print(f"fakesched: unknown command {command}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    if sys.argv[1:2] == ["supervise"]:
        sys.exit(supervise(int(sys.argv[2])))
    if sys.argv[1:2] == ["cleanup"]:
        sys.exit(cleanup())
    sys.exit(main(sys.argv[1], sys.argv[2:]))
