#!/usr/bin/env bash
# Set up (or reuse) the venv, then run the whole test suite: unit tests and integration tests
# (real exports, a real tritonserver, real perf_analyzer). Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="$(bash scripts/setup.sh | tail -n 1)"
source scripts/backends.sh
exec "$venv/bin/python" -m pytest "$@"
