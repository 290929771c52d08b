"""Each model's decision in figures and in words: what results.json, the report and the
production model's gen_repo.json say, computed once here.

    resnet18: python-compile ×1, 2 threads, batching delay 2 ms — 1.31× the throughput of the
    default libtorch config at p99 48 ms

With a memory budget the sentence goes on with how many instances of the winner's model fit in
it and, when the budget excludes the config that would win without it, which config that is and
why.
"""

from __future__ import annotations

from .candidate import Candidate
from .objective import GIB, MIN_LATENCY, Objective, Score
from .search import Outcome, Search


def figures(search: Search, o: Outcome, c: Candidate) -> dict:
    """A candidate's key, description and figures under the objective."""
    score = search.score_of(o, c)
    m = o.measured.get(c.key)
    built = o.space_of(c.model).model.config.max_batch_size
    out = {"key": c.key, "candidate": c.to_dict(), "describe": c.describe(built),
           "measured": m is not None and m.ok, "memory_bytes": search.memory_of(o, c)}
    if score is not None:
        p = score.point
        out.update(throughput=round(score.throughput, 2), p50_ms=_ms(p.get("p50_us")),
                   p99_ms=round(score.p99_ms, 2), concurrency=p.concurrency,
                   status=p.status)
    elif m is not None:
        out["reason"] = m.record.get("reason") or "no point counts under the objective"
    return out


def ratio(objective: Objective, winner: Score | None, default: Score | None) -> float | None:
    """The winner against the default config: throughput ratio, or for min-latency how many
    times lower its p99 is."""
    if winner is None or default is None:
        return None
    return round(winner.relative(default), 3)


def sentence(objective: Objective, base: str, d: dict) -> str:
    """The decision in one sentence, from a decision entry."""
    w, default = d.get("winner"), d.get("default") or {}
    if not w:
        why = (d.get("error") or "nothing was measured").removeprefix(f"{base}: ")
        return f"{base}: no winner — {why}"
    variant = default.get("candidate", {}).get("variant", "default")
    head = f"{base}: {w['describe']}"
    if d.get("winner_is_default"):
        return (f"{head} — the default {variant} config stays the best"
                f" ({w['throughput']:.1f} infer/s at p99 {w['p99_ms']:.1f} ms)"
                + _memory_budget(objective, d))
    r = d.get("ratio")
    if objective.kind == MIN_LATENCY:
        compare = (f"p99 {w['p99_ms']:.1f} ms at concurrency {w['concurrency']}, "
                   + (f"{1 / r:.2f}× the default {variant} config's {default['p99_ms']:.1f} ms"
                      if r else "the default config has no figure"))
    else:
        compare = (f"{r:.2f}× the throughput of the default {variant} config" if r else
                   f"{w['throughput']:.1f} infer/s (the default {variant} config has no"
                   " figure under the objective)") + f" at p99 {_figure_ms(w['p99_ms'])} ms"
    if objective.p99_budget_ms:
        compare += f" (budget {objective.p99_budget_ms:g} ms)"
    return f"{head} — {compare}" + _memory_budget(objective, d)


def _memory_budget(objective: Objective, d: dict) -> str:
    """What the memory budget did: how many instances of the winner's model fit in it, and the
    config it excluded that would have won without it."""
    text = ""
    fit = d.get("fit")
    if fit:
        n, k = fit["instances"], d["winner"]["candidate"]["instances"]
        shared = (f", and {fit['shared_bytes'] / GIB:.2f} GB they share once"
                  if fit.get("shared_bytes") else "")
        text += (f". {_count(n, 'instance')} of {fit['model']} {_fit(n)} in"
                 f" {objective.memory_budget_gb:g} GB ({fit['per_instance_bytes'] / GIB:.2f} GB"
                 f" each as measured{shared})")
        if k > 1:
            models = fit.get("models", n // k)
            text += f"; the winner runs {k}, so {_count(models, 'such model')} {_fit(models)}"
    free = d.get("without_memory_budget")
    if free:
        text += (f". Without the {objective.memory_budget_gb:g} GB memory budget it would have"
                 f" picked {free['describe']} ({_figures(free)}), which {free['excluded']}")
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _fit(n: int) -> str:
    return "fits" if n == 1 else "fit"


def _figures(f: dict) -> str:
    return f"{f['throughput']:.1f} infer/s at p99 {_figure_ms(f['p99_ms'])} ms"


def entry(search: Search, o: Outcome, error: str | None = None) -> dict:
    """The decision entry of one model, as results.json keeps it."""
    objective = search.objective
    w, r2 = o.winner, o.runner_up
    default = o.baseline
    default_score = search.score_of(o, default)
    d = {"base": o.base, "objective": objective.to_dict(),
         "variants": [s.default.variant for s in o.spaces],
         "space": {s.model.name: {"settings": [list(x) for x in s.settings],
                                  "batchings": len(s.batchings), "candidates": s.size}
                   for s in o.spaces},
         "measured": len(o.measured), "measured_seconds": round(o.seconds(), 1),
         "not_measured": [{"key": c.key, "stage": stage, "reason": why}
                          for c, stage, why in o.not_measured],
         "excluded": [{"key": c.key, "reason": why} for c, why in o.excluded],
         "notes": list(o.notes),
         "default": figures(search, o, default),
         "winner": figures(search, o, w.candidate) if w else None,
         "runner_up": figures(search, o, r2.candidate) if r2 else None,
         "winner_is_default": bool(w and w.candidate == default),
         "ranking": [e.candidate.key for e in o.ranking],
         "pareto": [e.candidate.key for e in o.pareto],
         "ratio": ratio(objective, w.score if w else None, default_score),
         "error": error}
    shared, per_instance = (search.memory_model(o, w.candidate.model) if w else None) \
        or (0.0, None)
    fits = objective.instances_that_fit(per_instance, shared)
    if fits is not None:
        d["fit"] = {"model": w.candidate.model, "instances": fits,
                    "per_instance_bytes": per_instance}
        if shared:
            d["fit"]["shared_bytes"] = shared
        k = w.candidate.instances
        if k > 1:  # models of this config, each with its own instances and shared pages
            d["fit"]["models"] = objective.instances_that_fit(shared + k * per_instance)
    if o.unbudgeted:
        c = o.unbudgeted.candidate
        d["without_memory_budget"] = dict(figures(search, o, c),
                                          excluded=dict(o.excluded)[c])
    d["sentence"] = sentence(objective, o.base, d)
    return d


def _figure_ms(ms: float) -> str:
    """48 (ms), 7.9, 1.17: about three significant digits."""
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}" if ms >= 1 else f"{ms:.2f}"


def _ms(us) -> float | None:
    return round(us / 1000, 2) if isinstance(us, (int, float)) else None
