#!/usr/bin/env bash
# The rules CI checks before the tests (.ci/run): lint (ruff check), formatting (ruff format
# --check), types (mypy, configured in pyproject.toml), the layering (import-linter's
# contracts in pyproject.toml) and the documentation site (mkdocs build --strict of mkdocs.yml,
# into a temporary directory). Installs hpcexec with its lint extra (the checkers, the docs
# extra and the dev extra) first.
# Runs every check and fails if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# editable_mode=compat: see tests/run.sh; the lint extra holds the checkers and the dev extra
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --config-settings editable_mode=compat -e '.[lint]' || exit 1
status=0
check() {
    local name=$1
    shift
    if "$@"; then
        echo "check $name: passed"
    else
        echo "check $name: FAILED ($*)" >&2
        status=1
    fi
}
paths=(hpcexec tests benchmarks examples)
check lint "$PY" -m ruff check "${paths[@]}"
# ruff formats the Python blocks of Markdown files too: the docs' examples stay formatted
check format "$PY" -m ruff format --check "${paths[@]}" docs README.md CONTRIBUTING.md
check types "$PY" -m mypy
# import-linter has no "python -m" entry point; this is its lint-imports command
check layers "$PY" -c 'import sys; from importlinter.cli import lint_imports_command
sys.argv[0] = "lint-imports"; sys.exit(lint_imports_command())' --no-cache
# the site goes to a temporary directory, so that nothing is left in the clone
site=$(mktemp -d)
check docs env NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict --quiet --config-file mkdocs.yml --site-dir "$site"
rm -rf "$site"
exit "$status"
