"""gen-repo tune without a server: the candidate and the config it writes, the space, each
objective's choice, the staged search and its replay on recorded points (real figures from a tune
of the tiny MLP on this machine), the report, and bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generator.repository import manifest
from generator.repository.config import build_header, model_config, write_config
from generator.repository.layout import BuiltModel
from generator.errors import BudgetError, SpecError
from generator.spec import ModelSpec, TensorSpec
from generator.tune import objective as obj
from generator.tune.candidate import Batching, Candidate, configure, default_of, served_spec
from generator.tune.measure import Measured
from generator.tune.objective import GIB, KEEP, Objective, Ranked, pareto_front, rank
from generator.tune.report import write_report
from generator.tune.results import TunePoint, TuneResults
from generator.tune.search import Outcome, Search, no_winner_error
from generator.tune.settings import Settings, check_resumable
from generator.tune.space import OFF, Space, model_space
from generator.variants import registry
from generator.variants.base import python_backend_parameters
from generator.variants.libtorch import backend_parameters
from generator.variants.python_compile import warmup_batch_sizes
from tests.conftest import ROOT

RECORDED = ROOT / "tests" / "data" / "tune" / "tiny_mlp_staged.json"
RECORDED_GRID = ROOT / "tests" / "data" / "tune" / "tiny_mlp_grid.json"
# More grids of benchmarks/tune_vs_grid.py: _2 and resnet18 from a later, quieter run; _3 from
# a run on a loaded machine after the TorchScript layout change.
GRIDS = {name: ROOT / "tests" / "data" / "tune" / f"{name}.json"
         for name in ("tiny_mlp_grid_2", "resnet18_grid", "tiny_mlp_grid_3", "resnet18_grid_3")}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def built(tmp: Path, variant: str, name: str = "tiny_mlp", **spec) -> BuiltModel:
    """A model directory as gen-repo build writes it (config, record, two sample cases), with
    a stand-in artifact: enough for everything tune reads without serving."""
    spec = ModelSpec(name=name, inputs=(TensorSpec("x", "float32", (16,)),),
                     outputs=(TensorSpec("output", "float32", (4,)),), **spec)
    v = registry.get(variant)
    name = spec.model_dir_name(variant)
    load = {"artifact": "model.package", "loader": "package", "artifact_sha256": "0" * 64}
    if variant == "libtorch":
        params = backend_parameters(spec)[0]
    else:
        params = python_backend_parameters(spec, load)
        if variant == "python-compile":
            params.update(compile_mode="default", warmup_batch_sizes=warmup_batch_sizes(spec))
    d = tmp / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    write_config(d, model_config(v.served_spec(spec), name, v.engine, params),
                 build_header(variant))
    (d / "gen_repo.json").write_text(json.dumps({
        "variant": variant, "model_name": name, "spec": spec.to_dict(), "load_params": load,
        "artifacts": {"model.package": "0" * 64}}))
    for case, rows in (("", 4), ("_b", 3)):
        np.savez(d / f"gen_repo_samples{case}.npz", x=np.zeros((rows, 16), np.float32))
        np.savez(d / f"gen_repo_reference{case}.npz", output=np.zeros((rows, 4), np.float32))
    manifest.write(d)
    return BuiltModel(d)


# ---------------------------------------------------------------------------------------------
# the candidate and its config


def test_the_default_candidate_is_the_build_config_and_keys_are_stable(tmp_path):
    m = built(tmp_path, "python")
    c = default_of(m)
    assert c == Candidate("tiny_mlp_python", "python", 1, 2, True, 100, (), 8)
    assert c.key == "tiny_mlp_python/i1-t2-d100-m8"
    assert Candidate.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    other = c.with_batching(Batching(True, 100, (4,), 8))
    assert other.key == "tiny_mlp_python/i1-t2-d100-p4-m8" and other.key != c.key
    assert c.with_batching(Batching(False, 0, (), 8)).key == "tiny_mlp_python/i1-t2-off-m8"
    assert other.describe(8) == "python ×1, 2 threads, batching delay 100 µs, preferred batch 4"
    assert c.with_(max_queue_delay_us=2000).describe(8) == \
        "python ×1, 2 threads, batching delay 2 ms"


def test_a_python_candidate_sets_instances_threads_and_batching(tmp_path):
    m = built(tmp_path, "python")
    c = Candidate(m.name, "python", 2, 1, True, 2000, (4,), 4)
    config = configure(m, c, name="tiny_mlp")
    assert config.name == "tiny_mlp" and config.max_batch_size == 4
    assert [g.count for g in config.instance_group] == [2]
    assert config.parameters["threads"].string_value == "1"
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    off = configure(m, c.with_batching(Batching(False, 0, (), 8)))
    assert not off.HasField("dynamic_batching") and off.max_batch_size == 8
    assert m.config.name == m.name and m.config.instance_group[0].count == 1  # a copy
    spec = served_spec(m, c)
    assert (spec.cpu_instances, spec.threads, spec.max_batch_size, spec.max_queue_delay_us,
            spec.preferred_batch_sizes) == (2, 1, 4, 2000, (4,))


def test_a_libtorch_candidate_pins_intra_op_threads_and_never_writes_inter_op(tmp_path):
    m = built(tmp_path, "libtorch")
    assert "INTRA_OP_THREAD_COUNT" not in m.config.parameters  # the build leaves it unset
    one = configure(m, Candidate(m.name, "libtorch", 1, 2, True, 100, (), 8))
    assert one.parameters["INTRA_OP_THREAD_COUNT"].string_value == "2"
    assert "ENABLE_WEIGHT_SHARING" not in one.parameters
    two = configure(m, Candidate(m.name, "libtorch", 2, 1, True, 100, (), 8))
    assert two.parameters["INTRA_OP_THREAD_COUNT"].string_value == "1"
    assert two.parameters["ENABLE_WEIGHT_SHARING"].string_value == "true"
    assert [g.count for g in two.instance_group] == [2]
    assert all("INTER_OP" not in k for k in (*one.parameters, *two.parameters))
    assert "threads" not in two.parameters  # a Python-backend parameter only


def test_python_compile_compiles_for_the_batches_the_new_batching_forms(tmp_path):
    m = built(tmp_path, "python-compile")
    assert m.config.parameters["warmup_batch_sizes"].string_value == "1,2,8"
    c = Candidate(m.name, "python-compile", 1, 2, True, 500, (2,), 4)
    assert configure(m, c).parameters["warmup_batch_sizes"].string_value == "1,2,4"


# ---------------------------------------------------------------------------------------------
# the space


def test_the_space_on_two_cores_and_the_default_is_always_in_it(tmp_path):
    m = built(tmp_path, "python")
    s = model_space(m, Space(), n_cores=2)
    assert s.settings == [(1, 2), (1, 1), (2, 1)]  # never more threads than cores
    assert s.batchings[0] == s.default.batching
    assert Batching(False, 0, (), 8) in s.batchings
    assert Batching(True, 5000, (4,), 8) in s.batchings and Batching(True, 0, (), 4) in s.batchings
    assert Batching(True, 0, (4,), 8) not in s.batchings  # no delay: a preferred size is moot
    assert not any(b.max_batch_size < 4 for b in s.batchings)  # verify sends 4 rows
    assert len(s.grid()) == s.size == 3 * 15 and s.grid()[0] == s.default
    assert len({c.key for c in s.grid()}) == s.size
    small = model_space(m, Space(instances=(1,), threads=(1,), delays_us=(OFF, 2000),
                                 max_batch_sizes=(8,), preferred=False), n_cores=2)
    assert small.settings == [(1, 2), (1, 1)]
    assert small.batchings == [Batching(True, 100, (), 8), Batching(False, 0, (), 8),
                               Batching(True, 2000, (), 8)]
    eight = model_space(m, Space(), n_cores=8)  # on 8 cores (the build's default stays first)
    assert {(1, 8), (1, 4), (2, 4), (4, 2), (8, 1)} <= set(eight.settings)
    assert not [(i, t) for i, t in eight.settings if i * t > 8]


def test_max_batch_sizes_outside_what_the_model_serves_are_refused(tmp_path):
    m = built(tmp_path, "python")
    with pytest.raises(SpecError) as e:
        model_space(m, Space(max_batch_sizes=(16,)))
    assert "at most the 8 it was built for" in e.value.message and e.value.tip
    with pytest.raises(SpecError) as e:
        model_space(m, Space(max_batch_sizes=(2,)))
    assert "at least 4" in e.value.message


def test_a_model_without_a_batch_dimension_searches_no_batching(tmp_path):
    m = built(tmp_path, "python", max_batch_size=0)
    s = model_space(m, Space(), n_cores=2)
    assert s.batchings == [Batching(False, 0, (), 0)] and s.size == 3


# ---------------------------------------------------------------------------------------------
# objectives on recorded points


class Recorded:
    """A measurer answering from recorded figures (what a real tune measured); counts what it
    was asked to measure."""

    def __init__(self, stored: set[str] | None = None, interrupt_after: int | None = None,
                 path: Path = RECORDED):
        data = json.loads(path.read_text())
        self.records = {c["key"]: c for c in data["candidates"]}
        self.points: dict[str, list[TunePoint]] = {}
        for p in data["points"]:
            fields = {k: p[k] for k in ("model", "base", "variant", "instances", "threads",
                                        "batch_size", "concurrency", "protocol", "status")}
            metrics = {k: p[k] for k in ("throughput", "p50_us", "p99_us") if k in p} \
                if p["status"] != "failed" else {}
            self.points.setdefault(p["candidate"], []).append(
                TunePoint(**fields, metrics=metrics, candidate=p["candidate"]))
        self.stored_keys = set(stored or ())
        self.interrupt_after = interrupt_after
        self.asked: list[str] = []
        self.stages: dict[str, str] = {}

    def result(self, c: Candidate, reused: bool) -> Measured:
        record = self.records.get(c.key) or {"state": "failed", "reason": "not recorded",
                                             "seconds": 10.0}
        return Measured(c, record, self.points.get(c.key, []), reused=reused)

    def stored(self, c: Candidate) -> Measured | None:
        return self.result(c, True) if c.key in self.stored_keys else None

    def measure(self, c: Candidate, base: str, stage: str, stop=None) -> Measured:
        if self.interrupt_after is not None and len(self.asked) == self.interrupt_after:
            raise KeyboardInterrupt
        self.asked.append(c.key)
        self.stages[c.key] = stage
        return self.result(c, False)


STAGED_SPACE = Space(delays_us=(OFF, 100, 2000))  # what RECORDED searched, at concurrency 1,8
GRID_SPACE = Space(delays_us=(OFF, 100, 2000), max_batch_sizes=(8,), preferred=False)


def recorded_outcome(tmp_path, objective: Objective, budget_s: float = 3600.0,
                     measurer: Recorded | None = None) -> tuple[Search, Outcome, Recorded]:
    """The search of RECORDED's tune (libtorch and python, concurrency 1 and 8)."""
    spaces = [model_space(built(tmp_path, v), STAGED_SPACE, n_cores=2)
              for v in ("libtorch", "python")]
    measurer = measurer or Recorded()
    search = Search(Settings(objective, (1, 8), space=STAGED_SPACE), measurer, budget_s)
    return search, Outcome("tiny_mlp", spaces), measurer


def grid_outcome(tmp_path, budget_s: float = 3600.0, measurer: Recorded | None = None,
                 name: str = "tiny_mlp") -> tuple[Search, Outcome, Recorded]:
    """The search over RECORDED_GRID's space (three variants, concurrency 8)."""
    spaces = [model_space(built(tmp_path, v, name), GRID_SPACE, n_cores=2)
              for v in ("libtorch", "python", "python-aoti")]
    measurer = measurer or Recorded(path=RECORDED_GRID)
    search = Search(Settings(Objective(), (8,), space=GRID_SPACE), measurer, budget_s)
    return search, Outcome(name, spaces), measurer


def decide_on_everything_recorded(tmp_path, objective: Objective) -> tuple[Search, Outcome]:
    search, o, rec = recorded_outcome(tmp_path, objective)
    for key in rec.records:
        c = Candidate.from_dict(rec.records[key])
        o.measured[key] = rec.result(c, True)
    search.decide(o)
    return search, o


def test_max_throughput_picks_the_highest_throughput(tmp_path):
    _, o = decide_on_everything_recorded(tmp_path, Objective())
    assert o.winner.candidate.key == "tiny_mlp_libtorch/i2-t1-d2000-m8"
    assert o.winner.score.throughput == pytest.approx(13068.7)
    assert o.runner_up.candidate.key == "tiny_mlp_libtorch/i2-t1-d100-m8"


def test_min_latency_picks_the_lowest_worst_p99(tmp_path):
    _, o = decide_on_everything_recorded(tmp_path, Objective(obj.MIN_LATENCY))
    # worst p99 over concurrency 1 and 8: 1.93 ms beats 2000 µs delay's 3.19 and off's 4.07
    assert o.winner.candidate.key == "tiny_mlp_libtorch/i2-t1-d100-m8"
    assert o.winner.score.p99_ms == pytest.approx(1.934)


def test_a_p99_budget_takes_the_highest_throughput_inside_it(tmp_path):
    _, o = decide_on_everything_recorded(tmp_path, Objective(p99_budget_ms=1.0))
    # only concurrency-1 points stay within 1 ms; batching off answers those fastest
    assert o.winner.candidate.key == "tiny_mlp_libtorch/i2-t1-off-m8"
    assert o.winner.score.point.concurrency == 1
    assert o.winner.score.throughput == pytest.approx(6805.1)


def test_an_impossible_p99_budget_names_the_best_p99_found(tmp_path):
    objective = Objective(p99_budget_ms=0.1)
    _, o = decide_on_everything_recorded(tmp_path, objective)
    assert o.winner is None
    e = no_winner_error(o, objective, "concurrency 1,8")
    assert isinstance(e, BudgetError)
    assert "0.1 ms" in e.message and "the best p99 measured was 0.3 ms" in e.message
    assert "tiny_mlp_libtorch/i2-t1-off-m8" in e.message and "--p99-budget-ms" in e.tip


def test_a_memory_budget_counts_instances_times_the_memory_measured_per_instance(tmp_path):
    search, o = decide_on_everything_recorded(tmp_path, Objective(memory_budget_gb=0.6))
    # libtorch: 0.51 GB measured for one instance, so two instances need 1.02 GB; the python
    # instance needs 0.73 GB: the best one-instance libtorch config wins
    assert o.winner.candidate.key == "tiny_mlp_libtorch/i1-t1-d100-m8"
    excluded = {c.key: why for c, why in o.excluded}
    assert "over the 0.6 GB memory budget" in excluded["tiny_mlp_libtorch/i2-t1-d2000-m8"]
    assert "tiny_mlp_python/i1-t2-d100-m8" in excluded
    e = no_winner_error(o, Objective(memory_budget_gb=0.01), "c8")
    assert "smallest measured needs" in e.message


def test_the_pages_python_instances_share_count_once_whatever_the_instance_count(tmp_path):
    """A Python-backend candidate's record keeps the pages its stubs share (libraries, mapped
    weights): more instances multiply only the rest."""
    import dataclasses
    import math

    from generator.tune import decision

    search, o = decide_on_everything_recorded(tmp_path, Objective(memory_budget_gb=2))
    python = next(m for m in o.measured.values() if m.candidate.model == "tiny_mlp_python")
    total = python.record["memory_bytes"]  # one instance measured
    python.record["memory_shared_bytes"] = total - 0.1 * GIB
    shared, per = search.memory_model(o, "tiny_mlp_python")
    assert shared == pytest.approx(total - 0.1 * GIB) and per == pytest.approx(0.1 * GIB)
    four = dataclasses.replace(python.candidate, instances=4)
    assert search.memory_of(o, four) == pytest.approx(total + 0.3 * GIB)  # not 4 x total
    libtorch = next(m for m in o.measured.values() if m.candidate.model == "tiny_mlp_libtorch")
    assert search.memory_model(o, "tiny_mlp_libtorch")[0] == 0  # inside the server: none
    assert search.memory_of(o, dataclasses.replace(libtorch.candidate, instances=3)) == \
        pytest.approx(3 * search.memory_model(o, "tiny_mlp_libtorch")[1])
    assert Objective(memory_budget_gb=2).instances_that_fit(per, shared) == \
        math.floor((2 * GIB - shared) / per)
    w = {"describe": "python ×2, 1 thread", "throughput": 900.0, "p99_ms": 2.0,
         "candidate": {"variant": "python", "instances": 2}}
    d = {"winner": w, "default": w, "winner_is_default": True,
         "fit": {"model": "m_python", "instances": 12, "per_instance_bytes": 0.1 * GIB,
                 "shared_bytes": 0.75 * GIB, "models": 2}}
    assert decision.sentence(Objective(memory_budget_gb=2), "m", d).endswith(
        ". 12 instances of m_python fit in 2 GB (0.10 GB each as measured, and 0.75 GB they"
        " share once); the winner runs 2, so 2 such models fit")


def _ranked(key: str, instances: int, delay: int, thr: float) -> Ranked:
    c = Candidate(key, "libtorch", instances, 1, True, delay, (), 8)
    p = TunePoint(key, "m", "libtorch", instances, 1, 1, 8, "grpc", "ok",
                  metrics={"throughput": thr, "p99_us": 1000.0})
    return Ranked(c, obj.Score(thr, p, obj.MAX_THROUGHPUT))


def test_ties_go_to_the_simpler_config():
    busy = _ranked("a", 2, 2000, 1000.0)
    simple = _ranked("b", 1, 0, 980.0)  # 2% lower: a tie
    assert rank([busy, simple])[0] is simple
    assert rank([busy, _ranked("c", 1, 0, 900.0)])[0] is busy  # 10% lower: not a tie
    assert rank([_ranked("d", 1, 2000, 995.0), _ranked("e", 1, 100, 990.0)])[0].candidate.model \
        == "e"  # the shorter delay


def test_the_pareto_front_keeps_only_undominated_points():
    pts = [TunePoint("m", "m", "v", 1, 1, 1, 1, "grpc", "ok",
                     metrics={"throughput": t, "p99_us": p99})
           for t, p99 in ((100, 5), (200, 9), (150, 10), (300, 20), (250, 25))]
    front = pareto_front(pts, lambda p: (p.throughput, -p.get("p99_us")))
    assert [(p.throughput, p.get("p99_us")) for p in front] == [(100, 5), (200, 9), (300, 20)]


def test_memory_is_the_pareto_fronts_third_axis():
    """A config is dominated only by one at least as good on throughput, p99 and memory, and
    better on one: the leaner config stays on the front although another is faster."""
    fast = _ranked("fast", 2, 0, 1000.0)  # p99 1 ms each
    lean = _ranked("lean", 1, 0, 900.0)
    slow = _ranked("slow", 1, 0, 800.0)
    memory = {"fast": 2 * GIB, "lean": GIB, "slow": GIB}

    def figures(e):
        return obj.tradeoff(e.score, memory[e.candidate.model])

    assert pareto_front([fast, lean, slow], figures) == [fast, lean]
    assert pareto_front([fast, lean, slow], lambda e: figures(e)[:2]) == [fast]  # without it
    memory["slow"] = 0.5 * GIB  # the leanest now: on the front too
    assert pareto_front([fast, lean, slow], figures) == [fast, lean, slow]
    assert pareto_front([fast, _ranked("twin", 2, 0, 1000.0)], lambda e: obj.tradeoff(
        e.score, 2 * GIB)) == [fast, _ranked("twin", 2, 0, 1000.0)]  # equal: neither dominates
    assert obj.tradeoff(fast.score, None)[2] == -float("inf")  # unknown memory: the most


def test_the_decision_says_what_the_memory_budget_excluded_and_how_many_instances_fit(
        tmp_path):
    from generator.tune import decision

    search, o = decide_on_everything_recorded(tmp_path, Objective(memory_budget_gb=0.6))
    d = decision.entry(search, o)
    assert d["winner"]["key"] == "tiny_mlp_libtorch/i1-t1-d100-m8"
    assert d["without_memory_budget"]["key"] == "tiny_mlp_libtorch/i2-t1-d2000-m8"
    assert d["fit"] == {"model": "tiny_mlp_libtorch", "instances": 1,
                        "per_instance_bytes": pytest.approx(0.509 * GIB, rel=1e-3)}
    assert d["sentence"].endswith(
        ". 1 instance of tiny_mlp_libtorch fits in 0.6 GB (0.51 GB each as measured). Without"
        " the 0.6 GB memory budget it would have picked libtorch ×2, 1 thread, batching delay 2"
        " ms (13068.7 infer/s at p99 1.2 ms), which needs 1.02 GB, over the 0.6 GB memory"
        " budget")
    # a budget that excludes nothing the winner needs: how many fit, and nothing about exclusion
    search, o = decide_on_everything_recorded(tmp_path, Objective(memory_budget_gb=4))
    d = decision.entry(search, o)
    assert "without_memory_budget" not in d and d["fit"]["instances"] == 7
    assert d["sentence"].endswith(". 7 instances of tiny_mlp_libtorch fit in 4 GB (0.51 GB each"
                                  " as measured); the winner runs 2, so 3 such models fit")
    # the front is the same with and without the budget: it shows what the budget costs
    assert d["pareto"] == ["tiny_mlp_python/i1-t2-d100-m8", "tiny_mlp_libtorch/i1-t1-d100-m8",
                           "tiny_mlp_libtorch/i2-t1-d2000-m8"]
    search, o = decide_on_everything_recorded(tmp_path, Objective())
    d = decision.entry(search, o)
    assert "fit" not in d and "without_memory_budget" not in d and " GB" not in d["sentence"]


def test_a_default_config_that_stays_the_best_still_says_how_many_instances_fit():
    from generator.tune import decision

    w = {"describe": "python ×1, 1 thread", "throughput": 4017.6, "p99_ms": 0.4,
         "candidate": {"variant": "python", "instances": 1}}
    d = {"winner": w, "default": w, "winner_is_default": True,
         "fit": {"model": "m_python", "instances": 87, "per_instance_bytes": 0.73 * GIB}}
    text = decision.sentence(Objective(memory_budget_gb=64), "m", d)
    assert "the default python config stays the best (4017.6 infer/s at p99 0.4 ms)" in text
    assert text.endswith(". 87 instances of m_python fit in 64 GB (0.73 GB each as measured)")


# ---------------------------------------------------------------------------------------------
# the staged search on recorded points


STAGED_ORDER = [  # what the staged search asks for on the recorded grid, in order
    "tiny_mlp_libtorch/i1-t2-d100-m8", "tiny_mlp_libtorch/i1-t1-d100-m8",  # 1 threads x inst.
    "tiny_mlp_libtorch/i2-t1-d100-m8",
    "tiny_mlp_python/i1-t1-d100-m8", "tiny_mlp_python_aoti/i1-t1-d100-m8",  # 2 variants
    "tiny_mlp_libtorch/i1-t1-off-m8", "tiny_mlp_libtorch/i2-t1-off-m8",  # 4 batching: off
    "tiny_mlp_libtorch/i1-t1-d2000-m8"]  # ... at the settings kept, then the delays


def test_on_a_recorded_grid_the_staged_search_finds_the_best_in_a_fraction_of_its_time(
        tmp_path):
    """The goals of benchmarks/tune_vs_grid.py, on the grid it measured for the tiny MLP: the
    staged search, asking only for what it wants, finds a config within 5% of the grid's best
    (here: the best) while spending at most 35% of the grid's measurement time, and beats the
    default build config by the 1.2x the grid shows is available."""
    search, o, rec = grid_outcome(tmp_path)
    assert {c.key for s in o.spaces for c in s.grid()} == set(rec.records)  # the same space
    search.run([o])
    assert rec.asked == STAGED_ORDER
    scores = {k: Objective().score(pts) for k, pts in rec.points.items()}
    best = max(s.throughput for s in scores.values() if s)
    assert o.winner.score.throughput >= 0.95 * best
    assert o.winner.candidate.key == "tiny_mlp_libtorch/i1-t1-off-m8"
    spent = sum(rec.records[k]["seconds"] for k in rec.asked)
    assert spent <= 0.35 * sum(r["seconds"] for r in rec.records.values())
    baseline = scores["tiny_mlp_libtorch/i1-t2-d100-m8"]  # the build's libtorch config
    assert o.baseline.key == baseline.point.candidate
    assert best / baseline.throughput >= 1.2  # the grid shows that much is available ...
    assert o.winner.score.relative(baseline) >= 1.2  # ... and the staged search gets it
    # the other variants reached 0.62x and 0.53x the incumbent at its setting: dropped
    for name in ("tiny_mlp_python", "tiny_mlp_python_aoti"):
        assert len([k for k in rec.asked if k.startswith(name + "/")]) == 1
        assert any(n.startswith(f"{name}: dropped after stage 2") and f"{KEEP:.2f}×" in n
                   for n in o.notes)
    stages = [rec.stages[k] for k in rec.asked]
    assert stages == sorted(stages)  # in stage order


@pytest.mark.parametrize("grid, floor, gain", [  # gain: the grid's best is >= 1.2x the default
    ("resnet18_grid", 0.95, True),
    # In this grid the three batching-off configs of libtorch are within 8% of each other
    # (15640, 14775, 14458 infer/s): the staged search measures the two its stages point to and
    # takes the simpler of that tie (2% apart), 0.92 of the grid's best -- inside the spread of
    # one measurement on a shared machine.
    ("tiny_mlp_grid_2", 0.92, True),
    # Here one instance with the batcher off is best (14620 infer/s) while with the build's
    # batching two instances tie with one: only the batcher-off probe at every setting kept in
    # stage 1 finds it (at the best setting alone: 0.91).
    ("tiny_mlp_grid_3", 0.95, True),
    # With the TorchScript in its faster layout, the build's libtorch config is the grid's best.
    ("resnet18_grid_3", 0.95, False)])
def test_on_more_recorded_grids_the_staged_search_stays_within_a_third_of_the_time(
        tmp_path, grid, floor, gain):
    name = grid.split("_grid")[0]
    search, o, rec = grid_outcome(tmp_path, measurer=Recorded(path=GRIDS[grid]), name=name)
    assert {c.key for s in o.spaces for c in s.grid()} == set(rec.records)
    search.run([o])
    scores = {k: Objective().score(pts) for k, pts in rec.points.items()}
    best = max(s.throughput for s in scores.values() if s)
    assert o.winner.score.throughput >= floor * best
    spent = sum(rec.records[k]["seconds"] for k in rec.asked)
    assert spent <= 0.35 * sum(r["seconds"] for r in rec.records.values())
    default = scores[f"{name}_libtorch/i1-t2-d100-m8"]
    assert (best / default.throughput >= 1.2) == gain
    if gain:  # the grid shows that much is available, and the staged search gets it
        assert o.winner.score.relative(default) >= 1.2


def test_the_time_budget_stops_the_search_and_says_what_was_left(tmp_path):
    search, o, rec = grid_outcome(tmp_path, budget_s=30.0)
    search.run([o])
    # 21 s for stage 1; a Python-backend variant would need ~15 s more (its load is slower),
    # a libtorch candidate ~7 s, as its three measured ones took: that one still fits
    assert rec.asked == STAGED_ORDER[:3] + ["tiny_mlp_libtorch/i1-t1-off-m8"]
    assert sum(rec.records[k]["seconds"] for k in rec.asked) <= 30.0
    skipped = {c.key: why for c, _, why in o.not_measured}
    assert {"tiny_mlp_python/i1-t1-d100-m8", "tiny_mlp_python_aoti/i1-t1-d100-m8"} <= set(skipped)
    assert all("over the time budget" in why for why in skipped.values())
    assert o.winner.candidate.key == "tiny_mlp_libtorch/i1-t1-off-m8"


def test_a_resumed_search_measures_only_what_the_first_run_had_not(tmp_path):
    first = Recorded(path=RECORDED_GRID, interrupt_after=4)
    search, o, _ = grid_outcome(tmp_path, measurer=first)
    with pytest.raises(KeyboardInterrupt):
        search.run([o])
    assert first.asked == STAGED_ORDER[:4]
    again = Recorded(path=RECORDED_GRID, stored=set(first.asked))
    search, o, _ = grid_outcome(tmp_path, measurer=again)
    search.run([o])
    assert again.asked == STAGED_ORDER[4:]  # nothing measured twice, nothing missed
    assert o.winner.candidate.key == "tiny_mlp_libtorch/i1-t1-off-m8"


def test_the_grid_strategy_asks_for_every_candidate(tmp_path):
    from generator.tune.settings import GRID

    space = Space(instances=(1,), threads=(2,), delays_us=(OFF, 100), max_batch_sizes=(8,),
                  preferred=False)
    spaces = [model_space(built(tmp_path, "libtorch"), space, n_cores=2)]
    rec = Recorded()
    Search(Settings(Objective(), (1, 8), space=space, strategy=GRID), rec, 3600).run(
        [Outcome("tiny_mlp", spaces)])
    assert rec.asked == ["tiny_mlp_libtorch/i1-t2-d100-m8", "tiny_mlp_libtorch/i1-t2-off-m8"]


# ---------------------------------------------------------------------------------------------
# results, the report, resume settings


def test_the_report_leads_with_the_decision_and_plots_the_pareto_front(tmp_path):
    from generator.tune import decision

    search, o, rec = grid_outcome(tmp_path)
    search.run([o])
    results = TuneResults(search=search.settings.to_dict() | {"budget_minutes": 10},
                          complete=True)
    for m in o.measured.values():
        results.candidates.append(dict(m.record, base="tiny_mlp"))
        results.points += m.points
    results.set_decision(decision.entry(search, o))
    path = results.save(tmp_path / "out" / "results.json")
    back = TuneResults.load(path)
    assert back.to_dict() == results.to_dict() and back.points[0].candidate
    md, page = write_report(back, tmp_path / "out")
    text = md.read_text()
    decision_line = text.split("## Decision", 1)[1].strip().splitlines()[0]
    assert decision_line.startswith("- tiny_mlp: libtorch ×1, 1 thread, no dynamic batching —"
                                    " 2.09× the throughput of the default libtorch config at"
                                    " p99 1.4 ms")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "|---" not in line]
    assert len(rows) == 1 + len(STAGED_ORDER)  # the header, then every measured candidate
    assert "winner" in text and "runner-up" in text and "default" in text
    assert "dropped after stage 2" in text
    front = back.decision("tiny_mlp")["pareto"]
    assert front and text.count("on the Pareto front (throughput, p99, memory)") == len(front)
    png = tmp_path / "out" / "plots" / "tiny_mlp_throughput_vs_p99.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "<img src='plots/tiny_mlp_throughput_vs_p99.png'" in page.read_text()


def test_resume_refuses_flags_that_change_the_search():
    stored = Settings(Objective(), (8,))
    check_resumable(stored, {"--concurrency": [8]}, "results.json")  # the same: fine
    with pytest.raises(SpecError) as e:
        check_resumable(stored, {"--concurrency": [1, 8]}, "results.json")
    assert "--concurrency" in e.value.message and "--results" in e.value.tip
    back = Settings.from_dict(json.loads(json.dumps(stored.to_dict())))
    assert back == stored


@pytest.mark.parametrize("argv, fragment", [
    (["--concurrency", "0"], "--concurrency"),
    (["--queue-delays-us", "off,soon"], "'soon' is neither"),
    (["--p99-budget-ms", "-5"], "--p99-budget-ms -5 must be positive"),
    (["--budget-minutes", "0"], "--budget-minutes"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--repo", "s3://bucket/models"], "local repository"),
    (["--resume", "a", "--results", "b"], "two directories"),
    (["--stability", "0"], "--stability"),
])
def test_bad_flags_are_one_paragraph_errors(run_cli, tmp_path, argv, fragment):
    code, out, err = run_cli("tune", "--repo", tmp_path, *argv)
    assert code == 2, err
    assert err.startswith("ERROR: ") and fragment in err and "TIP: " in err
    assert "Traceback" not in err


def test_an_empty_or_missing_repository_is_an_error(run_cli, tmp_path):
    code, _, err = run_cli("tune", "--repo", tmp_path / "nothing", "--results", tmp_path / "r")
    assert code == 1 and "does not exist" in err and "TIP: " in err
    assert not (tmp_path / "r").exists()
