"""The GPU check kit: it builds under its size limit, and its check runs end to end here in dry
mode (KIND_CPU instances: the real server, verify, bench and tune, from the unpacked kit); the
build's GPU-only decisions (a trace that baked in its device, AOTInductor on a GPU) on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import lzma

import pytest

from generator.cli import main
from generator.serve.ports import free_ports
from tests.conftest import ROOT
from tests.integration.conftest import PYTORCH_BACKEND

pytestmark = pytest.mark.integration

KIT_LIMIT = 60 * 2**20
MODELS = ROOT / "examples" / "gpu_check" / "gpu_models.py"
LOCAL_PY = "%d.%d" % sys.version_info[:2]


def _kit(out, python: str):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-kit.sh"), "--out", str(out),
                           "--python", python], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_the_kit_for_the_gpu_image_holds_what_it_lacks_under_60_mib(tmp_path):
    kit = _kit(tmp_path / "kit", "3.12")
    assert _size(kit) < KIT_LIMIT
    check = subprocess.run(["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=kit,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    with tarfile.open(fileobj=lzma.open(kit / "triton.tar.xz")) as tar:
        names = set(tar.getnames())
    stubs = "site-packages/pytriton/tritonserver/python_backend_stubs"
    assert f"{stubs}/3.12/triton_python_backend_stub" in names
    assert not any(n.startswith(f"{stubs}/3.11") for n in names)  # only the target's stub
    assert {"bin/perf_analyzer", "site-packages/pytriton/tritonserver/bin/tritonserver",
            "site-packages/tritonclient/grpc/model_config_pb2.py"} <= names
    libs = {n.rsplit("/", 1)[1].split("-")[0] for n in names if "nvidia_pytriton.libs/" in n}
    assert {"libtritonserver", "libcudart", "libb64"} <= libs
    assert "libpython3" not in libs  # the bundled 3.13 libpython is linked by nothing in the kit
    with tarfile.open(fileobj=lzma.open(kit / "deps-cp312.tar.xz")) as tar:
        dists = {n.split("/")[1] for n in tar.getnames() if n.endswith(".dist-info")}
    assert "numpy-1.26.4.dist-info" in dists and "protobuf-4.25.9.dist-info" in dists
    assert any(d.startswith("geventhttpclient-") for d in dists)


def test_the_check_runs_end_to_end_in_dry_mode(tmp_path):
    kit = _kit(tmp_path / "kit", LOCAL_PY)
    out = tmp_path / "out"
    ports = ",".join(map(str, free_ports(3)))
    proc = subprocess.run(["bash", str(kit / "gpu-check.sh"), "--dry", "--kit", str(kit),
                           "--out", str(out), "--python", sys.executable, "--ports", ports],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    summary = (out / "summary.md").read_text() if (out / "summary.md").is_file() else ""
    assert proc.returncode == 0, proc.stderr[-4000:] + summary
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["facts", "env", "build-cnn", "build-cnn-fp16", "build-tfm",
                                     "build-tfm-fp16", "serve-verify", "bench", "tune"]
    assert all(s[1] == "0" for s in steps), steps
    env_log = (out / "logs" / "env.log").read_text()
    assert "numpy 1.26.4" in env_log and "gen-repo from /tmp/" in env_log  # the kit's copy
    served = 8 if PYTORCH_BACKEND else 6  # cnn and tfm as libtorch too where a backend is found
    assert f"{2 * served} OK, 0 FAIL, 0 SKIPPED" in summary  # each model over HTTP and gRPC
    bench = json.loads((out / "figures.json").read_text())["bench"]
    assert bench["cnn_python"]["instances_1"] > 0 and bench["tfm_fp16_python"]["instances_1"] > 0
    assert bench["cnn_python"]["ceiling_device"] == "cpu"
    assert (out / "tune" / "report.md").is_file()


def test_a_trace_that_baked_in_its_device_is_scripted_for_gpu_instances(tmp_path, capsys):
    code = main(["build", f"{MODELS}:tiny_transformer", "--input", "tokens:int64:-1:0..999",
                 "--name", "tfm", "--variants", "python-ts", "--gpu-instances", "1",
                 "--cpu-instances", "0", "--threads", "1", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "script (the trace baked in its device)" in out
    assert "aten::arange at " in out and "gpu_models.py(45)" in out


def test_aoti_is_refused_for_gpu_instances_with_the_route(tmp_path, capsys):
    code = main(["build", f"{MODELS}:small_cnn", "--input", "input:float32:3x64x64",
                 "--variants", "python,python-aoti", "--gpu-instances", "1", "--threads", "1",
                 "--out", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert code == 3, captured.out + captured.err
    assert "a CPU package cannot serve the KIND_GPU instances" in captured.err
    assert "python-compile" in captured.err
    assert (tmp_path / "r" / "small_cnn_python" / "config.pbtxt").is_file()
    assert not (tmp_path / "r" / "small_cnn_python_aoti").exists()
