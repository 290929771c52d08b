"""gen-repo bench end to end: the real embedded tritonserver, the real perf_analyzer (short
windows), the in-process ceiling, results.json, the CSVs and the report -- and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from generator.repository import layout
from generator.bench import perf_analyzer as pa
from generator.bench.results import SCHEMA, Results
from generator.runtime.model import threads_for
from tests.conftest import ROOT
from generator.serve.triton_install import BACKEND_DIRS_ENV
from tests.integration.conftest import (alive, descendants, embedded_server,
                                        needs_pytorch_backend, sigint_as_default,
                                        wait_for_first_point)

pytestmark = pytest.mark.integration

# Short windows and a loose threshold: these tests prove the driver, not the numbers (other
# processes may share the cores).
SHORT = ["--measurement-interval", "300", "--stability", "1000"]


def _snapshot(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.parametrize("backend", [pytest.param("pytorch", marks=needs_pytorch_backend),
                                     "none"])
def test_bench_sweeps_variants_and_instances_on_its_own_server(tiny_repo, tmp_path, run_cli,
                                                               monkeypatch, backend):
    """With a PyTorch backend the libtorch variant itself is measured against eager; without
    one, its model.pt is served through the Python backend (python-ts) and says so."""
    if backend == "none":
        monkeypatch.setenv(BACKEND_DIRS_ENV, "")
    before = _snapshot(tiny_repo)
    out = tmp_path / "bench"
    # instance scaling on the real backend; the stand-in path with one instance count
    counts = (1, 2) if backend == "pytorch" else (1,)
    code, stdout, stderr = run_cli("bench", "--repo", tiny_repo, "--models", "tiny_mlp",
                                   "--out", out, "--concurrency", "1,4", "--instances",
                                   ",".join(map(str, counts)), "--ceiling-seconds", "0.3", *SHORT)
    assert code == 0, stderr
    results = Results.load(out / "results.json")
    assert json.loads((out / "results.json").read_text())["schema"] == SCHEMA
    assert results.complete and results.stopped_by is None
    models = {m["name"]: m for m in results.models}
    cores = len(os.sched_getaffinity(0))
    # the Python-backend instances: their share of the cores, capped by the build's measured count
    python_params = {k: v.string_value for k, v in
                     layout.BuiltModel(tiny_repo / "tiny_mlp_python").config.parameters.items()}

    def python_threads(inst: int) -> int:
        return threads_for(python_params, [{"kind": "KIND_CPU", "count": inst}])

    if backend == "pytorch":
        torchscript = "tiny_mlp_libtorch"
        assert set(models) == {"tiny_mlp_libtorch", "tiny_mlp_python", "tiny_mlp_floor"}
        threads = {1: cores, 2: max(1, cores // 2)}  # INTRA_OP_THREAD_COUNT, pinned by bench
    else:
        torchscript = "tiny_mlp_python_ts"
        assert set(models) == {"tiny_mlp_libtorch", "tiny_mlp_python", "tiny_mlp_python_ts",
                               "tiny_mlp_floor"}
        assert models["tiny_mlp_python_ts"]["derived_from"] == "tiny_mlp_libtorch"
        skipped = [e for e in results.loads if e["model"] == "tiny_mlp_libtorch"]
        assert [e["state"] for e in skipped] == ["SKIPPED"]
        assert "PyTorch backend" in skipped[0]["reason"]
        threads = {1: cores, 2: max(1, cores // 2)}  # python-ts: no measured count of its own

    for model in ("tiny_mlp_python", torchscript, "tiny_mlp_floor"):
        loads = [(e["instances"], e["state"]) for e in results.loads if e["model"] == model]
        assert loads == [(n, "READY") for n in counts]
        for e in (e for e in results.loads if e["model"] == model):  # memory and cold start
            assert e["seconds"] > 0 and e["first_request_ms"] > 0, e
            if models[model]["backend"] == "python":
                assert e["stubs"] == e["instances"] and 0 < e["uss_bytes"] <= e["pss_bytes"], e
                assert model == "tiny_mlp_floor" or e["pss_bytes"] > 50 * 2**20 * e["instances"]
                assert e["peak_pss_bytes"] >= 0.8 * e["pss_bytes"], e  # sampled under load
            else:
                assert e["rss_after_bytes"] > e["rss_before_bytes"] > 0, e
        for inst in counts:
            for conc in (1, 4):
                (p,) = [p for p in results.points if p.model == model and p.instances == inst
                        and p.concurrency == conc]
                assert p.status in ("ok", "unstable") and p.throughput > 0, p
                want = {"tiny_mlp_python": python_threads(inst), "tiny_mlp_floor": None}.get(
                    model, threads[inst])
                assert p.threads == want, (model, inst, p.threads)
                assert p.get("p99_us") >= p.get("p50_us") > 0
                assert p.get("server_compute_infer_us") > 0
                assert p.get("server_executions") > 0 and p.get("server_avg_batch") >= 1
                (row,) = pa.parse_csv(out / p.csv)  # the raw CSV is kept, and is the source
                assert row["throughput"] == p.throughput
                assert f"--concurrency-range {conc}:{conc}" in " ".join(p.command)
                assert "-f" in p.command and "--input-data" in p.command
    server_log = (out / "tritonserver.log").read_text()
    # the second instance really ran, with the threads bench recorded
    assert counts == (1,) or re.search(
        rf"gen-repo: tiny_mlp_python instance \S+_1 loaded .* {python_threads(2)} threads",
        server_log)
    if backend == "pytorch":  # 2 libtorch instances: shared weights, the cores split
        assert "Weight sharing is enabled for model instance 'tiny_mlp_libtorch'" in server_log
        assert f"Intra op thread count is set to {max(1, cores // 2)}" in server_log
    # the request batch, and the largest batch the dynamic batcher may form (max_batch_size 8)
    kinds = {(c["kind"], c["batch_size"]) for c in results.ceiling}
    assert kinds == {(k, b) for k in ("eager", "torchscript") for b in (1, 8)}

    report = (out / "report.md").read_text()
    assert "at concurrency 4" in report and "the eager Python variant reaches" in report
    assert ("the TorchScript variant (PyTorch backend)" if backend == "pytorch" else
            "TorchScript through the Python backend (python-ts)") in report
    assert "in-process ceiling" in report
    # the floor: served beside the variants, each Python-backend variant split against it
    assert models["tiny_mlp_floor"]["derived_from"] == "tiny_mlp_python"
    assert "the Python backend's floor (an identity model, no torch) bounds" in report
    assert re.search(r"is the floor's [\d.]+ ms \+ [\d.]+ ms for the forward pass", report)
    assert "### Memory and cold start" in report and "MiB per instance" in report
    assert len(list((out / "plots").glob("tiny_mlp_*.png"))) == (5 if len(counts) > 1 else 4)
    assert (out / "report.html").read_text().count("<img ") == (5 if len(counts) > 1 else 4)
    assert "results:" in stdout and "reaches" in stdout

    assert _snapshot(tiny_repo) == before  # the user's repository is never touched
    assert not list(out.glob(".gen-repo-bench-*"))  # the private copy is gone
    assert not [p for p in alive(descendants(os.getpid())) if "tritonserver" in p]


def test_bench_measures_a_running_server_with_dynamic_int_and_bool_inputs(tiny_repo, tmp_path,
                                                                          run_cli):
    model = layout.BuiltModel(tiny_repo / "seq_encoder_python")
    with embedded_server(tiny_repo, tmp_path, models=[model]) as (server, statuses):
        assert statuses["seq_encoder_python"].state == "READY"
        code, stdout, stderr = run_cli("bench", "--url", server.grpc_url, "--repo", tiny_repo,
                                       "--models", "seq_encoder_python", "--concurrency", "2",
                                       "--no-ceiling", "--out", tmp_path / "b", *SHORT)
    assert code == 0, stderr
    results = Results.load(tmp_path / "b" / "results.json")
    (p,) = results.points
    assert p.model == "seq_encoder_python" and p.throughput > 0 and p.instances == 1
    assert results.server["kind"].startswith("running server at")
    data = json.loads((tmp_path / "b" / "inputs" / "seq_encoder_python.json").read_text())
    assert set(data["data"][0]) == {"tokens", "mask"}  # real samples: ids stay in range


def test_ctrl_c_keeps_what_was_measured(tiny_repo, tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator.cli", "bench", "--repo", str(tiny_repo), "--models",
         "tiny_mlp_python", "--out", str(out), "--concurrency", "1,2,4,8,16", "--instances",
         "1", "--no-ceiling", *SHORT], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_default)
    try:
        wait_for_first_point(proc, out, 120)
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "ERROR: interrupted." in stderr and "Traceback" not in stderr
    results = Results.load(out / "results.json")
    assert not results.complete and results.stopped_by == "interrupted (Ctrl-C)"
    assert 1 <= len(results.points) < 5
    report = (out / "report.md").read_text()
    assert "STOPPED EARLY (interrupted (Ctrl-C))" in report
    assert f"| python | 1 | {results.points[0].threads} | 1 | 1 |" in report
    assert not alive(children)  # the server and its stubs are gone


def test_the_floor_answers_zeros_of_the_models_output_shapes(tiny_repo, tmp_path):
    """The floor stands in for a model's I/O: same inputs, outputs of the same names, dtypes and
    shapes (dynamic axes as in the model's first sample), and no torch in its model.py."""
    import numpy as np

    from generator.bench.workspace import derive_floor
    from generator.serve.protocols import Protocol
    from generator.serve.verify import load_target

    repo = tmp_path / "repo"
    floor = derive_floor(layout.BuiltModel(tiny_repo / "seq_encoder_python"), repo)
    assert floor.name == "seq_encoder_floor" and "import torch" not in \
        (floor.path / "1" / "model.py").read_text()
    target = load_target(floor)
    case = target.cases[0]
    with embedded_server(repo, tmp_path, [floor]) as (server, statuses):
        assert statuses["seq_encoder_floor"].state == "READY", statuses
        proto = Protocol("grpc", server.grpc_url)
        client = proto.client()
        got = proto.infer(client, floor.name, target.tensors(case, 0, 3), target.outputs)
        client.close()
    for name, ref in case.reference.items():
        assert got[name].shape == ref[:3].shape and got[name].dtype == ref.dtype
        assert not np.any(got[name])
