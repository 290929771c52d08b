"""The search: which candidates get measured, in which order, and when to stop.

Staged (the default), per model:

    1 threads x instances  every (instances, threads) setting of the default variant (libtorch
                           when it is served, else python) at the build's batching: how many
                           threads and instances suit this machine is mostly the machine's
                           question, and a bad setting (two threads each on two cores shared
                           with other work) can slow any variant down tenfold
    2 variants             each other variant at the best setting of stage 1
    3 threads x instances  for the variants within KEEP (85%) of the incumbent after stage 2
                           (the others are dropped), the settings of stage 1 within KEEP of its
                           best
    4 batching             the batcher off at each setting kept in stage 1 (the batcher
                           changes which setting wins), then around the best so far: the
                           batcher off, then the queue delays in
                           ascending order until a longer delay scores lower than the best one
                           (a longer delay only adds waiting), then at the best delay a
                           preferred batch size and the smaller max batch sizes

A candidate is also cut short as soon as it cannot beat the incumbent: its concurrency levels are
measured in ascending order, and once its p99 is over the budget (or, for min-latency, above the
incumbent's) the higher levels are not measured. Grid measures every candidate of the space (for
comparisons). Both stop measuring when the next candidate's estimated cost would go over
--budget-minutes; the measured time of stored candidates counts, so a resumed search arrives at
the same decisions as one that was never interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import progress
from ..errors import BudgetError
from ..spec import DEFAULT_VARIANTS
from .candidate import Batching, Candidate
from .measure import Measured, Measurer
from .objective import (GIB, KEEP, MIN_LATENCY, Objective, Ranked, Score, pareto_front,
                        rank, tradeoff)
from .settings import GRID, Settings
from .space import ModelSpace

# What a candidate costs besides its points (seconds): loading (a python-compile model compiles
# at load), the warm-up run and unloading. Replaced by measured figures once a candidate of the
# same model directory has been measured.
LOAD_S = {"pytorch": 3.0, "python": 7.0}
COMPILE_S = 45.0
OVERHEAD_S = 3.0
STAGES = ("1 threads x instances", "2 variants", "3 threads x instances", "4 batching")


@dataclass
class Outcome:
    """What the search found for one model (all its variants)."""

    base: str
    spaces: list[ModelSpace]
    measured: dict[str, Measured] = field(default_factory=dict)  # key -> result, in order
    not_measured: list[tuple[Candidate, str, str]] = field(default_factory=list)  # c, stage, why
    notes: list[str] = field(default_factory=list)
    ranking: list[Ranked] = field(default_factory=list)
    excluded: list[tuple[Candidate, str]] = field(default_factory=list)  # measured, cannot win
    unbudgeted: Ranked | None = None  # the winner without the memory budget, when it excludes it
    pareto: list[Ranked] = field(default_factory=list)  # throughput x p99 x memory, budget aside

    @property
    def baseline(self) -> Candidate:
        """The build's default config: of the first of the build's default variants that is
        served (libtorch, else python), else of the first variant."""
        by_variant = {s.default.variant: s.default for s in self.spaces}
        for v in DEFAULT_VARIANTS:
            if v in by_variant:
                return by_variant[v]
        return self.spaces[0].default

    @property
    def winner(self) -> Ranked | None:
        return self.ranking[0] if self.ranking else None

    @property
    def runner_up(self) -> Ranked | None:
        return self.ranking[1] if len(self.ranking) > 1 else None

    def space_of(self, model: str) -> ModelSpace:
        return next(s for s in self.spaces if s.model.name == model)

    def points(self):
        return [p for m in self.measured.values() for p in m.points]

    def seconds(self) -> float:
        return sum(m.seconds for m in self.measured.values())


class Search:
    def __init__(self, settings: Settings, measurer: Measurer, budget_s: float):
        self.settings = settings
        self.objective: Objective = settings.objective
        self.measurer = measurer
        self.budget_s = budget_s
        self.spent = 0.0  # measurement seconds of the candidates used so far (stored ones too)

    # -- the whole search ----------------------------------------------------------------------
    def run(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Search each model in turn; KeyboardInterrupt and server errors pass through (what
        was measured is in results.json already)."""
        for o in outcomes:
            progress.info(f"{o.base}: searching {len(o.spaces)} variant(s)"
                          f" ({', '.join(s.default.variant for s in o.spaces)})")
            if self.settings.strategy == GRID:
                for s in o.spaces:
                    for c in s.grid():
                        self.attempt(o, c, "grid")
            else:
                self.staged(o)
            self.decide(o)
            w = o.winner
            if w:
                progress.info(f"{o.base}: winner {w.candidate.describe()}: {w.score.text()}")
        return outcomes

    def staged(self, o: Outcome) -> None:
        base = o.space_of(o.baseline.model)
        for instances, threads in base.settings:
            self.attempt(o, base.candidate(instances, threads, base.default.batching),
                         STAGES[0])
        settings = self.good_settings(o, base)
        setting = settings[0] if settings else (base.default.instances, base.default.threads)
        others = [s for s in o.spaces if s is not base]
        for s in others:
            instances, threads = setting if setting in s.settings else s.settings[0]
            self.attempt(o, s.candidate(instances, threads, s.default.batching), STAGES[1])
        leaders = self.leaders(o, [s.model.name for s in o.spaces], "after stage 2",
                               [s.model.name for s in others])
        for s in others:
            if s.model.name in leaders:
                for instances, threads in settings:
                    if (instances, threads) in s.settings:
                        self.attempt(o, s.candidate(instances, threads, s.default.batching),
                                     STAGES[2])
        best = self.best(o)
        if best is not None:
            self.batcher_off(o, o.space_of(best.candidate.model), settings, best.candidate)
            best = self.best(o)
            self.batching(o, o.space_of(best.candidate.model), best.candidate)

    def batcher_off(self, o: Outcome, s: ModelSpace, settings: list[tuple[int, int]],
                    around: Candidate) -> None:
        """Stage 4 begins with the batcher off at each good setting of stage 1, not only at the
        best one: the batcher changes which setting wins (without it one instance that takes
        the requests in turn can beat two that each wait for a batch), so a setting that lost
        with the build's batching may win without it."""
        off = batcher_off_of(s, around.batching.max_batch_size)
        if off is None or not around.batching.dynamic:
            return
        for instances, threads in settings:
            if (instances, threads) in s.settings:
                self.attempt(o, s.candidate(instances, threads, off), STAGES[3])

    def good_settings(self, o: Outcome, base: ModelSpace) -> list[tuple[int, int]]:
        """The (instances, threads) settings of stage 1 within KEEP of its best, best first:
        the ones worth trying on the other variants. A setting far below the best on the
        default variant (threads that oversubscribe the cores) is a fact of the machine more
        than of the variant; the report says which were left out."""
        measured = []
        for instances, threads in base.settings:
            c = base.candidate(instances, threads, base.default.batching)
            score = self.score_of(o, c)
            if score is not None:
                measured.append((score, (instances, threads)))
        if not measured:
            return []
        measured.sort(key=lambda x: -x[0].goodness)
        best = measured[0][0]
        good = [setting for score, setting in measured if score.relative(best) >= KEEP]
        poor = [f"{i} instance(s) × {t} thread(s) ({score.relative(best):.2f}×)"
                for score, (i, t) in measured if score.relative(best) < KEEP]
        if poor and len(o.spaces) > 1:
            o.notes.append(f"not tried on the other variants: {', '.join(poor)} of the best"
                           f" setting on {base.model.name} in stage 1")
        return good

    def batching(self, o: Outcome, s: ModelSpace, around: Candidate) -> None:
        stage = STAGES[3]
        b0 = around.batching
        options = [b for b in s.batchings if b.max_batch_size]
        if not options:
            return
        off = batcher_off_of(s, b0.max_batch_size)
        if off is not None:
            self.attempt(o, around.with_batching(off), stage)
        plain = sorted({b.max_queue_delay_us for b in options if b.dynamic and not
                        b.preferred_batch_sizes and b.max_batch_size == b0.max_batch_size})
        best_delay = b0.max_queue_delay_us if b0.dynamic else None
        best_score = self.score_of(o, around)
        for d in plain:
            c = around.with_batching(Batching(True, d, (), b0.max_batch_size))
            m = self.attempt(o, c, stage)
            if m is None:
                break  # over the budget: stop here
            score = self.score_of(o, c)
            if score is not None and (best_score is None or score.relative(best_score) > 1):
                best_delay, best_score = d, score
            elif best_delay is not None and d > best_delay:
                longer = [x for x in plain if x > d]
                if longer:
                    o.notes.append(
                        f"queue delays {', '.join(f'{x} µs' for x in longer)} not tried for"
                        f" {around.model} ×{around.instances}, {around.threads} thread(s): a"
                        f" {d} µs delay already scored below the {best_delay} µs one, and a"
                        " longer delay only adds waiting")
                break
        if best_delay is None:
            return
        for b in options:  # preferred batch sizes and smaller max batches at the best delay
            if b.dynamic and b.max_queue_delay_us == best_delay and \
                    (b.preferred_batch_sizes or b.max_batch_size != b0.max_batch_size):
                self.attempt(o, around.with_batching(b), stage)

    # -- one candidate -------------------------------------------------------------------------
    def attempt(self, o: Outcome, c: Candidate, stage: str) -> Measured | None:
        """Measure ``c`` (or reuse what is stored); None when it is not measured, with why."""
        if c.key in o.measured:
            return o.measured[c.key]
        model = self.memory_model(o, c.model)
        if self.objective.memory_budget_gb and model and \
                self.memory_of(o, c) > self.objective.memory_budget_gb * GIB:
            shared = f" + {model[0] / GIB:.2f} GB shared by them" if model[0] else ""
            o.not_measured.append((c, stage, (
                f"{c.instances} instance(s) × {model[1] / GIB:.2f} GB measured per"
                f" instance{shared} would not fit the {self.objective.memory_budget_gb:g} GB"
                " budget")))
            return None
        stored = self.measurer.stored(c)
        if stored is None:
            estimate = self.estimate(o, c)
            left = self.budget_s - self.spent
            if estimate > left:
                o.not_measured.append((c, stage, f"over the time budget (about {estimate:.0f} s"
                                                 f" needed, {max(0, left):.0f} s left)"))
                return None
            progress.info(f"[{o.base} {stage}] {c.describe()} ...")
            incumbent = self.best(o)
            m = self.measurer.measure(
                c, o.base, stage,
                lambda pts: self.objective.stop_reason(pts, incumbent.score if incumbent
                                                       else None))
        else:
            m = stored
        o.measured[c.key] = m
        self.spent += m.seconds
        self.report(o, m)
        return m

    def report(self, o: Outcome, m: Measured) -> None:
        score = self.score_of(o, m.candidate)
        best = self.best(o)
        what = score.text() if score else (m.record.get("reason") or "no point within the"
                                                                    " budget")
        if m.record.get("stopped_early"):
            what += f"; stopped early: {m.record['stopped_early']}"
        inc = f"{best.candidate.describe()}: {best.score.text()}" if best else "none yet"
        left = max(0.0, self.budget_s - self.spent)
        progress.info(f"[{o.base}] {m.candidate.key}: {what}{' (stored)' if m.reused else ''};"
                      f" incumbent {inc}; {progress.duration(left)} of the budget left")

    def estimate(self, o: Outcome, c: Candidate) -> float:
        """Seconds to measure ``c``: from the candidates of its model directory measured so far
        (the slowest load, the median point), else first_estimate."""
        import statistics

        plan = self.settings.plan()
        same = [m for m in o.measured.values() if m.candidate.model == c.model and m.ok
                and m.points]
        if same:
            per_point = [(m.seconds - float(m.record.get("load_seconds") or 0)) / len(m.points)
                         for m in same]
            load = max(float(m.record.get("load_seconds") or 0) for m in same)
            return load + len(plan.concurrency) * statistics.median(per_point)
        return first_estimate(o.space_of(c.model).model, plan)

    # -- figures -------------------------------------------------------------------------------
    def score_of(self, o: Outcome, c: Candidate) -> Score | None:
        m = o.measured.get(c.key)
        return self.objective.score(m.points) if m and m.ok else None

    def memory_model(self, o: Outcome, model: str) -> tuple[float, float] | None:
        """(shared, per instance) bytes of the model's memory over the loads of this model
        directory measured so far: the pages its instances share (a Python-backend model's
        libraries and mapped weights, counted once whatever the count; 0 inside the server) and
        the rest per instance -- each the largest measured (a later load may reuse memory an
        earlier one freed, so the largest is the honest figure). None before any measurement."""
        measured = [m for m in o.measured.values() if m.candidate.model == model
                    and m.record.get("memory_bytes")]
        if not measured:
            return None
        shared = max(float(m.record.get("memory_shared_bytes") or 0) for m in measured)
        per = max((m.record["memory_bytes"] - float(m.record.get("memory_shared_bytes") or 0))
                  / max(1, m.candidate.instances) for m in measured)
        return shared, per

    def memory_of(self, o: Outcome, c: Candidate) -> float | None:
        model = self.memory_model(o, c.model)
        return model[0] + c.instances * model[1] if model else None

    def entries(self, o: Outcome, models: list[str] | None = None,
                memory_budget: bool = True) -> list[Ranked]:
        """The measured candidates (of ``models``) with a score, and (``memory_budget``) that
        fit the memory budget."""
        out = []
        for m in o.measured.values():
            if models is not None and m.candidate.model not in models:
                continue
            score = self.score_of(o, m.candidate)
            if score is not None and (not memory_budget or self.objective.memory_fits(
                    self.memory_of(o, m.candidate))):
                out.append(Ranked(m.candidate, score))
        return out

    def best(self, o: Outcome, models: list[str] | None = None) -> Ranked | None:
        ranked = rank(self.entries(o, models))
        return ranked[0] if ranked else None

    def leaders(self, o: Outcome, models: list[str], when: str,
                candidates: list[str] | None = None) -> list[str]:
        """Those of ``candidates`` (default: all ``models``) whose best is within KEEP of the
        incumbent's among ``models``; the report says why each other one was dropped."""
        best = self.best(o, models)
        if best is None:
            return []
        out = []
        for name in candidates if candidates is not None else models:
            own = self.best(o, [name])
            if own is None:
                o.notes.append(f"{name}: dropped {when}: no measured candidate counts"
                               f" ({self._why_none(o, name)})")
                continue
            ratio = own.score.relative(best.score)
            if ratio >= KEEP:
                out.append(name)
            else:
                o.notes.append(f"{name}: dropped {when}: {own.score.text()} is {ratio:.2f}× the"
                               f" incumbent's ({best.candidate.key}: {best.score.text()}),"
                               f" below the {KEEP:.2f}× a config change could plausibly make up")
        return out

    def _why_none(self, o: Outcome, name: str) -> str:
        records = [m.record for m in o.measured.values() if m.candidate.model == name]
        reasons = [r.get("reason") for r in records if r.get("reason")]
        if reasons:
            return reasons[0][:300]
        if self.objective.p99_budget_ms:
            return f"no point with p99 within {self.objective.p99_budget_ms:g} ms"
        if not records:
            return "not measured"
        return "over the memory budget"

    # -- the choice ----------------------------------------------------------------------------
    def decide(self, o: Outcome) -> None:
        """The ranking within the budgets; the candidates the memory budget excludes, and the
        winner without it when the budget excludes that one; the Pareto front."""
        o.ranking = rank(self.entries(o))
        o.excluded = []
        for m in o.measured.values():
            score = self.score_of(o, m.candidate)
            memory = self.memory_of(o, m.candidate)
            if score is not None and not self.objective.memory_fits(memory):
                o.excluded.append((m.candidate, f"needs {memory / GIB:.2f} GB, over the"
                                                f" {self.objective.memory_budget_gb:g} GB"
                                                " memory budget"))
        everything = self.entries(o, memory_budget=False)
        free = rank(everything)
        excluded = {c.key for c, _ in o.excluded}
        o.unbudgeted = free[0] if free and free[0].candidate.key in excluded else None
        o.pareto = pareto_front(everything, lambda e: tradeoff(e.score, self.memory_of(
            o, e.candidate)))


def first_estimate(model, plan) -> float:
    """Seconds to measure a candidate of ``model`` before any has been measured."""
    load = LOAD_S.get(model.backend, LOAD_S["python"])
    if "compile_mode" in model.config.parameters:
        load += COMPILE_S
    return load + OVERHEAD_S + len(plan.concurrency) * plan.estimate_point_s()


def no_winner_error(o: Outcome, objective: Objective, load: str) -> BudgetError:
    """Why a model has no winner: the budgets no candidate met, with the best figures found."""
    points = [p for p in o.points() if p.throughput]
    if not points:
        reasons = sorted({m.record.get("reason", "") for m in o.measured.values()} - {""})
        what = "no candidate was measured" if not o.measured else \
            f"no candidate answered ({'; '.join(reasons)[:400] or 'every point failed'})"
        return BudgetError(f"{o.base}: {what}.", "Raise --budget-minutes (the plan printed at"
                           " the start says how long the first stage takes), and check the"
                           " server log in the results directory.")
    fastest = min(points, key=lambda p: p.get("p99_us") or float("inf"))
    best_p99 = (fastest.get("p99_us") or 0) / 1000
    if objective.p99_budget_ms and best_p99 > objective.p99_budget_ms:
        return BudgetError(
            f"{o.base}: no candidate kept its p99 within {objective.p99_budget_ms:g} ms at"
            f" {load}: the best p99 measured was {best_p99:.1f} ms ({fastest.candidate},"
            f" concurrency {fastest.concurrency}).",
            f"Raise --p99-budget-ms to {best_p99 * 1.2:.0f} or more, or lower --concurrency"
            " (p99 grows with the requests in flight); the report lists every candidate's"
            " p99.")
    if objective.memory_budget_gb:
        memory = [m.record["memory_bytes"] for m in o.measured.values()
                  if m.record.get("memory_bytes")]
        least = min(memory) / GIB if memory else 0.0
        return BudgetError(
            f"{o.base}: no candidate fits the {objective.memory_budget_gb:g} GB memory budget:"
            f" the smallest measured needs {least:.2f} GB.",
            f"Raise --memory-budget-gb to {least * 1.2:.2f} or more (fewer instances need"
            " less).")
    kind = "p99" if objective.kind == MIN_LATENCY else "throughput"
    return BudgetError(f"{o.base}: no candidate has a complete {kind} figure.",
                       "Rerun with longer windows (--measurement-interval) on a quieter"
                       " machine; the report lists what was measured.")


def batcher_off_of(s: ModelSpace, max_batch_size: int) -> Batching | None:
    """The space's batching option with the batcher off at ``max_batch_size`` (at most one)."""
    return next((b for b in s.batchings if b.max_batch_size and not b.dynamic
                 and b.max_batch_size == max_batch_size), None)


def stage_bounds(o: Outcome) -> list[tuple[str, int]]:
    """The most candidates each stage of the staged search can measure for one model."""
    base = o.space_of(o.baseline.model)
    others = [s for s in o.spaces if s is not base]
    batching = 0
    for s in o.spaces:
        built = s.default.max_batch_size
        options = [b for b in s.batchings if b.max_batch_size]
        off = int(batcher_off_of(s, built) is not None)
        plain = {b.max_queue_delay_us for b in options if b.dynamic and not
                 b.preferred_batch_sizes and b.max_batch_size == built}
        extra = max((sum(1 for b in options if b.dynamic and b.max_queue_delay_us == d and
                         (b.preferred_batch_sizes or b.max_batch_size != built))
                     for d in plain), default=0)
        # the batcher off at each setting (stage 1's kept ones), the delays, the extras; the
        # build's own batching is measured already
        batching = max(batching, max(0, off * len(s.settings) + len(plain) + extra - 1))
    return [(STAGES[0], len(base.settings)), (STAGES[1], len(others)),
            (STAGES[2], sum(len(s.settings) - 1 for s in others)), (STAGES[3], batching)]


def plan_lines(outcomes: list[Outcome], settings: Settings, budget_s: float) -> list[str]:
    """What will be searched, stage by stage, with candidate counts and estimated times."""
    plan = settings.plan()
    lines = [f"objective: {settings.objective.describe()}, at {settings.load_text()};"
             f" strategy {settings.strategy}; budget {progress.duration(budget_s)}"]
    total_s = 0.0
    for o in outcomes:
        per = max(first_estimate(s.model, plan) for s in o.spaces)
        grid = sum(s.size for s in o.spaces)
        grid_s = sum(s.size * first_estimate(s.model, plan) for s in o.spaces)
        lines.append(f"{o.base}: {len(o.spaces)} variant(s)"
                     f" ({', '.join(s.default.variant for s in o.spaces)}), space"
                     f" {' + '.join(f'{len(s.settings)}×{len(s.batchings)}' for s in o.spaces)}"
                     f" (instances/threads × batching) = {grid} candidates, ~"
                     f"{progress.duration(grid_s)} as a full grid")
        if settings.strategy == GRID:
            total_s += grid_s
            continue
        for stage, count in stage_bounds(o):
            lines.append(f"  stage {stage}: up to {count} candidate(s), ~"
                         f"{progress.duration(count * per)}")
            total_s += count * per
    lines.append(f"estimated: up to {progress.duration(total_s)} of measurement"
                 + (f"; the budget of {progress.duration(budget_s)} will cut it short"
                    if total_s > budget_s else ""))
    return lines
