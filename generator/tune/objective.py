"""What "best" means: the objective, the budgets, the ranking, the tie rule, the Pareto front
(throughput, p99 and memory).

    max-throughput   the highest throughput over the measured concurrency levels (default)
    min-latency      the lowest p99, taken at its worst over the measured concurrency levels
    --p99-budget-ms  only points whose p99 stays inside count: with max-throughput, "the highest
                     throughput whose p99 stays inside the budget"
    --memory-budget-gb  instances x the model's memory per instance (measured: the server's
                     resident memory before and after loading) must fit

Scores compare as "goodness" (throughput, or 1 / p99), so one ratio rule serves both objectives:
a candidate within ``TIE`` of the best is a tie and the simpler config wins (fewer instances, no
batching delay); the staged search keeps going with a candidate only while it is within ``KEEP``
of the incumbent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..bench.results import Point
from ..status import POINT_FAILED
from .candidate import Candidate

MAX_THROUGHPUT, MIN_LATENCY = "max-throughput", "min-latency"
TIE = 0.03  # within 3% of the best is a tie (the simpler config wins)
KEEP = 0.85  # the staged search drops what reaches less than 85% of the incumbent
GIB = 2**30


def default_concurrency(kind: str, p99_budget_ms: float | None) -> tuple[int, ...]:
    """The load tune optimises for when --concurrency is not given."""
    if kind == MIN_LATENCY:
        return (1,)
    return (1, 4, 8) if p99_budget_ms else (8,)


@dataclass(frozen=True)
class Score:
    """A candidate's figure under the objective, and the point it comes from."""

    goodness: float  # higher is better: throughput (infer/s) or 1 / p99 (1/ms)
    point: Point
    kind: str

    @property
    def throughput(self) -> float:
        return self.point.throughput or 0.0

    @property
    def p99_ms(self) -> float:
        return (self.point.get("p99_us") or 0) / 1000

    def relative(self, other: "Score") -> float:
        """self as a fraction of ``other`` (1.0: as good; above 1: better)."""
        return self.goodness / other.goodness if other.goodness else float("inf")

    def text(self) -> str:
        p = self.point
        return (f"{self.throughput:.1f} infer/s at p99 {self.p99_ms:.1f} ms (concurrency"
                f" {p.concurrency})")


@dataclass(frozen=True)
class Objective:
    kind: str = MAX_THROUGHPUT
    p99_budget_ms: float | None = None
    memory_budget_gb: float | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "p99_budget_ms": self.p99_budget_ms,
                "memory_budget_gb": self.memory_budget_gb}

    @classmethod
    def from_dict(cls, d: dict) -> "Objective":
        return cls(d.get("kind", MAX_THROUGHPUT), d.get("p99_budget_ms"),
                   d.get("memory_budget_gb"))

    def describe(self) -> str:
        text = {MAX_THROUGHPUT: "the highest throughput",
                MIN_LATENCY: "the lowest p99 latency"}[self.kind]
        if self.p99_budget_ms:
            text += f" with p99 within {self.p99_budget_ms:g} ms"
        if self.memory_budget_gb:
            text += f", memory within {self.memory_budget_gb:g} GB"
        return text

    # -- one candidate -------------------------------------------------------------------------
    def within_budget(self, p: Point) -> bool:
        return not self.p99_budget_ms or (p.get("p99_us") or 0) / 1000 <= self.p99_budget_ms

    def score(self, points: list[Point]) -> Score | None:
        """The candidate's score from its measured points; None when none counts."""
        ok = [p for p in points if p.status != POINT_FAILED and p.throughput]
        if not ok:
            return None
        if self.kind == MIN_LATENCY:
            if any(p.status == POINT_FAILED for p in points):
                return None
            worst = max(ok, key=lambda p: p.get("p99_us") or 0)
            if not self.within_budget(worst) or not worst.get("p99_us"):
                return None
            return Score(1000.0 / worst.get("p99_us"), worst, self.kind)
        inside = [p for p in ok if self.within_budget(p)]
        if not inside:
            return None
        best = max(inside, key=lambda p: p.throughput)
        return Score(best.throughput, best, self.kind)

    def stop_reason(self, points: list[Point], incumbent: Score | None) -> str | None:
        """Why the higher concurrency levels of a candidate need not be measured (they are
        measured in ascending order and p99 grows with the requests in flight), or None."""
        last = points[-1] if points else None
        if last is None or last.status == POINT_FAILED:
            return None
        p99 = (last.get("p99_us") or 0) / 1000
        if self.p99_budget_ms and p99 > self.p99_budget_ms:
            return (f"p99 {p99:.1f} ms at concurrency {last.concurrency} is over the"
                    f" {self.p99_budget_ms:g} ms budget already")
        if self.kind == MIN_LATENCY and incumbent is not None and p99 > incumbent.p99_ms:
            return (f"p99 {p99:.1f} ms at concurrency {last.concurrency} is above the"
                    f" incumbent's {incumbent.p99_ms:.1f} ms already")
        return None

    def memory_fits(self, memory_bytes: float | None) -> bool:
        return not self.memory_budget_gb or memory_bytes is None or \
            memory_bytes <= self.memory_budget_gb * GIB

    def instances_that_fit(self, per_instance_bytes: float | None,
                           shared_bytes: float = 0.0) -> int | None:
        """How many instances of ``per_instance_bytes`` each, besides ``shared_bytes`` they
        share, the memory budget holds (None without a budget or a figure)."""
        if not self.memory_budget_gb or not per_instance_bytes:
            return None
        return max(0, math.floor((self.memory_budget_gb * GIB - shared_bytes)
                                 / per_instance_bytes))


# ---------------------------------------------------------------------------------------------
# many candidates


@dataclass(frozen=True)
class Ranked:
    candidate: Candidate
    score: Score


def rank(entries: list[Ranked]) -> list[Ranked]:
    """Best first. Among the candidates within TIE of the best, the simplest comes first (a
    tie goes to the simpler config); the rest follow by score."""
    ordered = sorted(entries, key=lambda e: (-e.score.goodness, e.candidate.complexity(),
                                             e.candidate.key))
    if not ordered:
        return []
    best = ordered[0].score
    tied = [e for e in ordered if e.score.relative(best) >= 1 - TIE]
    first = min(tied, key=lambda e: (e.candidate.complexity(), -e.score.goodness,
                                     e.candidate.key))
    return [first] + [e for e in ordered if e is not first]


T = TypeVar("T")


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Figures ``a`` at least as good as ``b`` on every axis and better on one (higher is
    better on each)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and a != b


def pareto_front(items: list[T], figures: Callable[[T], tuple[float, ...]]) -> list[T]:
    """The items no other item dominates (``figures``: an item's figures, higher is better on
    each), in their order."""
    figs = [figures(i) for i in items]
    return [item for item, f in zip(items, figs, strict=True)
            if not any(dominates(g, f) for g in figs)]


def tradeoff(score: Score, memory_bytes: float | None) -> tuple[float, float, float]:
    """A config's figures on the Pareto front's three axes, higher is better on each:
    throughput, p99 (negated) and memory (negated; unknown counts as the most)."""
    return (score.throughput, -score.p99_ms,
            -memory_bytes if memory_bytes is not None else -math.inf)
