#!/usr/bin/env bash
# Assemble the GPU check kit: everything a GPU machine with torch but without gen-repo's serving
# stack needs to run scripts/gpu-check.sh, in one folder (default .gpu-kit, ignored by git).
#
#   bash scripts/gpu-kit.sh [--out DIR] [--python X.Y]
#
# What it holds, taken from the project's venv (scripts/setup.sh builds it) unless said:
#   triton.tar.xz     the embedded tritonserver (bin, the Python backend, the Python-backend stub
#                     of the target Python), the bundled libraries that it and perf_analyzer link
#                     (found with ldd), tritonclient, and perf_analyzer
#   deps-cpXY.tar.xz  for the target Python, unpacked wheels of the compiled client dependencies
#                     (gevent, geventhttpclient, rapidjson, ...), numpy<2 (the stub needs it) and
#                     protobuf<5 (tritonclient's generated code needs it), at the venv's versions;
#                     the only files downloaded (from the package index, by pip), cached in
#                     ~/.cache/gen-repo/kit-wheels-cpXY
#   gen-repo.tar.xz   gen-repo itself: the checkout's tracked files as they are now
#   gpu-check.sh      the check that uses the kit
#   MANIFEST.sha256   the SHA-256 of every file (sha256sum -c checks it)
# --python X.Y (default 3.12, the GPU image's) picks the stub and the wheels; the dry run of the
# check on this machine uses a kit built for this machine's Python.
# The kit must stay under 60 MiB (a GPU machine takes at most 64 MiB of files per call); this
# script fails when it does not.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
out=".gpu-kit"
target_py="3.12"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --python) target_py="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-kit: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
limit_mib=60

venv="$(bash scripts/setup.sh | tail -n 1)"
py="$venv/bin/python"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
triton="$site/pytriton/tritonserver"
libs="$site/nvidia_pytriton.libs"
for p in "$triton/bin/tritonserver" "$triton/python_backend_stubs/$target_py" "$libs" \
         "$venv/bin/perf_analyzer" "$site/tritonclient"; do
    [ -e "$p" ] || { echo "gpu-kit: $p is missing from the venv $venv; rerun scripts/setup.sh" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

echo "[gpu-kit] tritonserver, Python backend, the stub for Python $target_py, tritonclient, perf_analyzer" >&2
sp="$stage/site-packages"
mkdir -p "$sp/pytriton/tritonserver/python_backend_stubs" "$sp/nvidia_pytriton.libs" "$stage/bin"
cp "$site/pytriton/__init__.py" "$sp/pytriton/"  # lets gen-repo find the folder (never imported)
cp -r "$triton/bin" "$triton/backends" "$sp/pytriton/tritonserver/"
cp -r "$triton/python_backend_stubs/$target_py" "$sp/pytriton/tritonserver/python_backend_stubs/"
cp -r "$site/tritonclient" "$site"/tritonclient-*.dist-info "$sp/"
rm -rf "$sp/tritonclient/bin"  # perf_client and friends: perf_analyzer below is the one used
find "$sp" -name __pycache__ -prune -exec rm -rf {} +
cp "$venv/bin/perf_analyzer" "$stage/bin/"
# The bundled libraries that something in the kit links (ldd resolves them through the RPATHs and
# LD_LIBRARY_PATH); the rest of the folder (e.g. the Python 3.13 libpython) stays behind.
needed="$(for f in "$sp/pytriton/tritonserver/bin/tritonserver" \
                   "$sp"/pytriton/tritonserver/backends/python/*.so \
                   "$sp"/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub \
                   "$stage/bin/perf_analyzer" "$libs"/libcudart-*.so.* "$libs"/libb64-*.so.*; do
              LD_LIBRARY_PATH="$libs" ldd "$f" 2>/dev/null | awk '{print $3}'
              echo "$f"
          done | grep -F "$libs/" | sort -u)"
for f in $needed; do cp "$f" "$sp/nvidia_pytriton.libs/"; done
tar -C "$stage" -cf - site-packages bin | xz -T0 -6 > "$out/triton.tar.xz"

echo "[gpu-kit] the compiled client dependencies, numpy<2 and protobuf<5 for Python $target_py" >&2
# The versions of the venv, except geventhttpclient: tritonclient 2.50 asks for <=2.0.2, which has
# no wheel for Python 3.12; later tritonclient releases take >=2.3.3, the same client API.
pins="$("$py" - "$target_py" <<'EOF'
import sys
from importlib.metadata import version
for name in ("numpy", "protobuf", "gevent", "geventhttpclient", "greenlet", "zope.event",
             "zope.interface", "python-rapidjson", "brotli"):
    pin = version(name)
    if name == "geventhttpclient" and tuple(map(int, sys.argv[1].split("."))) >= (3, 12):
        pin = "2.3.9"
    print(f"{name}=={pin}")
EOF
)"
tag="${target_py/./}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/gen-repo/kit-wheels-cp$tag"
mkdir -p "$cache" "$stage/deps/site-packages"
# shellcheck disable=SC2086
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$target_py" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$cache" $pins \
    2> >(grep -v "^WARNING: Location" >&2)
for pin in $pins; do
    name="${pin%%==*}"; ver="${pin##*==}"
    norm="$(echo "$name" | tr '.-' '__' | tr 'A-Z' 'a-z')"
    found="$(ls "$cache" | awk -v n="$norm" -v v="$ver" 'tolower($0) ~ "^"n"-"v"-" {print; exit}')"
    [ -n "$found" ] || { echo "gpu-kit: no wheel of $pin for Python $target_py in $cache" >&2; exit 1; }
    # A wheel of a plain library is its files as they lie in site-packages: unpacked, it is
    # installed (its scripts, under *.data, are not needed).
    "$py" -m zipfile -e "$cache/$found" "$stage/deps/site-packages"
done
rm -rf "$stage"/deps/site-packages/*.data
tar -C "$stage/deps" -cf - site-packages | xz -T0 -6 > "$out/deps-cp$tag.tar.xz"

echo "[gpu-kit] gen-repo itself (the checkout's tracked files)" >&2
git ls-files -z -co --exclude-standard | tar --null -T - -cf - | xz -T0 -6 > "$out/gen-repo.tar.xz"
cp scripts/gpu-check.sh "$out/"

(cd "$out" && sha256sum -- * > MANIFEST.sha256)
bytes="$(du -sb "$out" | cut -f1)"
mib="$(( (bytes + 1048575) / 1048576 ))"
echo "[gpu-kit] $out: $mib MiB ($bytes bytes) for Python $target_py" >&2
if [ "$bytes" -ge $(( limit_mib * 1048576 )) ]; then
    echo "gpu-kit: the kit is $mib MiB, over its limit of $limit_mib MiB" >&2
    exit 1
fi
echo "$out"
