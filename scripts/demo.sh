#!/usr/bin/env bash
# Fresh machine -> the whole story on the default model (torchvision resnet18):
# set up the venv, build the repository, serve it on the embedded tritonserver, verify it over
# HTTP and gRPC, benchmark the variants, and print where the report is. Extra arguments go to
# `gen-repo demo`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="$(bash scripts/setup.sh | tail -n 1)"
source scripts/backends.sh
exec "$venv/bin/gen-repo" demo "$@"
