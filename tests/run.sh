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
exec "$PY" -m pytest -ra "$@"
