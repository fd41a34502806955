#!/usr/bin/env bash
# The whole test suite, as CI runs it: install hpcexec with its test extras, then pytest, then
# the tests that need no daemon on each other claimed Python (tests/pythons.sh).
# Extra arguments go to every pytest (e.g. `bash tests/run.sh -k cache -x`);
# HPCEXEC_TEST_PYTHONS="" leaves the other Pythons out.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# editable_mode=compat puts the source tree on sys.path with a plain .pth entry: no import
# hook runs in every job's interpreter start-up.
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --config-settings editable_mode=compat -e '.[dev]'
# Real schedulers for the tests marked slurm, sge, ssh and slurm_multinode: installed from
# Debian's packages and started once per run (idempotent). Needs root; without it those tests
# skip and say why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    bash tests/clusters/slurm.sh start
    bash tests/clusters/sge.sh start
    bash tests/clusters/sshd.sh start
    bash tests/clusters/slurm_multinode.sh start
    bash tests/clusters/chromium.sh start # renders hpcexec report's page in its test
elif [ -n "${CI:-}" ]; then
    echo "CI needs root to start the test schedulers" >&2
    exit 1
fi
# The mpi extra (mpi4py, for the MPI tests on the three-node SLURM) builds against the system's
# MPI, so only where there is one (slurm_multinode.sh installs OpenMPI): built from source the
# first time (about 4 min on 2 cores), then taken from pip's wheel cache. A failed build fails
# the MPI test (it says why), not the whole run.
if command -v mpicc >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --config-settings editable_mode=compat --no-binary mpi4py -e '.[mpi]' ||
        echo "tests/run.sh: installing the mpi extra (mpi4py) failed; the MPI tests will fail" >&2
fi
status=0
"$PY" -m pytest -ra "$@" || status=$?
# Then the tests that need no daemon on every other Python version hpcexec claims.
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
bash tests/pythons.sh "$version" "$@" || status=1
exit "$status"
