#!/usr/bin/env bash
# The whole test suite, as CI runs it: install hpcexec with its test extras, then pytest.
# Extra arguments go to pytest (e.g. `bash tests/run.sh -k cache -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# editable_mode=compat puts the source tree on sys.path with a plain .pth entry: no import
# hook runs in every job's interpreter start-up.
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --config-settings editable_mode=compat -e '.[dev]'
# Real schedulers for the tests marked slurm and sge: installed from Debian's packages and started
# once per run (idempotent). Needs root; without it those tests skip and say why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    bash tests/clusters/slurm.sh start
    bash tests/clusters/sge.sh start
    bash tests/clusters/sshd.sh start
elif [ -n "${CI:-}" ]; then
    echo "CI needs root to start the test schedulers" >&2
    exit 1
fi
exec "$PY" -m pytest -ra "$@"
