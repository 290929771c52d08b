# Sourced by scripts/test.sh and scripts/demo.sh (and so by .ci/run): says which PyTorch backend
# the embedded tritonserver will use, so the libtorch variant is served for real when there is one.
# gen-repo finds it itself: GEN_REPO_BACKEND_DIRECTORY when set (directories separated by ':'; set
# it empty to serve without one), else /opt/tritonserver/backends when it holds pytorch/ (Triton's
# own install, the NGC image). Without one the libtorch variant is SKIPPED with the reason, the
# tests that need one skip saying so, and bench measures TorchScript through the Python backend
# (python-ts).
if [ -n "${GEN_REPO_BACKEND_DIRECTORY:-}" ]; then
    echo "[setup] PyTorch backend: GEN_REPO_BACKEND_DIRECTORY=$GEN_REPO_BACKEND_DIRECTORY" >&2
elif [ -z "${GEN_REPO_BACKEND_DIRECTORY+set}" ] && [ -d /opt/tritonserver/backends/pytorch ]; then
    echo "[setup] PyTorch backend: /opt/tritonserver/backends (GEN_REPO_BACKEND_DIRECTORY unset)" >&2
elif [ -n "${GEN_REPO_BACKEND_DIRECTORY+set}" ]; then
    echo "[setup] no PyTorch backend (GEN_REPO_BACKEND_DIRECTORY is set empty): libtorch models are skipped" >&2
else
    echo "[setup] no PyTorch backend (GEN_REPO_BACKEND_DIRECTORY unset, no /opt/tritonserver/backends/pytorch):" \
         "libtorch models are skipped. To get one, copy the NGC image's /opt/tritonserver/backends" \
         "(nvcr.io/nvidia/tritonserver:24.10-py3) and set GEN_REPO_BACKEND_DIRECTORY to the copy" >&2
fi
