"""gen-repo bench without a server: perf_analyzer's CSV, its command line and libraries, the
results schema, the analysis, and the report writer on synthetic results."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from generator.bench import analysis, perf_analyzer as pa, plots, workspace
from generator.bench.report import write_report
from generator.bench.results import SCHEMA, Point, Results
from generator.status import POINT_FAILED, POINT_OK, POINT_UNSTABLE
from generator.errors import RepositoryError, SpecError, ToolError
from generator.repository.layout import BuiltModel
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data" / "perf_analyzer"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# perf_analyzer's CSV


def test_parse_verbose_grpc_csv_maps_every_column():
    rows = pa.parse_csv(DATA / "grpc_verbose.csv")
    assert len(rows) == 1
    r = rows[0]
    assert r["concurrency"] == 2 and r["throughput"] == pytest.approx(2474.64)
    assert (r["p50_us"], r["p90_us"], r["p95_us"], r["p99_us"]) == (694, 955, 1118, 3916)
    assert (r["server_queue_us"], r["server_compute_input_us"], r["server_compute_infer_us"],
            r["server_compute_output_us"]) == (192, 15, 232, 94)
    assert (r["client_send_us"], r["network_us"], r["client_recv_us"]) == (2, 267, 0)
    assert (r["avg_us"], r["client_marshal_us"], r["client_response_wait_us"]) == (805, 2, 795)
    assert all(isinstance(v, (int, float)) for v in r.values())


def test_parse_http_csv_has_the_same_keys_as_grpc():
    grpc_keys = set(pa.parse_csv(DATA / "grpc_verbose.csv")[0])
    http = pa.parse_csv(DATA / "http_verbose.csv")[0]
    assert set(http) == grpc_keys
    assert http["throughput"] == pytest.approx(2808.85) and http["client_send_us"] == 45


def test_parse_csv_sorts_rows_by_concurrency_and_accepts_the_short_header():
    rows = pa.parse_csv(DATA / "grpc_two_points_unsorted.csv")
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert rows[1]["throughput"] == pytest.approx(171.16) and "avg_us" not in rows[1]


def test_parse_csv_keeps_unknown_columns_and_skips_blank_lines(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("Concurrency,Inferences/Second,p50 latency,p99 latency,Avg GPU Power\n"
                 "3,10.5,100,200,n/a\n\n")
    (row,) = pa.parse_csv(p)
    assert row == {"concurrency": 3, "throughput": 10.5, "p50_us": 100, "p99_us": 200,
                   "Avg GPU Power": "n/a"}


def test_parse_csv_without_needed_columns_is_a_tool_error(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("Concurrency,Something\n1,2\n")
    with pytest.raises(ToolError) as e:
        pa.parse_csv(p)
    assert "throughput" in e.value.message and e.value.tip


# ---------------------------------------------------------------------------------------------
# the command line and the libraries


def test_command_writes_a_csv_and_measures_exactly_one_concurrency(tmp_path):
    tool = pa.PerfAnalyzer(Path("/bin/perf_analyzer"), tmp_path)
    target = pa.Target("m_python", "localhost:8001", "grpc", tmp_path / "in.json")
    meas = pa.Measurement(mode="time_windows", interval_ms=1500, stability=12, max_trials=5)
    cmd = pa.command(tool, target, 4, 8, meas, tmp_path / "p.csv")
    joined = " ".join(cmd)
    assert cmd[:3] == ["/bin/perf_analyzer", "-m", "m_python"]
    assert "-u localhost:8001 -i grpc -b 4 --concurrency-range 8:8" in joined
    assert "--measurement-mode time_windows --measurement-interval 1500" in joined
    assert "--stability-percentage 12 --max-trials 5" in joined
    assert f"-f {tmp_path / 'p.csv'} --verbose-csv" in joined
    assert f"--input-data {tmp_path / 'in.json'}" in joined
    retry = " ".join(pa.command(tool, target, 4, 8, meas, tmp_path / "p.csv", 50, 2))
    assert "--measurement-interval 3000" in retry and "--stability-percentage 50" in retry
    count = pa.Measurement(mode="count_windows", request_count=300).flags()
    assert count[:4] == ["--measurement-mode", "count_windows",
                         "--measurement-request-count", "300"]


def test_input_data_holds_one_row_per_input_with_its_shape(tmp_path):
    samples = {"tokens": np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64),
               "mask": np.array([[True, False, True], [True, True, True]])}
    path = pa.write_input_data(samples, True, tmp_path / "d.json")
    data = json.loads(path.read_text())["data"]
    assert data == [{"tokens": {"content": [1, 2, 3], "shape": [3]},
                     "mask": {"content": [True, False, True], "shape": [3]}}]
    unbatched = json.loads(pa.write_input_data({"x": np.zeros((2, 2), np.float32)}, False,
                                               tmp_path / "u.json").read_text())
    assert unbatched["data"][0]["x"]["shape"] == [2, 2]


def test_locate_links_the_two_libraries_and_ldd_resolves_everything(tmp_path):
    tool = pa.locate(tmp_path / "libs")
    assert tool.binary.is_file()
    assert pa.missing_libs(tool.binary, tool.env) == []
    out = subprocess.run(["ldd", str(tool.binary)], env=tool.env, capture_output=True,
                         text=True).stdout
    for lib in ("libb64.so.0d", "libcudart.so.12"):
        assert lib in out
    assert tool.env["LD_LIBRARY_PATH"].split(":")[0] == str(tmp_path / "libs")


@pytest.mark.parametrize("system_has", [(), ("libb64.so.0d",)],
                         ids=["no-copy-anywhere", "system-libb64"])
def test_missing_libraries_are_a_tool_error_with_both_install_tips(tmp_path, monkeypatch,
                                                                    system_has):
    """A machine with no usable copy (or only Debian's libb64-0d): find_lib finds nothing, and
    ldd resolves only what the system has. Both are simulated, so that the answer does not
    depend on what this machine has installed (libb64-0d, a CUDA toolkit in ldconfig)."""
    asked = []
    monkeypatch.setattr(pa, "find_lib", lambda lib: asked.append(lib.soname))
    monkeypatch.setattr(pa, "missing_libs", lambda binary, env=None: [
        lib.soname for lib in pa.NEEDED_LIBS if lib.soname not in system_has])
    with pytest.raises(ToolError) as e:
        pa.locate(tmp_path / "empty")
    assert sorted(asked) == ["libb64.so.0d", "libcudart.so.12"]  # every copy was looked for
    for lib in pa.NEEDED_LIBS:
        assert (lib.soname in e.value.message) == (lib.soname not in system_has), e.value.message
    assert "apt-get install libb64-0d" in e.value.tip
    assert "pip install nvidia-cuda-runtime-cu12" in e.value.tip


# ---------------------------------------------------------------------------------------------
# the private copy


CONFIG = """name: "m_python"
backend: "python"
max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: [ 4 ] }
output { name: "y" data_type: TYPE_FP32 dims: [ 2 ] }
instance_group { count: 1 kind: KIND_CPU }
"""


def test_set_instances_changes_the_copy_never_the_original(tmp_path):
    src = tmp_path / "repo" / "m_python"
    (src / "1").mkdir(parents=True)
    (src / "config.pbtxt").write_text(CONFIG)
    (src / "1" / "model.pt").write_bytes(b"weights")
    (copy,) = workspace.copy_models([BuiltModel(src)], tmp_path / "copy")
    assert (copy.path / "1" / "model.pt").stat().st_ino == (src / "1" / "model.pt").stat().st_ino
    workspace.set_instances(copy, 3)
    assert [g.count for g in BuiltModel(copy.path).config.instance_group] == [3]
    assert workspace.instances_of(copy) == 3
    assert (src / "config.pbtxt").read_text() == CONFIG


def test_derive_python_ts_needs_torchscript_load_parameters(tmp_path):
    src = tmp_path / "m_libtorch"
    src.mkdir()
    (src / "config.pbtxt").write_text(CONFIG.replace('backend: "python"',
                                                     'platform: "pytorch_libtorch"'))
    (src / "gen_repo.json").write_text(json.dumps({"variant": "libtorch", "spec": {"name": "m"}}))
    with pytest.raises(RepositoryError) as e:
        workspace.derive_python_ts(BuiltModel(src), tmp_path / "copy")
    assert "python-ts" in e.value.tip


# ---------------------------------------------------------------------------------------------
# results, analysis and the report, on synthetic results


def _point(model, variant, conc, thr, inst=1, batch=1, status=POINT_OK, **extra):
    metrics = {"concurrency": conc, "throughput": thr, "p50_us": 1e6 / thr * conc,
               "p90_us": 1.2e6 / thr * conc, "p99_us": 1.5e6 / thr * conc,
               "server_queue_us": 50.0 * conc, "server_compute_input_us": 20,
               "server_compute_infer_us": 1e6 / thr, "server_compute_output_us": 30,
               "network_us": 100}
    metrics.update(extra)
    return Point(model, "mlp", variant, inst, 2 // inst, batch, conc, "grpc", status,
                 10.0 if status == POINT_OK else 50.0, metrics if status != POINT_FAILED else {},
                 f"csv/{model}/i{inst}_b{batch}_c{conc}.csv", ["perf_analyzer", "-m", model],
                 2.0, "boom" if status == POINT_FAILED else "")


def synthetic_results() -> Results:
    r = Results(command=["gen-repo", "bench", "--quick"],
                machine={"cpu": "Test CPU", "cores": 2, "memory_gib": 24,
                         "loadavg_start": [0.1, 0.1, 0.1], "loadavg_end": [0.2, 0.1, 0.1]},
                versions={"torch": "2.15.0", "perf_analyzer": "tritonclient 2.50.0"},
                server={"kind": "embedded tritonserver (nvidia-pytriton)", "version": "2.51.0"},
                settings={"concurrency": [1, 8], "batch_sizes": [1], "instances": [1, 2],
                          "protocol": "grpc", "measurement": pa.Measurement().to_dict()})
    r.models = [
        {"name": "mlp_libtorch", "base": "mlp", "variant": "libtorch", "backend": "pytorch",
         "label": "TorchScript on the PyTorch (libtorch) backend", "derived_from": ""},
        {"name": "mlp_python", "base": "mlp", "variant": "python", "backend": "python",
         "label": "eager PyTorch on the Python backend (torch.package)", "derived_from": ""},
        {"name": "mlp_python_ts", "base": "mlp", "variant": "python-ts", "backend": "python",
         "label": "TorchScript through the Python backend", "derived_from": "mlp_libtorch"},
    ]
    r.loads = [{"model": "mlp_libtorch", "instances": None, "state": "SKIPPED",
                "reason": "no PyTorch backend", "seconds": 0.0}]
    for inst, scale in ((1, 1.0), (2, 1.5)):
        r.points += [_point("mlp_python", "python", 1, 800 * scale, inst),
                     _point("mlp_python", "python", 8, 900 * scale, inst),
                     _point("mlp_python_ts", "python-ts", 1, 1000 * scale, inst),
                     _point("mlp_python_ts", "python-ts", 8, 1200 * scale, inst)]
    r.points.append(_point("mlp_python", "python", 4, 1, status=POINT_FAILED))
    r.ceiling = [{"model": "mlp", "kind": "eager", "source": "mlp_python", "batch_size": 1,
                  "threads": 2, "throughput": 3000.0, "p50_ms": 0.33, "iterations": 9000},
                 {"model": "mlp", "kind": "torchscript", "source": "mlp_python_ts",
                  "batch_size": 1, "threads": 2, "throughput": 4000.0, "p50_ms": 0.25,
                  "iterations": 12000}]
    r.complete = True
    return r


def test_results_round_trip_through_json_and_refuse_other_schemas(tmp_path):
    r = synthetic_results()
    path = r.save(tmp_path / "results.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["points"][0]["throughput"] == 800
    back = Results.load(path)
    assert back.to_dict() == r.to_dict()
    assert back.points[0].throughput == 800 and back.points[-1].throughput is None
    data["schema"] = "gen-repo-bench/2"
    path.write_text(json.dumps(data))
    with pytest.raises(RepositoryError) as e:
        Results.load(path)
    assert "gen-repo-bench/2" in e.value.message


def test_analysis_compares_eager_with_the_torchscript_variant_it_measured():
    r = synthetic_results()
    c = analysis.compare(r, "mlp", 1, 1)
    assert (c.eager, c.torchscript, c.torchscript_variant) == ("mlp_python", "mlp_python_ts",
                                                               "python-ts")
    assert c.concurrency == 8 and c.low_concurrency == 1
    assert c.throughput_ratio == pytest.approx(0.75)
    assert c.p50_ratio == pytest.approx(1000 / 800)
    # no concurrency 8 measured: the highest one shared is used
    c4 = analysis.compare(r, "mlp", 1, 1, target_concurrency=16)
    assert c4.concurrency == 8
    ratios = {x.model: x.ratio for x in analysis.ceiling_ratios(r, "mlp")}
    assert ratios == {"mlp_python": pytest.approx(1350 / 4000),
                      "mlp_python_ts": pytest.approx(1800 / 4000)}
    assert analysis.scaling(r, "mlp", 1)["mlp_python"] == {1: 900, 2: 1350}


def test_each_python_backend_variant_is_split_against_the_floor():
    """floor + forward pass + what model.py adds, from the points and the in-process ceiling; the
    floor is a yardstick, never a served variant in the ceiling ratios or the scaling."""
    r = synthetic_results()
    r.models.append({"name": "mlp_floor", "base": "mlp", "variant": "floor", "backend": "python",
                     "label": "floor", "derived_from": "mlp_python"})
    for inst in (1, 2):
        r.points += [_point("mlp_floor", "floor", 1, 1250.0, inst),  # p50 0.8 ms
                     _point("mlp_floor", "floor", 8, 1500.0, inst)]
    by_variant = {f.variant: f for f in analysis.floor_shares(r, "mlp", 1, 1)}
    eager = by_variant["python"]
    assert (eager.concurrency, eager.low_concurrency) == (8, 1)
    assert eager.throughput_ratio == pytest.approx(900 / 1500)
    assert eager.floor_p50_ms == pytest.approx(0.8) and eager.p50_ms == pytest.approx(1.25)
    assert eager.forward_ms == pytest.approx(0.33)  # eager, batch 1, the point's 2 threads
    assert eager.overhead_ms == pytest.approx(1.25 - 0.8 - 0.33)
    assert by_variant["python-ts"].forward_ms == pytest.approx(0.25)
    assert "mlp_floor" not in {x.model for x in analysis.ceiling_ratios(r, "mlp")}
    assert "mlp_floor" not in analysis.scaling(r, "mlp", 1)
    line = next(v for v in analysis.verdict(r) if "floor" in v)
    assert "0.60× its throughput" in line and "the floor's 0.80 ms + 0.33 ms for the forward" in line
    assert not any("no Python-backend model can reach" in v for v in analysis.verdict(r))
    # a libtorch variant faster than the floor: the report says no Python model can match it
    r.points += [_point("mlp_libtorch", "libtorch", 1, 2000.0), _point("mlp_libtorch",
                                                                       "libtorch", 8, 3000.0)]
    bound = next(v for v in analysis.verdict(r) if "no Python-backend model can reach" in v)
    assert bound.startswith("mlp: the libtorch variant serves 3000 infer/s at concurrency 8")
    assert "more than 0.50× of it here" in bound
    # plotted as a bound beside the variants' curves, not as one of them
    assert "mlp_floor" not in {model for model, _, _ in plots._series(r, "mlp")}
    assert "mlp_python" in {model for model, _, _ in plots._series(r, "mlp")}


def test_the_variants_bench_compares_come_from_the_registry():
    from generator.variants import registry
    from generator.variants.base import EAGER, TORCHSCRIPT

    assert analysis.eager_variant() == "python"
    assert registry.by_artifact(EAGER) == ("python",)
    assert registry.by_artifact(TORCHSCRIPT) == ("libtorch", "python-ts")  # libtorch first
    assert analysis.artifact_of("python-compile") is None  # compared with any artifact's best
    assert analysis.words("python") == "the eager Python variant"
    assert analysis.words("python-aoti") == "the python-aoti variant"
    assert analysis.words(workspace.FLOOR) == analysis.FLOOR_WORDS


def test_the_ceiling_includes_the_batches_the_dynamic_batcher_may_form():
    r = synthetic_results()
    r.ceiling.append({"model": "mlp", "kind": "eager", "source": "mlp_python", "batch_size": 8,
                      "threads": 2, "throughput": 9000.0, "p50_ms": 0.9, "iterations": 100})
    assert analysis.best_ceiling(r, "mlp", 1)["batch_size"] == 1  # no dynamic batcher
    for m in r.models:
        m["max_execution_batch"] = 8
    best = analysis.best_ceiling(r, "mlp", 1)
    assert (best["batch_size"], best["throughput"]) == (8, 9000.0)
    assert "(eager, batch 8, 2 thread(s), no server)" in " ".join(analysis.verdict(r))
    for p in r.points:  # the server's counts say how full the batches were
        p.metrics["server_avg_batch"] = 3.0
    why = " ".join(analysis.summarize(r, "mlp").shortfalls)
    assert "formed batches of 3.0 rows on average against the ceiling's 8" in why


def test_report_writes_markdown_html_and_plots_with_the_verdict_first(tmp_path):
    r = synthetic_results()
    md, page = write_report(r, tmp_path)
    text = md.read_text()
    first_bullets = text.split("## Verdict", 1)[1].split("\n\n")[1]
    assert "at concurrency 8" in first_bullets and "0.75×" in first_bullets
    assert "TorchScript through the Python backend (python-ts)" in first_bullets
    assert "0.34× the in-process ceiling" in first_bullets
    assert "with 2 instances reaches 1.50×" in first_bullets
    assert "SKIPPED (no PyTorch backend)" in text  # every row says what it is
    assert "25% below TorchScript" in text  # the shortfall, by how much...
    assert "compute infer" in text  # ...and which server-side part explains it
    assert "failed: boom" in text
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["mlp_ceiling_ratio.png", "mlp_latency_vs_throughput.png",
                     "mlp_throughput_vs_concurrency.png", "mlp_throughput_vs_instances.png"]
    for p in (tmp_path / "plots").iterdir():
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
        assert f"](plots/{p.name})" in text
    html = page.read_text()
    assert html.startswith("<!doctype html>") and html.count("<img src='plots/") == 4
    assert "0.75×" in html and "<table>" in html


def test_report_of_a_stopped_run_says_so_and_keeps_the_points(tmp_path):
    r = synthetic_results()
    r.complete, r.stopped_by = False, "interrupted (Ctrl-C)"
    r.points = r.points[:2]
    md, _ = write_report(r, tmp_path)
    text = md.read_text()
    assert "STOPPED EARLY (interrupted (Ctrl-C))" in text
    assert "only mlp_python measured" in text
    assert "| python | 1 | 2 | 1 | 8 | ok | 900.0 |" in text


def test_points_never_measured_are_the_ones_the_sweep_planned_for_each_model():
    """A model that does not batch is swept at batch 1 only: a stopped run with --batch-size 1,4
    must not list its batch-4 points as missing."""
    from generator.bench.report import not_measured

    r = synthetic_results()
    r.settings["batch_sizes"] = [1, 4]
    r.points = []
    for m in r.models:
        m["batch_sizes"] = [1] if m["name"] == "mlp_python_ts" else [1, 4]
    missing = not_measured(r)
    assert "mlp_python_ts x1 b1: c1, c8" in missing and "mlp_python x2 b4: c1, c8" in missing
    assert not [m for m in missing if m.startswith("mlp_python_ts") and " b4:" in m]


def test_report_warns_when_the_machine_was_busy(tmp_path):
    r = synthetic_results()
    r.machine["loadavg_start"] = [3.5, 3.0, 2.0]
    md, _ = write_report(r, tmp_path)
    assert "the machine was busy" in md.read_text()


def test_unstable_points_are_labelled(tmp_path):
    r = synthetic_results()
    r.points[0].status = POINT_UNSTABLE
    r.points[0].stability = 50.0
    md, _ = write_report(r, tmp_path)
    text = md.read_text()
    assert "unstable (±50%)" in text
    assert "(from points marked unstable: rough numbers)" in text.split("## Verdict")[1][:1500]


# ---------------------------------------------------------------------------------------------
# memory and cold start


MIB = 2**20


def with_footprints(r: Results) -> Results:
    """synthetic_results with the floor, and what the sweep records after each load: the PSS
    and USS of a Python-backend model's stubs, the server's RSS around a libtorch load."""
    r.models.append({"name": "mlp_floor", "base": "mlp", "variant": "floor", "backend": "python",
                     "label": "floor", "derived_from": "mlp_python"})
    r.models[0]["backend"] = "pytorch"
    r.loads = []
    for inst in (1, 2):
        r.points += [_point("mlp_floor", "floor", 8, 5000.0, inst),
                     _point("mlp_libtorch", "libtorch", 8, 1100.0 * inst, inst)]
        r.loads += [
            {"model": "mlp_python", "instances": inst, "state": "READY", "reason": "",
             "seconds": 2.5, "first_request_ms": 40.0, "pss_bytes": inst * 300 * MIB,
             "uss_bytes": inst * 200 * MIB, "stubs": inst, "gpu_bytes": inst * 500 * MIB},
            {"model": "mlp_python_ts", "instances": inst, "state": "READY", "reason": "",
             "seconds": 2.0, "first_request_ms": 30.0, "pss_bytes": inst * 280 * MIB,
             "uss_bytes": inst * 190 * MIB, "stubs": inst},
            {"model": "mlp_floor", "instances": inst, "state": "READY", "reason": "",
             "seconds": 1.0, "first_request_ms": 2.0, "pss_bytes": inst * 40 * MIB,
             "uss_bytes": inst * 30 * MIB, "stubs": inst},
            {"model": "mlp_libtorch", "instances": inst, "state": "READY", "reason": "",
             "seconds": 0.5, "first_request_ms": 5.0, "rss_before_bytes": 900 * MIB,
             "rss_after_bytes": (900 + 150 * inst) * MIB}]
    return r


def test_process_memory_reads_pss_and_uss_of_a_running_process():
    import os

    import psutil

    from generator.serve import processes

    mine = processes.process_memory(os.getpid())
    rss = psutil.Process().memory_info().rss
    assert 0 < mine.uss <= mine.pss <= rss * 1.05
    assert processes.total_memory([psutil.Process()]).pss >= mine.uss
    assert processes.process_memory(2**22 + 12345) is None  # no such process
    assert processes.parse_gpu_memory("123, 520\n123, 10\n456, 802\nNo running processes\n") \
        == {123: 530 * MIB, 456: 802 * MIB}


def test_the_peak_of_private_memory_is_kept_and_shared_pages_count_once():
    import psutil

    from generator.serve import processes

    me = psutil.Process()
    private, shared = processes.private_and_shared([me])
    m = processes.process_memory(me.pid)
    assert private > 0 and shared > 0 and abs(private + shared - m.rss) < 16 * MIB
    assert processes.private_and_shared([me, me])[1] == pytest.approx(shared, rel=0.05)
    with processes.PeakMemory([], every=0.01) as none:
        pass
    assert none.private is None and none.shared is None
    with processes.PeakMemory([me], every=0.01) as peak:
        held = bytearray(64 * MIB)  # private pages, touched
        held[::4096] = b"x" * len(held[::4096])
        time.sleep(0.2)  # sampled while held
        del held
    assert peak.private >= private + 48 * MIB  # the peak, though the block freed them


def test_a_load_inside_the_server_records_its_resident_memory_around_the_load():
    """footprint.load on a backend inside the server: the server process's own RSS before and
    after, the seconds to READY; a server that is not bench's (no pid) gives the seconds only."""
    import os
    from types import SimpleNamespace

    from generator.bench import footprint
    from generator.serve.lifecycle import ModelStatus

    class Target:
        pid = os.getpid()

        def url(self, protocol):
            return "127.0.0.1:1"

        def load(self, model, instances):
            self.grown = bytearray(64 * MIB)  # the model's memory, in the "server"
            self.grown[::4096] = b"x" * len(self.grown[::4096])
            return ModelStatus(model.name, "pytorch", "READY")

    model = SimpleNamespace(name="m_libtorch", built=SimpleNamespace(
        backend="pytorch", built_by_gen_repo=False))
    status, facts = footprint.load(Target(), model, 1, "grpc")
    assert status.state == "READY" and facts["seconds"] >= 0
    assert facts["first_request_ms"] is None  # no stored samples to send
    grown, how = footprint.attributable(facts)
    assert how == footprint.RSS_GROWTH and grown >= 60 * MIB
    assert footprint.memory(Target(), model) == {}  # its stubs: none, it runs in the server
    Target.pid = None
    assert set(footprint.load(Target(), model, 1, "grpc")[1]) == {"seconds"}


def test_memory_rows_attribute_pss_or_the_servers_growth_and_subtract_the_floor():
    rows = {(r.variant, r.instances): r for r in analysis.memory_rows(with_footprints(
        synthetic_results()), "mlp")}
    eager = rows["python", 2]
    assert (eager.memory, eager.measured_as, eager.stubs) == (600 * MIB, "PSS", 2)
    assert eager.per_instance == 300 * MIB and eager.floor_per_instance == 40 * MIB
    assert eager.over_floor == 260 * MIB  # the model's own, beyond the backend's fixed cost
    assert eager.throughput == 1350 and eager.first_request_ms == 40.0
    libtorch = rows["libtorch", 2]
    assert (libtorch.memory, libtorch.measured_as) == (300 * MIB, "server RSS growth")
    assert libtorch.over_floor is None  # the floor is the Python backend's cost, not its
    assert rows["floor", 1].over_floor is None
    assert list(rows)[-2:] == [("floor", 1), ("floor", 2)]  # the yardstick last


def test_memory_and_load_figures_reach_results_json_the_report_and_one_plot(tmp_path):
    r = with_footprints(synthetic_results())
    back = Results.load(r.save(tmp_path / "results.json"))
    entry = next(e for e in back.loads if e["model"] == "mlp_python" and e["instances"] == 1)
    assert {"seconds", "first_request_ms", "pss_bytes", "uss_bytes", "stubs"} <= set(entry)
    md, page = write_report(back, tmp_path)
    text = md.read_text()
    assert "### Memory and cold start" in text
    assert "| python | 2 | PSS of 2 stub(s) | 600 | 300 | 260 | 400 | 500 | 2.5 | 40.0 | 1350.0 |" \
        in text
    assert "| floor (the Python backend's fixed cost) | 1 | PSS of 1 stub(s) | 40 | 40 |" in text
    assert "| libtorch | 1 | server RSS growth | 150 | 150 |" in text
    line = next(v for v in analysis.verdict(back) if "per instance" in v)
    assert line == ("mlp: the eager Python variant takes 300 MiB per instance (PSS of 1 stub"
                    " process(es) idle after the warm-up), 40 MiB of it the Python backend's fixed"
                    " cost (the floor's) and 260 MiB the model's own; it loads in 2.5 s and"
                    " answers its first request in 40 ms.")
    png = tmp_path / "plots" / "mlp_memory_vs_throughput.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and "](plots/mlp_memory_vs_throughput.png)" in text
    assert page.read_text().count("<img src='plots/") == 5


# ---------------------------------------------------------------------------------------------
# the command's options


def _args(*argv):
    from generator.cli import make_parser

    return make_parser().parse_args(["bench", *argv])


def options_from_args(args):
    from generator.api import bench_options
    from generator.commands import bench

    return bench_options(**bench.options_from_args(args))


def test_quick_and_default_presets():
    quick = options_from_args(_args("--quick"))
    assert quick.plan.concurrency == (1, 8) and quick.plan.instances == (1,)
    assert quick.ceiling_seconds == 0.5 and quick.plan.measurement.interval_ms == 1000
    full = options_from_args(_args("--concurrency", "1,2,4,8,16", "--batch-size", "1,8",
                                   "--instances", "1,2,4", "--protocol", "http",
                                   "--request-count", "300", "--no-ceiling"))
    assert full.plan.concurrency == (1, 2, 4, 8, 16) and full.plan.batch_sizes == (1, 8)
    assert full.plan.instances == (1, 2, 4) and full.plan.protocol == "http"
    assert full.plan.measurement.mode == "count_windows" and full.ceiling_seconds == 0


def test_a_quick_ceiling_costs_a_few_forward_passes_of_a_slow_model():
    """--quick gives 0.5 s per ceiling setting: with a forward pass of 0.2 s (resnet18 at batch 8
    on one core) that is 1 warm-up call and 2 slices of 2 calls, not the dozen a full run makes."""
    import time

    from generator.runtime.model import time_forward as _time_loop

    calls = []

    def run_batch(model, tensors):
        calls.append(1)
        time.sleep(0.2)

    n, elapsed, times = _time_loop(None, [], 0.5, run_batch)
    assert len(calls) == 5 and n == 2 and elapsed >= 0.4 and len(times) == 2
    calls.clear()
    _time_loop(None, [], 1.0, run_batch)  # a full setting: 3 warm-up calls, 4 slices of 3
    assert len(calls) == 15


@pytest.mark.parametrize("argv, fragment", [
    (("--concurrency", "1,x"), "--concurrency '1,x'"),
    (("--batch-size", "0"), "positive"),
    (("--stability", "0"), "--stability"),
    (("--url", "localhost:8001", "--instances", "1,2"), "--instances needs bench's own server"),
])
def test_bad_options_are_spec_errors(argv, fragment):
    with pytest.raises(SpecError) as e:
        options_from_args(_args(*argv))
    assert fragment in e.value.message and e.value.tip
