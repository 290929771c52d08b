"""Measure one candidate on bench's server: its config written into the private copy, loaded
alone, the server's resident memory before and after, warmed up, perf_analyzer at each
concurrency level (ascending, bench's driver and stability rules), unloaded.

One candidate at a time, so two candidates never compete for the cores. What is already in
results.json is reused, never measured again: a candidate whose record is complete costs
nothing, and one cut short (Ctrl-C) is loaded again only for the points it lacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import progress
from ..bench import footprint, perf_analyzer as pa
from ..bench.sweep import Plan, measure_point, summary
from ..bench.workspace import BenchModel
from ..repository.config import write_config
from ..serve import processes
from ..status import READY
from .candidate import Candidate, configure
from ..status import CANDIDATE_FAILED, CANDIDATE_MEASURED, POINT_FAILED
from .results import TunePoint, TuneResults

StopRule = Callable[[list[TunePoint]], "str | None"]


@dataclass
class Measured:
    candidate: Candidate
    record: dict
    points: list[TunePoint] = field(default_factory=list)
    reused: bool = False  # everything came from results.json

    @property
    def seconds(self) -> float:
        return float(self.record.get("seconds") or 0.0)

    @property
    def ok(self) -> bool:
        return self.record.get("state") == CANDIDATE_MEASURED


class Measurer:
    def __init__(self, server, tool: pa.PerfAnalyzer, plan: Plan, results: TuneResults,
                 out_dir: Path, results_path: Path, work_dir: Path,
                 copies: dict[str, BenchModel], run: int):
        self.server = server
        self.tool = tool
        self.plan = plan
        self.results = results
        self.out_dir = out_dir
        self.results_path = results_path
        self.work_dir = work_dir
        self.copies = copies
        self.run = run
        self.batch_size = plan.batch_sizes[0]
        self.reused_points = 0
        self.measured_points = 0
        self._inputs: dict[str, Path | None] = {}

    def save(self) -> None:
        self.results.save(self.results_path)

    def prime(self, backends: set[str]) -> None:
        """The backends that run inside the server get their libraries loaded before any
        candidate is measured (footprint.prime)."""
        footprint.prime(self.server, backends)

    def stored(self, c: Candidate) -> Measured | None:
        """The candidate as results.json has it, when its measurement is complete."""
        record = self.results.record(c.key)
        if record and record.get("complete"):
            points = self.results.points_of(c.key)
            self.reused_points += len(points)
            return Measured(c, record, points, reused=True)
        return None

    def measure(self, c: Candidate, base: str, stage: str,
                stop: StopRule | None = None) -> Measured:
        done = self.stored(c)
        if done:
            return done
        model = self.copies[c.model]
        record = self.results.record(c.key)
        if record is None:
            record = {"key": c.key, "base": base, **c.to_dict(), "stage": stage,
                      "run": self.run, "complete": False, "seconds": 0.0}
            self.results.candidates.append(record)
        start = time.perf_counter()
        previous_s = float(record.get("seconds") or 0.0)  # a run cut short spent this already
        write_config(model.built.path, configure(model.built, c),
                     f"Written by gen-repo tune for candidate {c.key}.")
        model.built.reread()
        if not self.server.wait_for_stubs(0):
            progress.warn("Python-backend processes of an unloaded model are still running:"
                          f" the memory measured for {c.key} may be low")
        before = self.server.resident_bytes()
        server_before = processes.resident_bytes(self.server.pid, with_descendants=False)
        status = self.server.load(model, None)
        record["load_seconds"] = round(time.perf_counter() - start, 2)
        points: list[TunePoint] = []
        try:
            if status.state != READY:
                record.update(state=CANDIDATE_FAILED, reason=f"{status.state}: {status.reason}",
                              complete=True)
                self.server.check_running()
                return Measured(c, record, points)
            loaded = self.server.resident_bytes()
            target = self._target(model)
            with footprint.under_load(self.server, model) as peak:
                pa.warm_up(self.tool, target, self.batch_size, max(self.plan.concurrency),
                           self.work_dir)
                record.update(state=CANDIDATE_MEASURED, reason="")
                for conc in sorted(self.plan.concurrency):
                    point = self.results.point_at(c.key, self.batch_size, conc)
                    if point is not None:
                        self.reused_points += 1
                    else:
                        point = self._point(model, target, c, conc)
                    points.append(point)
                    if point.status == POINT_FAILED:
                        self.server.check_running()
                    why = stop(points) if stop else None
                    if why:
                        record["stopped_early"] = why
                        break
            after = self.server.resident_bytes()
            if before is not None and loaded is not None and after is not None:
                record.update(rss_before_bytes=before, rss_after_bytes=max(loaded, after),
                              memory_bytes=max(0, max(loaded, after) - before))
            server_after = processes.resident_bytes(self.server.pid, with_descendants=False)
            if peak.private is not None and server_before is not None and server_after:
                # a Python-backend candidate: the pages its stubs share counted once
                record.update(memory_bytes=max(0, server_after - server_before) + peak.private
                              + peak.shared, memory_shared_bytes=peak.shared)
            if all(p.status == POINT_FAILED for p in points):
                record.update(state=CANDIDATE_FAILED, reason=points[0].error if points else "no point")
            record["complete"] = True
            return Measured(c, record, points)
        finally:
            self.server.unload(model)
            record["seconds"] = round(previous_s + time.perf_counter() - start, 2)
            self.save()

    def _target(self, model: BenchModel) -> pa.Target:
        if model.name not in self._inputs:
            built = model.built
            self._inputs[model.name] = pa.write_input_data(
                built.samples(), built.config.max_batch_size > 0,
                self.out_dir / "inputs" / f"{model.name}.json") if built.built_by_gen_repo \
                else None
        return pa.Target(model.name, self.server.url(self.plan.protocol), self.plan.protocol,
                         self._inputs[model.name])

    def _point(self, model: BenchModel, target: pa.Target, c: Candidate,
               concurrency: int) -> TunePoint:
        rel = Path("csv") / c.key.replace("/", "__") / f"b{self.batch_size}_c{concurrency}.csv"
        point = measure_point(self.server, self.tool, self.plan, model, target, c.instances,
                              c.threads, self.batch_size, concurrency, self.out_dir, rel,
                              point_class=TunePoint)
        point.candidate, point.run = c.key, self.run
        self.results.points.append(point)
        self.measured_points += 1
        self.save()
        progress.info(f"  {c.key} c{concurrency}: {summary(point)}")
        return point
