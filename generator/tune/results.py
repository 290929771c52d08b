"""tune's results.json: bench's results (machine, versions, server, every perf_analyzer point)
plus what the search needs to go on where it stopped and to explain its choice.

    {"schema": "gen-repo-tune/1", ...bench's keys (settings, models, loads, points...),
     "search":     {objective, concurrency, batch_size, protocol, measurement, space, strategy,
                    budget_minutes, models: {model dir: SHA-256 of its artifact}},
     "candidates": [{key, base, model, variant, instances, threads, dynamic_batching,
                     max_queue_delay_us, preferred_batch_sizes, max_batch_size, stage, state
                     measured|failed, reason, complete, stopped_early, memory_bytes,
                     memory_shared_bytes (python: what its stubs share, counted once),
                     rss_before_bytes, rss_after_bytes, load_seconds, seconds, run}],
     "decisions":  [{base, objective, winner, runner_up, default, ratio, pareto (the keys on
                    the front of throughput, p99 and memory), fit (with a memory budget: how many
                    instances of the winner's model fit), without_memory_budget (the winner
                    without it, when the budget excludes that one), sentence, ...}],
     "runs":       [{run, started, finished, reused_points, measured_points, stopped_by}]}

Every point carries its candidate's key and the run that measured it, so ``--resume`` reuses
what is stored and measures only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..bench.results import Point, Results

SCHEMA = "gen-repo-tune/1"


@dataclass
class TunePoint(Point):
    candidate: str = ""  # Candidate.key
    run: int = 1  # which tune run measured it (a resumed run is run 2, ...)


@dataclass
class TuneResults(Results):
    schema: ClassVar[str] = SCHEMA
    point_class: ClassVar[type] = TunePoint
    producer: ClassVar[str] = "gen-repo tune"

    search: dict = field(default_factory=dict)
    candidates: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "search": self.search, "candidates": self.candidates,
                "decisions": self.decisions, "runs": self.runs}

    # -- queries -------------------------------------------------------------------------------
    def record(self, key: str) -> dict | None:
        return next((c for c in self.candidates if c["key"] == key), None)

    def points_of(self, key: str) -> list[TunePoint]:
        return sorted((p for p in self.points if p.candidate == key),
                      key=lambda p: (p.batch_size, p.concurrency))

    def point_at(self, key: str, batch_size: int, concurrency: int) -> TunePoint | None:
        return next((p for p in self.points if p.candidate == key and p.batch_size == batch_size
                     and p.concurrency == concurrency), None)

    def decision(self, base: str) -> dict | None:
        return next((d for d in self.decisions if d["base"] == base), None)

    def set_decision(self, entry: dict) -> None:
        self.decisions = [d for d in self.decisions if d["base"] != entry["base"]] + [entry]
