#!/usr/bin/env bash
# Rebuild the example in model_repository/ (what gen-repo writes, committed so a reader sees the
# format without running anything): the README's ranker, small, as libtorch and python variants.
#   bash scripts/example-repository.sh [--out DIR]     (default: model_repository)
# Needs the venv of scripts/setup.sh. Extra arguments after --out DIR go to gen-repo build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
out=model_repository
if [[ "${1:-}" == "--out" ]]; then out="$2"; shift 2; fi
exec .venv/bin/gen-repo -q build examples/ranker/net.py:make_example \
    --input tokens:int64:-1:0..100 --input mask:bool:-1 --name example_ranker \
    --variants libtorch,python --out "$out" --force "$@"
