"""A pipeline of shell jobs with dependencies: prepare, three parts in parallel, merge.

Needs ``pip install .`` and bash; a scheduler only with ``--backend``. It keeps its jobs in
``.hpcexec/`` and the pipeline's files in ``pipeline-data/`` (``pipeline-fail/`` with
``--fail``), all in the current directory and ignored by git.

    python examples/shell_pipeline.py                   # on this machine
    python examples/shell_pipeline.py --backend slurm   # the same on SLURM
    python examples/shell_pipeline.py --fail            # a part fails: merge never runs

``after=`` makes a job wait for others: on a scheduler it is queued at once with an
``afterok`` dependency; locally it starts when they have completed. If one of them fails,
the jobs after it are cancelled with that reason. ``{threads}`` and the other placeholders
are filled from the job's resources; other braces (awk's, the shell's) are left alone.
The jobs run in ``--workdir``, so they share its files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hpcexec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="local")
    parser.add_argument(
        "--workdir",
        help="where the jobs run (default: pipeline-data, or pipeline-fail with --fail)",
    )
    parser.add_argument("--cache-dir", default=".hpcexec")
    parser.add_argument("--fail", action="store_true", help="make part 1 fail")
    args = parser.parse_args()

    # The workdir is part of every job's cache key: the failing variant is other jobs.
    work = Path(args.workdir or ("pipeline-fail" if args.fail else "pipeline-data")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    with hpcexec.Executor(
        args.backend, cache_dir=args.cache_dir, time="0:05:00", workdir=str(work)
    ) as ex:
        prepare = ex.options(name="prepare", threads=2).submit_shell(
            "echo preparing with {threads} threads; seq 1 3000 > numbers.txt"
        )
        parts = []
        for i in range(3):
            broken = "exit 7; " if args.fail and i == 1 else ""
            parts.append(
                ex.options(name=f"part{i}", after=[prepare]).submit_shell(
                    f"{broken}awk 'NR % 3 == {i} {{ s += $1 }} END {{ print s }}' numbers.txt "
                    f"> part{i}.txt"
                )
            )
        merge = ex.options(name="merge", after=parts).submit_shell(
            "awk '{ s += $1 } END { print s }' part0.txt part1.txt part2.txt"
        )

        print(prepare.result().stdout.strip())
        try:
            total = merge.result().stdout.strip()
        except hpcexec.JobFailed as e:
            print(f"merge did not run: {e.state.value if e.state else 'failed'}, {e.reason}")
            return
    print(f"sum of 1..3000 by three parts: {total} (expected {3000 * 3001 // 2})")
    print(f"jobs: {', '.join(f'{f.record.name}={f.job_id}' for f in [prepare, *parts, merge])}")


if __name__ == "__main__":
    main()
