# Sourced by scripts/test.sh and scripts/demo.sh (and so by .ci/run): point gen-repo at a PyTorch
# backend for the embedded tritonserver, so the libtorch variant is served for real.
# GEN_REPO_BACKEND_DIRECTORY set by the caller wins (set it empty to serve without one); else a
# backend directory beside the checkout (../shared/triton-backends, a Triton PyTorch backend built
# against this project's torch) is used when it exists. Without one the libtorch variant is
# SKIPPED with the reason, and bench measures TorchScript through the Python backend (python-ts).
if [ -z "${GEN_REPO_BACKEND_DIRECTORY+set}" ]; then
    _gr_backends="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/triton-backends"
    if [ -d "$_gr_backends/pytorch" ]; then
        export GEN_REPO_BACKEND_DIRECTORY="$_gr_backends"
    fi
    unset _gr_backends
fi
if [ -n "${GEN_REPO_BACKEND_DIRECTORY:-}" ]; then
    echo "[setup] PyTorch backend: GEN_REPO_BACKEND_DIRECTORY=$GEN_REPO_BACKEND_DIRECTORY" >&2
else
    echo "[setup] no PyTorch backend (GEN_REPO_BACKEND_DIRECTORY unset): libtorch models are skipped" >&2
fi
