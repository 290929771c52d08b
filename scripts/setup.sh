#!/usr/bin/env bash
# Build (or reuse) the project's virtual environment and install gen-repo into it.
#
# The venv lives outside the clone, keyed by a hash of requirements.txt and the Python version, so
# CI and fresh clones reuse it; when absent it is built from nothing. `.venv` in the clone links to it.
# Prints the venv path on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
PY="${PYTHON:-python3}"
pyver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
key="$( (cat requirements.txt; echo "python=$pyver") | sha256sum | cut -c1-16)"
venv="${GEN_REPO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gen-repo/venv-$key}"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "[setup] creating venv $venv (torch + torchvision are ~5 GB; a few minutes the first time)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -r requirements.txt >&2
    touch "$venv/.complete"
else
    echo "[setup] reusing venv $venv" >&2
fi
# The project itself: editable, no dependency resolution (all pinned above).
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >&2
ln -sfn "$venv" .venv
echo "$venv"
