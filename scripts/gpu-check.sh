#!/usr/bin/env bash
# The GPU check: gen-repo's KIND_GPU paths run for real on a machine with a CUDA GPU and torch,
# from the kit of scripts/gpu-kit.sh (nothing is installed from a network).
#
#   bash scripts/gpu-check.sh [--dry] [--kit DIR] [--out DIR] [--python PY] [--budget-s S]
#                             [--skip STEP,...] [--ports HTTP,GRPC,METRICS]
#
# Steps, each logged to OUT/logs/STEP.log with its exit code and time in OUT/summary.md:
#   facts    GPU, driver, Python, torch, CUDA; whether the stub finds its libpython
#   env      unpack the kit into a fresh environment layered over PY's packages (the kit's
#            numpy<2, protobuf<5 and client libraries first), gen-repo from the kit
#   build    a small CNN and a tiny transformer, fp32 and fp16 (--dtype float16), variants
#            python + python-ts (+ libtorch where GEN_REPO_BACKEND_DIRECTORY names a PyTorch
#            backend; the kit has none), on --gpu-instances 1; plus the CNN's python-compile
#            variant (python-aoti is compiled for the CPU only: refused for GPU instances)
#   serve    gen-repo serve on the embedded tritonserver; GPU memory per process while serving
#   verify   gen-repo verify over HTTP and gRPC
#   bench    gen-repo bench --quick --instances 1,2 of the python variants (fp32, fp16,
#            compiled) with the in-process ceiling, run on the GPU
#   tune     a one-minute gen-repo tune of the CNN (1 or 2 instances per GPU)
#   summary  the verdicts and the key figures (OUT/summary.md, OUT/figures.json)
# --skip leaves steps out (not counted as failures), e.g. build-cnn-compiled,tune.
# --dry runs the same steps on a machine without a GPU (KIND_CPU instances, shorter bench and
# tune, no compiled variants): what CI runs to prove the script itself works. --budget-s (default
# 420) bounds the whole run: a step that would start past it is skipped, and counts as failed.
# Exit code: 0 when every step passed, 1 otherwise (the summary says which).
set -uo pipefail
set -a  # every variable is exported: the steps run their functions in a child bash
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="gpu"
kit="$here/.gpu-kit"
out="${OUT:-$here/gpu-check-out}"
base_py="python3"
budget_s=420
skip=","
ports="18000,18001,18002"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry) mode="dry"; shift ;;
        --kit) kit="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --python) base_py="$2"; shift 2 ;;
        --budget-s) budget_s="$2"; shift 2 ;;
        --skip) skip=",$2,"; shift 2 ;;
        --ports) ports="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
kit="$(cd "$kit" 2>/dev/null && pwd)" || { echo "gpu-check: no kit; build it with bash scripts/gpu-kit.sh" >&2; exit 2; }
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/gen-repo-gpu-check-XXXXXX")"
repo="$work/model_repository"
started=$SECONDS
summary="$out/summary.md"
: > "$out/steps.tsv"
failed=0

say() { echo "[gpu-check +$((SECONDS - started))s] $*" >&2; }

# step NAME TIMEOUT_S COMMAND...: run it, log it, record its exit code and time.
step() {
    local name="$1" limit="$2"; shift 2
    if [[ "$skip" == *",$name,"* ]]; then
        say "$name: skipped (--skip)"
        printf '%s\t%s\t%s\n' "$name" "skipped" "0" >> "$out/steps.tsv"
        return 0
    fi
    local left=$(( budget_s - (SECONDS - started) ))
    if [ "$left" -lt 15 ]; then
        say "$name: skipped, the time budget of ${budget_s}s is spent"
        printf '%s\t%s\t%s\n' "$name" "skipped" "0" >> "$out/steps.tsv"
        failed=1
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    say "$name (at most ${limit}s): $*"
    local t0=$SECONDS rc=0
    # (through bash -c: a step may be one of this script's functions, exported below)
    timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" > "$out/logs/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$out/steps.tsv"
    if [ "$rc" -ne 0 ]; then
        say "$name: exit $rc; last lines of logs/$name.log:"
        tail -n 15 "$out/logs/$name.log" | sed 's/^/    /' >&2
        failed=1
    fi
    return "$rc"
}

# -- facts ------------------------------------------------------------------------------------
facts() {
    echo "mode: $mode"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "kit: $kit"
    (cd "$kit" && sha256sum -c --quiet MANIFEST.sha256 && echo "kit files: SHA-256 match MANIFEST.sha256")
    uname -a
    nproc; free -g | head -2
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    "$base_py" - <<'EOF'
import sys, sysconfig
print("python", sys.version.split()[0], sys.executable, "LIBDIR", sysconfig.get_config_var("LIBDIR"))
import numpy, torch
print("numpy (base)", numpy.__version__, "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
}
export -f facts
step facts 60 facts
pyver="$("$base_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
tag="${pyver/./}"

# -- env: the kit over the base Python's packages ---------------------------------------------
env_dir="$work/env"
make_env() {
    set -e
    [ -f "$kit/deps-cp$tag.tar.xz" ] || { echo "the kit is for another Python: no deps-cp$tag.tar.xz in $kit (rebuild it with scripts/gpu-kit.sh --python $pyver)"; return 1; }
    # --without-pip: nothing is installed from a network; the packages come from the kit.
    "$base_py" -m venv --without-pip "$env_dir"
    local site
    site="$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    xz -dc "$kit/triton.tar.xz" | tar -C "$env_dir/lib/python$pyver" -xf - site-packages
    xz -dc "$kit/triton.tar.xz" | tar -C "$env_dir" -xf - bin
    xz -dc "$kit/deps-cp$tag.tar.xz" | tar -C "$env_dir/lib/python$pyver" -xf -
    mkdir -p "$work/gen-repo"
    xz -dc "$kit/gen-repo.tar.xz" | tar -C "$work/gen-repo" -xf -
    # The base Python's packages (torch, CUDA) after the kit's own: addsitedir also reads their
    # .pth files. A .pth line that starts with "import" is run by site.py.
    "$base_py" - "$site" "$work/gen-repo" <<'EOF'
import site, sys
from pathlib import Path
target, source = Path(sys.argv[1]), sys.argv[2]
dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
(target / "zz_gen_repo_base.pth").write_text("\n".join(lines) + "\n")
(target / "gen_repo_source.pth").write_text(source + "\n")
print("base site-packages:", ", ".join(dirs))
EOF
    cat > "$env_dir/bin/gen-repo" <<EOF
#!$env_dir/bin/python
import sys
from generator.cli import main
sys.exit(main())
EOF
    chmod +x "$env_dir/bin/gen-repo"
    (cd "$work" && "$env_dir/bin/python" - <<'EOF'
import numpy, torch, google.protobuf, tritonclient.http, tritonclient.grpc, generator
from generator.serve.triton_install import TritonInstall, bundled_backend_dir
from generator.bench.perf_analyzer import find_binary
print("numpy", numpy.__version__, "protobuf", google.protobuf.__version__, "torch", torch.__version__)
print("gen-repo from", generator.__file__)
install = TritonInstall.locate()
print("tritonserver", install.binary, "backends", bundled_backend_dir(install))
print("perf_analyzer", find_binary())
assert numpy.__version__.startswith("1."), "the Python-backend stub needs numpy<2"
EOF
    )
    local t="$env_dir/lib/python$pyver/site-packages/pytriton/tritonserver"
    echo "libraries of the stub and the server (python, and any not found):"
    ldd "$t/python_backend_stubs/$pyver/triton_python_backend_stub" "$t/bin/tritonserver" \
        | grep -E '^/|python|not found' || true
}
export -f make_env
if ! step env 180 make_env; then
    say "no environment: nothing else can run"
    exit 1
fi
PATH="$env_dir/bin:$PATH"
gr() { "$env_dir/bin/gen-repo" "$@"; }
export -f gr

# -- build ------------------------------------------------------------------------------------
if [ "$mode" = "gpu" ]; then
    instances=(--gpu-instances 1 --cpu-instances 0)
    bench_models=cnn_python,cnn_fp16_python,tfm_python,tfm_fp16_python
    [[ "$skip" == *",build-cnn-compiled,"* ]] || bench_models="$bench_models,cnnc"
    bench_args=(--quick --instances 1,2 --no-floor)
    tune_minutes=1
else
    instances=(--cpu-instances 1)
    bench_models=cnn_python,tfm_fp16_python
    bench_args=(--quick --instances 1 --ceiling-seconds 0.2 --no-floor)
    tune_minutes=0.3
fi
variants="python,python-ts"
[ -n "${GEN_REPO_BACKEND_DIRECTORY:-}" ] && variants="libtorch,$variants"
models="$work/gen-repo/examples/gpu_check/gpu_models.py"
common=(--out "$repo" --threads 1 --max-batch-size 8 "${instances[@]}")
cnn=("$models:small_cnn" --input input:float32:3x64x64)
tfm=("$models:tiny_transformer" --input tokens:int64:-1:0..999)
step build-cnn 300 gr build "${cnn[@]}" --name cnn --variants "$variants" "${common[@]}"
step build-cnn-fp16 300 gr build "${cnn[@]}" --name cnn_fp16 --dtype float16 --variants python "${common[@]}"
step build-tfm 300 gr build "${tfm[@]}" --name tfm --variants "$variants" "${common[@]}"
step build-tfm-fp16 300 gr build "${tfm[@]}" --name tfm_fp16 --dtype float16 --variants python "${common[@]}"
if [ "$mode" = "gpu" ]; then
    step build-cnn-compiled 300 gr build "${cnn[@]}" --name cnnc --variants python-compile "${common[@]}"
fi
find "$repo" -name config.pbtxt -exec sh -c 'echo "== $1"; cat "$1"' _ {} \; > "$out/logs/configs.txt" 2>&1

# -- serve + verify ---------------------------------------------------------------------------
IFS=, read -r http_port grpc_port metrics_port <<< "$ports"
serve_and_verify() {
    "$env_dir/bin/gen-repo" serve --repo "$repo" --http-port "$http_port" --grpc-port "$grpc_port" \
        --metrics-port "$metrics_port" > "$out/logs/serve.log" 2>&1 &
    local pid=$! t0=$SECONDS rc=0
    while ! grep -q '^serving ' "$out/logs/serve.log"; do
        if ! kill -0 "$pid" 2>/dev/null; then echo "gen-repo serve ended:"; cat "$out/logs/serve.log"; return 1; fi
        if [ $((SECONDS - t0)) -gt 240 ]; then echo "no model served after 240 s"; kill -INT "$pid"; wait "$pid"; return 1; fi
        sleep 1
    done
    echo "served after $((SECONDS - t0)) s:"; cat "$out/logs/serve.log"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv > "$out/logs/gpu-memory.csv" 2>&1
        nvidia-smi > "$out/logs/nvidia-smi.txt" 2>&1
        ps -eo pid,rss,args | grep -E 'triton_python_backend_stub|tritonserver' | grep -v grep > "$out/logs/processes.txt"
    fi
    gr verify --repo "$repo" --http-url "127.0.0.1:$http_port" --grpc-url "127.0.0.1:$grpc_port" || rc=$?
    kill -INT "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then echo "gen-repo serve did not stop within 60 s of Ctrl-C"; kill -KILL "$pid"; rc=1; fi
    wait "$pid" 2>/dev/null
    return "$rc"
}
export -f serve_and_verify
step serve-verify 420 serve_and_verify

# -- bench, tune ------------------------------------------------------------------------------
step bench 200 gr bench --repo "$repo" --models "$bench_models" "${bench_args[@]}" --out "$out/bench"
step tune 150 gr tune --repo "$repo" --models cnn --budget-minutes "$tune_minutes" --out "$work/prod_repository" --results "$out/tune"

# -- summary ----------------------------------------------------------------------------------
"${env_dir}/bin/python" "$work/gen-repo/scripts/gpu_check_summary.py" "$out" "$mode" > "$summary" 2>"$out/logs/summary.log" \
    || { echo "the summary failed: $(tail -n 3 "$out/logs/summary.log")" >> "$summary"; failed=1; }
cat "$summary"
rm -rf "$work"
say "done in $((SECONDS - started)) s; $( [ "$failed" -eq 0 ] && echo 'every step passed' || echo 'some steps FAILED (see above)')"
exit "$failed"
