"""gen-repo tune end to end: the staged search on the real embedded tritonserver with the real
perf_analyzer (short windows: these tests prove the search and what it writes, not the numbers),
the production repository served and verified, Ctrl-C then --resume, an impossible budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.repository import layout
from generator.tune.candidate import Candidate
from generator.tune.results import SCHEMA, TuneResults
from tests.conftest import ROOT
from tests.integration.conftest import (PYTORCH_BACKEND, alive, descendants, embedded_server,
                                        sigint_as_default)

pytestmark = pytest.mark.integration

# A small space, windows of 0.3 s, a threshold that any window meets: every point is measured
# in about a second.
SMALL = ["--models", "tiny_mlp", "--instances", "1", "--queue-delays-us", "off,100",
         "--max-batch-sizes", "8", "--no-preferred-batch-sizes", "--concurrency", "1,4",
         "--measurement-interval", "300", "--stability", "1000"]


def _snapshot(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def _check_production(prod: Path, results: TuneResults, tmp_path: Path, run_cli) -> dict:
    """The production repository holds the winner only, configured as its key says, and
    serves and verifies on a fresh server."""
    assert [p.name for p in prod.iterdir()] == ["tiny_mlp"]
    model = layout.BuiltModel(prod / "tiny_mlp")
    record = model.record
    decision = results.decision("tiny_mlp")
    winner = Candidate.from_dict(decision["winner"]["candidate"])
    assert record["tune"]["winner"]["key"] == winner.key == decision["ranking"][0]
    config = model.config
    assert config.name == "tiny_mlp" and record["model_name"] == "tiny_mlp"
    assert [g.count for g in config.instance_group] == [winner.instances]
    assert config.HasField("dynamic_batching") == winner.dynamic_batching
    if winner.dynamic_batching:
        assert config.dynamic_batching.max_queue_delay_microseconds == winner.max_queue_delay_us
    threads = "INTRA_OP_THREAD_COUNT" if winner.variant == "libtorch" else "threads"
    assert config.parameters[threads].string_value == str(winner.threads)
    assert record["spec"]["threads"] == winner.threads
    assert "dynamic_batching" not in record["spec"]  # the config says it (one place)
    assert model.spec.dynamic_batching == winner.dynamic_batching
    tune = record["tune"]
    assert tune["searched"]["measured"] == len([c for c in results.candidates])
    assert tune["default"]["key"].endswith("-d100-m8") and tune["decision"]
    assert tune["runner_up"] is None or tune["runner_up"]["key"] != winner.key
    with embedded_server(prod, tmp_path) as (server, statuses):
        assert statuses["tiny_mlp"].state == "READY", statuses
        code, out, err = run_cli("verify", "--repo", prod, "--http-url", server.http_url,
                                 "--grpc-url", server.grpc_url)
    assert code == 0, out + err
    assert "2 OK, 0 FAIL" in out
    return tune


def test_tune_writes_the_verified_winner_and_a_report(tiny_repo, tmp_path, run_cli):
    before = _snapshot(tiny_repo)
    prod, out = tmp_path / "prod", tmp_path / "tune"
    code, stdout, stderr = run_cli("tune", "--repo", tiny_repo, "--out", prod, "--results", out,
                                   "--memory-budget-gb", "64", *SMALL)
    assert code == 0, stderr
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == SCHEMA
    results = TuneResults.load(out / "results.json")
    assert results.complete and [r["run"] for r in results.runs] == [1]
    variants = {c["variant"] for c in results.candidates}
    assert variants == ({"libtorch", "python"} if PYTORCH_BACKEND else {"python"})
    assert "plan: " in stderr and "stage 1 threads x instances" in stderr  # the plan first
    assert stderr.index("plan: ") < stderr.index("[tiny_mlp 1 threads x instances]")
    for c in results.candidates:  # every candidate measured once, each point with its CSV
        points = results.points_of(c["key"])
        assert c["complete"] and c["state"] == "measured", c
        assert sorted(p.concurrency for p in points) == [1, 4]
        assert all(p.throughput > 0 and (out / p.csv).is_file() for p in points)
        assert c["memory_bytes"] is not None and c["seconds"] > 0
    python = [c for c in results.candidates if c["variant"] == "python"]
    assert python and all(c["memory_bytes"] > 100 * 2**20 for c in python)  # a stub each
    keys = [(p.candidate, p.concurrency) for p in results.points]
    assert len(keys) == len(set(keys))
    stages = [c["stage"] for c in results.candidates]
    assert stages[0] == "1 threads x instances" and stages == sorted(stages)

    tune = _check_production(prod, results, tmp_path, run_cli)
    report = (out / "report.md").read_text()
    first = report.split("## Decision", 1)[1].strip().splitlines()[0]
    assert first.startswith("- tiny_mlp: ") and "verified over HTTP and gRPC" in first
    assert tune["decision"] in first and tune["decision"] in stdout
    fit = results.decision("tiny_mlp")["fit"]  # a budget no candidate comes near
    assert f"{fit['instances']} instances of {fit['model']} fit in 64 GB" in first
    assert fit["instances"] > 1 and "Without the" not in first
    assert report.count("| libtorch |") + report.count("| python |") == len(results.candidates)
    assert (out / "plots" / "tiny_mlp_throughput_vs_p99.png").is_file()
    assert "<img " in (out / "report.html").read_text()
    assert _snapshot(tiny_repo) == before  # the user's repository is never touched
    assert not list(out.glob(".gen-repo-tune-*")) and not list(tmp_path.glob(".gen-repo-*"))
    assert not [p for p in alive(descendants(os.getpid())) if "tritonserver" in p]


def _complete(out: Path) -> int:
    try:
        return sum(c.get("complete", False) for c in
                   json.loads((out / "results.json").read_text())["candidates"])
    except (OSError, ValueError, KeyError):
        return 0


def test_ctrl_c_keeps_what_was_measured_and_resume_measures_nothing_twice(tiny_repo, tmp_path,
                                                                         run_cli):
    prod, out = tmp_path / "prod", tmp_path / "tune"
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator.cli", "tune", "--repo", str(tiny_repo), "--out",
         str(prod), "--results", str(out), *SMALL], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_as_default)
    try:
        deadline = time.monotonic() + 240
        while _complete(out) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "two candidates were not measured in time"
            time.sleep(0.2)
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "ERROR: interrupted." in stderr and "Traceback" not in stderr
    assert not alive(children)
    first = TuneResults.load(out / "results.json")
    assert not first.complete and first.stopped_by == "interrupted (Ctrl-C)"
    assert "STOPPED EARLY" in (out / "report.md").read_text()
    assert not prod.exists()  # an interrupted search writes no production repository
    measured_before = {(p.candidate, p.concurrency): p.to_dict() for p in first.points}
    assert len(measured_before) >= 4

    code, stdout, stderr = run_cli("tune", "--out", prod, "--resume", out)  # its repo, models
    assert code == 0, stderr
    results = TuneResults.load(out / "results.json")
    assert results.complete and [r["run"] for r in results.runs] == [1, 2]
    keys = [(p.candidate, p.concurrency) for p in results.points]
    assert len(keys) == len(set(keys)), "a point was measured twice"
    for key, d in measured_before.items():  # kept as they were, and reused
        (p,) = [p for p in results.points if (p.candidate, p.concurrency) == key]
        assert p.to_dict() == d and p.run == 1
    new = [p for p in results.points if p.run == 2]
    assert results.runs[1]["measured_points"] == len(new)
    assert results.runs[1]["reused_points"] == len(measured_before)  # every one, once
    assert "reused from results.json" in (out / "report.md").read_text()
    _check_production(prod, results, tmp_path, run_cli)

    # the same search again: everything is stored, nothing is measured, the same winner
    code, _, stderr = run_cli("tune", "--repo", tiny_repo, "--out", prod, "--resume", out,
                              "--force")
    assert code == 0, stderr
    again = TuneResults.load(out / "results.json")
    assert again.runs[2]["measured_points"] == 0 and len(again.points) == len(results.points)
    assert again.decision("tiny_mlp")["winner"] == results.decision("tiny_mlp")["winner"]

    code, _, stderr = run_cli("tune", "--repo", tiny_repo, "--resume", out, "--concurrency", "2")
    assert code == 2 and "--concurrency differs from the search stored" in stderr


def test_an_impossible_p99_budget_is_an_error_naming_the_best_p99(tiny_repo, tmp_path,
                                                                  run_cli):
    prod, out = tmp_path / "prod", tmp_path / "tune"
    code, stdout, stderr = run_cli("tune", "--repo", tiny_repo, "--out", prod, "--results", out,
                                   "--models", "tiny_mlp_python", "--p99-budget-ms", "0.001",
                                   "--instances", "1", "--threads", "2", "--queue-delays-us",
                                   "100", "--max-batch-sizes", "8", "--no-preferred-batch-sizes",
                                   "--concurrency", "1,4", "--measurement-interval", "300",
                                   "--stability", "1000")
    assert code == 1, stderr
    assert "ERROR: tiny_mlp: no candidate kept its p99 within 0.001 ms" in stderr
    results = TuneResults.load(out / "results.json")
    best = min(p.get("p99_us") for p in results.points) / 1000
    assert f"the best p99 measured was {best:.1f} ms" in stderr
    assert "TIP: Raise --p99-budget-ms" in stderr and "Traceback" not in stderr
    # concurrency 4 was never measured: each candidate's p99 at concurrency 1 was over the
    # budget already
    assert results.candidates and [p.concurrency for p in results.points] == \
        [1] * len(results.candidates)
    assert all("over the 0.001 ms budget already" in c["stopped_early"]
               for c in results.candidates)
    assert not prod.exists()
    assert "no winner" in (out / "report.md").read_text()


def test_existing_models_in_out_are_not_replaced_without_force(tiny_repo, tmp_path, run_cli):
    prod = tmp_path / "prod"
    (prod / "tiny_mlp").mkdir(parents=True)
    start = time.monotonic()
    code, _, stderr = run_cli("tune", "--repo", tiny_repo, "--out", prod, "--results",
                              tmp_path / "tune", "--models", "tiny_mlp")
    assert code == 1 and "already holds tiny_mlp" in stderr and "--force" in stderr
    assert time.monotonic() - start < 10  # refused before anything is measured
    assert not (tmp_path / "tune").exists()
