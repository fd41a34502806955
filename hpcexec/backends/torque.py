"""The Torque dialect (PBS lineage, Adaptive Computing): ``qsub``, ``qstat -x -t`` (XML),
``qdel``, ``qhold``, ``qrls``, rendered and parsed. Pure functions only.

Ids look like PBS Pro's: ``<seq>.<server>``, arrays ``<seq>[].<server>`` with elements
``<seq>[<i>].<server>`` (``-t 0-<n-1>``, so ``PBS_ARRAYID`` is the element index). On Torque
``qstat -x`` means XML, not history: a finished job stays visible in state ``C`` with its
``exit_status`` only for ``keep_completed`` seconds; after that it is "Unknown Job Id" and the
driver judges it by the exit-code file its script wrote.

Output: Torque cannot put the array index inside a path. Each element's ``-o``/``-e`` path
is the array's path with ``-<index>`` appended (``job_clone()`` in Torque's server), which the
driver's per-element names cannot match; and Torque copies output into place only when the
job ends. So the job script redirects its own stdout and stderr to the job's files (the
prologue of :meth:`TorqueBackend.script_parts`), as the LSF backend does, and Torque's own
``-o``/``-e`` (site prologue/epilogue text, Torque's messages) go to ``torque.out|err[-<i>]``
beside the submission script.

What Torque cannot express: threads per process (asked for as ``ppn x threads`` cores per
node); memory is per job, so ``mem`` (per node here) is asked for as ``mem x nodes``.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

from ..errors import SchedulerOutputError
from ..resources import Resources
from ..resourcevalues import format_time
from ..script import ScriptParts
from ..states import JobState
from .base import (
    NATIVE,
    JobStatus,
    Rule,
    SchedulerBackend,
    SubmitSpec,
    Usage,
    array_range,
    option,
    own_output,
    rule,
)
from .pbsfamily import (
    PBS_DRMAA_RULES,
    PBS_HOLD,
    PBS_REFUSED,
    PbsControl,
    aliases,
    check_native,
    finished_status,
    hosts,
    job_name,
    mib,
    nodefile_prologue,
    pbs_path,
    query_ids,
    seconds,
)

#: Torque job_state letters (qstat man page) onto the common states; C is refined by
#: exit_status in finished_status().
STATES: dict[str, JobState] = {
    "Q": JobState.PENDING,
    "W": JobState.PENDING,  # waiting for its execution time
    "T": JobState.PENDING,  # being moved
    "H": JobState.HELD,
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,  # exiting after having run
    "S": JobState.SUSPENDED,
    "C": JobState.COMPLETED,  # completed after having run, whatever the outcome
}
#: Torque's own negative exit_status values (Admin Guide, "Job Exit Status")
EXIT_CODES: dict[int, tuple[JobState, str]] = {
    -10: (JobState.FAILED, "memory limit exceeded"),
    -11: (JobState.TIMEOUT, "walltime exceeded"),
    -12: (JobState.FAILED, "cpu time limit exceeded"),
}
GONE = re.compile(r"Unknown Job Id", re.I)


def _own(spec: SubmitSpec) -> str:
    return os.path.join(os.path.dirname(spec.script), "torque")  # the job writes its own


@rule("nodes", "ppn", "threads", "gpus", "gpus_per_task")
def _nodes(b: object, spec: SubmitSpec) -> list[str]:
    res = spec.res
    if not (res.nodes or res.ppn or res.threads or res.gpus_per_node):
        return []
    gpus = f":gpus={res.gpus_per_node}" if res.gpus_per_node else ""
    return [f"-l nodes={res.nodes or 1}:ppn={res.cores}{gpus}"]


#: Torque's dialect (Torque qsub(1B)): in directive order. Torque's own -o/-e files get
#: only its messages: the job script writes the job's output (see the module doc), and
#: ``join_output`` is also applied there.
RULES: tuple[Rule, ...] = (
    Rule(
        ("name",),
        lambda b, spec: [f"-N {job_name(spec.name)}", f"-o {pbs_path(_own(spec) + '.out')}"],
    ),
    Rule(
        ("join_output",),
        lambda b, spec: [] if spec.res.join_output else [f"-e {pbs_path(_own(spec) + '.err')}"],
    ),
    option("queue", lambda v: f"-q {v}"),
    option("account", lambda v: f"-A {v}"),
    _nodes,
    Rule(
        ("mem", "nodes"),
        lambda b, spec: (
            [f"-l mem={spec.res.mem * (spec.res.nodes or 1)}mb"] if spec.res.mem else []
        ),
    ),
    option("time", lambda v: f"-l walltime={format_time(v)}"),
    Rule(("array",), lambda b, spec: [f"-t {r}"] if (r := array_range(spec)) else []),
    PBS_HOLD,
    Rule(
        ("after",),
        lambda b, spec: ["-W depend=afterok:" + ":".join(spec.after)] if spec.after else [],
    ),
    *PBS_DRMAA_RULES,
    NATIVE,
)


class TorqueBackend(PbsControl, SchedulerBackend):
    name = "torque"
    commands = ("qsub", "qstat")
    others = ("qconf", "pbs_rstat")  # Grid Engine's, PBS Pro's: their qsub is not Torque's
    default_max_array = 1000
    array_index_pattern = ""  # none: Torque appends -<index> to -o paths; jobs write their own
    array_index_expr = "$PBS_ARRAYID"
    prefix = "#PBS"
    rules = RULES
    refused = PBS_REFUSED

    def task_launcher(self, res: Resources, python: str) -> list[str]:
        """``mpiexec`` (the MPI's, which reads the job's hosts through PBS's TM
        interface; Torque documents OSC's ``mpiexec``), with the tasks' number."""
        return ["mpiexec", "-n", str(res.ntasks)]

    def check(self, res: Resources) -> None:
        self.check_refused(res)
        check_native(res, "#PBS", "Torque")

    def script_parts(
        self, res: Resources, *, name: str, jobdir: str, stdout: str, stderr: str, workdir: str
    ) -> ScriptParts:
        err = stdout if res.join_output else stderr
        return ScriptParts(
            directives=[],  # given per submission by directives()
            prologue=own_output(stdout, err, workdir) + "\n" + nodefile_prologue(),
            job_id_expr='"${PBS_JOBID:-}"',
            nodelist_expr='"$_hx_nodes"',
            array_index_expr='"${PBS_ARRAYID:-}"',
        )

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["qstat", "-x", "-t", *query_ids(job_ids)]

    def parse_status(self, out: str, err: str, returncode: int) -> dict[str, JobStatus]:
        problems = [line for line in err.splitlines() if line.strip() and not GONE.search(line)]
        if returncode != 0 and (problems or not (err.strip() or out.strip())):
            why = problems[0] if problems else "no output"
            raise SchedulerOutputError(f"qstat failed ({returncode}): {why.strip()[:300]}")
        # Torque before 6.1 prints nothing at all when no job matches (TRQ-3622).
        text = re.sub(r"<\?xml[^>]*\?>", "", out).strip()
        if not text:
            return {}
        found: dict[str, JobStatus] = {}
        for job in _jobs(text):
            job_id = (job.findtext("Job_Id") or "").strip()
            st = self._status(job)
            if job_id and st is not None and "[]" not in job_id:  # skip arrays as a whole
                for alias in aliases(job_id):
                    found.setdefault(alias, st)
        return found

    @staticmethod
    def _status(job: ET.Element) -> JobStatus | None:
        state = STATES.get((job.findtext("job_state") or "").strip())
        if state is None:
            return None
        extra = Usage(
            nodelist=hosts(job.findtext("exec_host")),
            elapsed=seconds(job.findtext("resources_used/walltime")),
            max_rss=mib(job.findtext("resources_used/mem")),
        )
        if state is JobState.COMPLETED:
            text = (job.findtext("exit_status") or "").strip()
            code = int(text) if re.match(r"^-?\d+$", text) else None
            return finished_status(code, scheduler="Torque", codes=EXIT_CODES, usage=extra)
        return JobStatus(state, reason=(job.findtext("comment") or None), **extra)

    def max_array_argv(self) -> list[str] | None:
        return ["qmgr", "-c", "list server"]

    def parse_max_array(self, out: str) -> int | None:
        m = re.search(r"^\s*max_job_array_size\s*=\s*(\d+)", out, re.M)
        return int(m[1]) if m else None


def _jobs(text: str) -> list[ET.Element]:
    """The ``<Job>`` elements; a job whose XML is broken (unescaped characters from its
    environment) is rebuilt from the few tags that matter."""
    try:
        root = ET.fromstring(f"<all>{text}</all>")  # one or more <Data> documents
    except ET.ParseError:
        pass
    else:
        if not len(root):
            raise SchedulerOutputError(f"qstat printed no XML: {text[:200]!r}")
        return list(root.iter("Job"))
    jobs = []
    for block in re.findall(r"<Job>.*?</Job>", text, re.S):
        try:
            jobs.append(ET.fromstring(block))
        except ET.ParseError:
            job = ET.Element("Job")
            for tag in ("Job_Id", "job_state", "exit_status", "exec_host"):
                m = re.search(rf"<{tag}>([^<]*)</{tag}>", block)
                if m:
                    ET.SubElement(job, tag).text = m[1]
            jobs.append(job)
    if not jobs:
        raise SchedulerOutputError(f"qstat printed no readable XML: {text[:200]!r}")
    return jobs
