"""The sweep: models x instance counts x batch sizes x concurrency, one perf_analyzer run a point.

One run per point (not one run per concurrency range) so that each point has its own CSV, exact
command line and status, progress and the time left are shown between points, and an interrupt
or a server that dies loses at most the point in flight: results.json is rewritten after every
point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import progress
from ..status import POINT_FAILED, POINT_OK, POINT_UNSTABLE, READY, SKIPPED
from . import footprint, perf_analyzer as pa
from .results import Point, Results
from .workspace import FLOOR, BenchModel, config_parameters, instances_of


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    instances: tuple[int | None, ...]  # None: as configured (a server bench does not own)
    protocol: str = "grpc"
    measurement: pa.Measurement = pa.Measurement()
    point_timeout: float = 300.0

    def batch_sizes_for(self, model: BenchModel) -> list[int]:
        """The plan's batch sizes the model accepts (1 only, for a model without batching)."""
        limit = model.built.config.max_batch_size
        if limit <= 0:
            return [1]
        return [b for b in self.batch_sizes if b <= limit]

    def points_of(self, model: BenchModel) -> int:
        return len(self.instances) * len(self.batch_sizes_for(model)) * len(self.concurrency)

    def estimate_point_s(self) -> float:
        m = self.measurement
        window = m.interval_ms / 1000 if m.mode == "time_windows" else 1.0
        return window * 4 + 1.5

    def to_dict(self) -> dict:
        return {"concurrency": list(self.concurrency), "batch_sizes": list(self.batch_sizes),
                "instances": list(self.instances), "protocol": self.protocol,
                "measurement": self.measurement.to_dict(), "point_timeout_s": self.point_timeout}


def threads_per_instance(model: BenchModel) -> int | None:
    """Intra-op threads each instance runs with: for a Python-backend model as the runtime
    computes them (the 'threads' parameter, or cores / CPU instances); for a libtorch model its
    INTRA_OP_THREAD_COUNT (None when unset: the backend's default, all cores)."""
    if model.built.backend == "pytorch":
        value = config_parameters(model.built).get("INTRA_OP_THREAD_COUNT")
        return int(value) if value else None
    if model.built.backend != "python" or model.variant == FLOOR:
        return None
    from ..runtime.model import threads_for

    groups = [{"kind": "KIND_CPU" if g.kind == g.KIND_CPU else "", "count": g.count}
              for g in model.built.config.instance_group]
    return threads_for(config_parameters(model.built), groups)


class Sweep:
    def __init__(self, target, tool: pa.PerfAnalyzer, plan: Plan, results: Results,
                 out_dir: Path, results_path: Path, work_dir: Path):
        self.target = target
        self.work_dir = work_dir
        self.tool = tool
        self.plan = plan
        self.results = results
        self.out_dir = out_dir
        self.results_path = results_path
        self._done = 0
        self._total = 0
        self._point_s: list[float] = []

    # -- bookkeeping ---------------------------------------------------------------------------
    def _eta(self) -> str:
        left = self._total - self._done
        per = (sum(self._point_s) / len(self._point_s)) if self._point_s \
            else self.plan.estimate_point_s()
        return progress.duration(left * per)

    def _save(self) -> None:
        self.results.save(self.results_path)

    def _record_load(self, model: BenchModel, instances, state: str, reason: str,
                     facts: dict) -> dict:
        entry = {"model": model.name, "instances": instances, "state": state, "reason": reason,
                 "seconds": 0.0, **facts}
        self.results.loads.append(entry)
        self._save()
        return entry

    # -- the sweep -----------------------------------------------------------------------------
    def run(self, models: list[BenchModel]) -> None:
        """Measure every point; raises KeyboardInterrupt / ServerError after saving results.

        For each instance count all models are loaded, one at a time (so that each load's time
        and memory are its own), then measured in turn at each (batch size, concurrency), so
        that variants being compared are measured minutes apart at most, under the same
        background load; a loaded but idle model costs memory, not CPU. Each model's memory is
        read during its warm-up (the peak) and once idle after every warm-up (footprint.py).
        """
        runnable = []
        for m in models:
            reason = self.target.missing_backend_reason(m.built.backend)
            if reason:
                self._record_load(m, None, SKIPPED, reason, {})
                progress.info(f"{m.name}: {SKIPPED} ({reason.split(':')[0]})")
            else:
                runnable.append(m)
        self._total = sum(self.plan.points_of(m) for m in runnable)
        progress.info(f"sweep: {len(runnable)} model(s), {self._total} points, about"
                      f" {self._eta()}")
        targets = {m.name: self._target_of(m) for m in runnable}
        if self.target.pid is not None:
            footprint.prime(self.target, {m.built.backend for m in runnable})
        for instances in self.plan.instances:
            loaded: list[tuple[BenchModel, int, int | None, dict]] = []
            try:
                for m in runnable:
                    entry = self._load(m, instances)
                    if entry:
                        loaded.append(entry)
                for m, _, _, entry in loaded:
                    with footprint.under_load(self.target, m) as peak:
                        for b in self.plan.batch_sizes_for(m):
                            pa.warm_up(self.tool, targets[m.name], b,
                                       max(self.plan.concurrency), self.work_dir)
                    if peak.pss is not None:
                        entry["peak_pss_bytes"] = peak.pss
                self._memory(loaded)
                for b in self.plan.batch_sizes:
                    for c in self.plan.concurrency:
                        for m, count, threads, _ in loaded:
                            if b in self.plan.batch_sizes_for(m):
                                self._point(m, targets[m.name], count, threads, b, c)
            finally:
                if instances is not None:
                    for m, _, _, _ in loaded:
                        self.target.unload(m)

    def _target_of(self, model: BenchModel) -> pa.Target:
        input_data = None
        if model.built.built_by_gen_repo:
            input_data = pa.write_input_data(model.built.samples(),
                                             model.built.config.max_batch_size > 0,
                                             self.out_dir / "inputs" / f"{model.name}.json")
        return pa.Target(model.name, self.target.url(self.plan.protocol), self.plan.protocol,
                         input_data)

    def _load(self, model: BenchModel, instances: int | None):
        """Load with ``instances``; (model, instance count, threads, its load entry) when
        READY, else None."""
        status, facts = footprint.load(self.target, model, instances, self.plan.protocol)
        count = instances if instances is not None else instances_of(model.built)
        entry = self._record_load(model, count, status.state, status.reason, facts)
        if status.state != READY:
            progress.warn(f"{model.name} with {count} instance(s) is {status.state}:"
                          f" {status.reason}")
            self._total -= len(self.plan.batch_sizes_for(model)) * len(self.plan.concurrency)
            self.target.check_running()
            return None
        threads = threads_per_instance(model)
        progress.info(f"{model.name}: {count} instance(s)"
                      + (f" x {threads} intra-op thread(s)" if threads else "")
                      + f", READY in {facts['seconds']:.1f} s")
        return model, count, threads, entry

    def _memory(self, loaded: list[tuple[BenchModel, int, int | None, dict]]) -> None:
        """Each loaded model's idle memory (footprint.memory) into its load entry; the note when
        there is no GPU to measure."""
        if any("peak_pss_bytes" in e for *_, e in loaded):
            footprint.wait_idle(time.monotonic())  # the last warm-up just ended
        for m, _, _, entry in loaded:
            entry.update(footprint.memory(self.target, m))
        owned = self.target.pid is not None
        if owned and loaded and not any("gpu_bytes" in e for *_, e in loaded) and \
                footprint.NO_GPU not in self.results.notes:
            self.results.notes.append(footprint.NO_GPU)
        self._save()

    def _point(self, model: BenchModel, target: pa.Target, instances: int,
               threads: int | None, batch_size: int, concurrency: int) -> None:
        rel = Path("csv") / model.name / f"i{instances}_b{batch_size}_c{concurrency}.csv"
        point = measure_point(self.target, self.tool, self.plan, model, target, instances,
                              threads, batch_size, concurrency, self.out_dir, rel)
        self.results.points.append(point)
        self._save()
        self._done += 1
        self._point_s.append(point.seconds)
        progress.info(f"[{self._done}/{self._total}] {model.name} x{instances} b{batch_size}"
                      f" c{concurrency}: {summary(point)}; {self._eta()} left")
        if point.status == POINT_FAILED:
            self.target.check_running()


def measure_point(server, tool: pa.PerfAnalyzer, plan: Plan, model: BenchModel,
                  target: pa.Target, instances: int, threads: int | None, batch_size: int,
                  concurrency: int, out_dir: Path, rel: Path, point_class=Point) -> Point:
    """One perf_analyzer run of a loaded model -> its Point (ok, unstable or failed), with the
    batches the server formed meanwhile; the CSV and log go to ``out_dir / rel``."""
    start = time.perf_counter()
    before = server.counts(model.name)
    outcome = pa.run_point(tool, target, batch_size, concurrency, plan.measurement,
                           out_dir / rel, plan.point_timeout)
    after = server.counts(model.name)
    seconds = time.perf_counter() - start
    row = next((r for r in outcome.rows if r.get("concurrency") == concurrency),
               outcome.rows[0] if outcome.rows else None)
    if row is None:
        status, error = POINT_FAILED, _failure(outcome)
    else:
        status = (POINT_OK if outcome.stability <= plan.measurement.stability
                  else POINT_UNSTABLE)
        error = ""
        row.update(_executions(before, after))
    return point_class(model.name, model.base_name, model.variant, instances, threads,
                       batch_size, concurrency, plan.protocol, status,
                       outcome.stability if row else None, dict(row or {}),
                       str(rel) if row else "", outcome.command, round(seconds, 2), error)


def _executions(before, after) -> dict:
    """Server-side counts over the point's whole perf_analyzer run (all its windows): how many
    executions ran, and the average batch the dynamic batcher formed."""
    if not before or not after or after[1] <= before[1]:
        return {}
    inferences, executions = after[0] - before[0], after[1] - before[1]
    return {"server_inferences": inferences, "server_executions": executions,
            "server_avg_batch": round(inferences / executions, 2)}


def _failure(outcome: pa.RunOutcome) -> str:
    lines = [ln.strip() for ln in outcome.log.splitlines() if ln.strip()]
    interesting = [ln for ln in lines if any(w in ln.lower() for w in
                                             ("error", "failed", "unable", "stopped", "invalid"))]
    text = " ".join((interesting or lines)[-3:])[:500]
    return f"perf_analyzer exited {outcome.returncode}: {text or '(no output)'}"


def summary(p: Point) -> str:
    """One point in a few words: throughput and latencies, or why it failed."""
    if p.status == POINT_FAILED:
        return f"FAILED ({p.error[:160]})"
    text = (f"{p.get('throughput', 0):.1f} infer/s, p50 {p.get('p50_us', 0) / 1000:.1f} ms,"
            f" p99 {p.get('p99_us', 0) / 1000:.1f} ms")
    if p.status == POINT_UNSTABLE:
        text += f" (unstable: windows within {p.stability:g}% only)"
    return text
