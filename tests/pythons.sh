#!/usr/bin/env bash
# The tests that need no scheduler, SGE, sshd or three-node SLURM, on every Python version
# hpcexec claims (the "Programming Language :: Python :: 3.N" classifiers in pyproject.toml)
# other than the one given as $1 (the full run's), each in a fresh virtual environment under
# .ci/venvs/.
# Further arguments go to pytest. HPCEXEC_TEST_PYTHONS="3.10 3.13" picks the versions
# ("" for none). A version found nowhere is reported, and does not fail the run.
# Looks for python3.N on PATH, then in pyenv's versions ($PYENV_ROOT, default ~/.pyenv).
set -uo pipefail
cd "$(dirname "$0")/.."
done_version=$1
shift

claimed=$(grep -o 'Programming Language :: Python :: 3\.[0-9]*' pyproject.toml | grep -o '3\.[0-9]*$')
versions=${HPCEXEC_TEST_PYTHONS-$claimed}

# An interpreter of exactly version $1 (3.N), or nothing.
find_python() {
    local v=$1 cand
    for cand in "$(command -v "python$v" || true)" \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$v".*/bin/"python$v" 2>/dev/null | sort -V -r); do
        # a pyenv shim is on PATH even where its version is not the active one: run it to see
        if [ -n "$cand" ] && [ "$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
                                  2>/dev/null)" = "$v" ]; then
            echo "$cand"
            return
        fi
    done
}

# Fresh venv for $1 (3.N) from interpreter $2, hpcexec installed as tests/run.sh does; then pytest.
run_version() {
    local v=$1 py=$2 venv=.ci/venvs/py$1
    shift 2
    rm -rf "$venv"
    "$py" -m venv "$venv" || return 1
    # editable_mode=compat: see tests/run.sh
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --root-user-action=ignore --config-settings editable_mode=compat -e '.[dev]' || return 1
    "$venv/bin/python" -m pytest -q -x -p no:cacheprovider \
        -m "not slurm and not sge and not ssh and not slurm_multinode" "$@"
}

summary=()
failed=0
for v in $versions; do
    if [ "$v" = "$done_version" ]; then
        summary+=("Python $v: the full run")
        continue
    fi
    py=$(find_python "$v")
    if [ -z "$py" ]; then
        summary+=("Python $v: NOT TESTED, no python$v on PATH or in ${PYENV_ROOT:-$HOME/.pyenv}/versions")
        continue
    fi
    echo "=== Python $v ($py): the tests that need no scheduler or sshd"
    start=$SECONDS
    if run_version "$v" "$py" "$@"; then
        summary+=("Python $v: passed ($((SECONDS - start)) s, $py)")
    else
        summary+=("Python $v: FAILED ($py)")
        failed=1
    fi
done
echo "=== Python versions"
printf '%s\n' "${summary[@]}"
exit "$failed"
