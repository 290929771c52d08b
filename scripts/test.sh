#!/usr/bin/env bash
# Set up (or reuse) the venv, then run the whole test suite: unit tests and integration tests
# (real exports, a real tritonserver, real perf_analyzer). Extra arguments go to pytest.
#
# The suite runs in parallel workers (pytest-xdist), one test file per worker at a time (a file's
# fixtures, such as one server for all its tests, stay in one process): min(cores, 4) workers, or
# GEN_REPO_TEST_WORKERS (0 = all in this process, e.g. to use a debugger).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="$(bash scripts/setup.sh | tail -n 1)"
source scripts/backends.sh
cores="$(nproc)"
workers="${GEN_REPO_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
if [ "$workers" -le 1 ]; then workers=0; fi
exec "$venv/bin/python" -m pytest -n "$workers" --dist loadfile --durations=20 "$@"
