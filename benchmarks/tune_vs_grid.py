"""gen-repo tune against an exhaustive grid over the same space, measured in the same run, for
resnet18 and the tiny 2-layer MLP.

    .venv/bin/python benchmarks/tune_vs_grid.py                     # both models, ~20 min here
    .venv/bin/python benchmarks/tune_vs_grid.py --models tiny_mlp --out tvg --keep-repo DIR

For each model: ``gen-repo build`` (variants libtorch, python, python-aoti; libtorch is served
for real when GEN_REPO_BACKEND_DIRECTORY names a PyTorch backend), then on the same space --
those variants x every (instances, threads) setting of the cores x batching off / 100 µs (the
build's) / 2 ms at max batch 8 -- and the same load (concurrency 8, batch-1 requests, gRPC,
1 s windows):

    grid    every candidate measured (tune's engine with --strategy grid; nothing written)
    tune    the staged search (the default), writing and verifying the production repository

and prints (and writes to OUT/tune_vs_grid.md, OUT/tune_vs_grid.json):

    found / grid best       the grid's own figure for tune's winner against the grid's best
                            (goal >= 0.95: both measured in the same sweep, so no drift between
                            the two phases counts); also tune's own figure for its winner
                            against the grid's best
    time                    tune's measurement time / the grid's (goal <= 0.35)
    vs default              tune's winner / the default build config (tune's own figures;
                            goal >= 1.2 where the grid's best / the grid's default shows that
                            much is available)

How long: 15 min on the 2-core development machine (builds 1-2 min; the tiny MLP: grid 5.5 min,
tune 1 min; resnet18: grid 5.5 min, tune 2 min; plus loading and verifying the winners): a
candidate costs 7-30 s (loading, a warm-up, one point of 1 s windows, unloading). Other work on
the machine makes every figure noisy (±10-20 % between runs): read the ratios as one run's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from generator import progress  # noqa: E402
from generator.repository.layout import list_models  # noqa: E402
from generator.cli import main as gen_repo  # noqa: E402
from generator.tune.objective import Objective  # noqa: E402
from generator.status import CANDIDATE_MEASURED  # noqa: E402
from generator.tune.runner import TuneOptions, run_tune  # noqa: E402
from generator.tune.settings import GRID, STAGED, Settings  # noqa: E402
from generator.tune.space import OFF, Space  # noqa: E402

VARIANTS = "libtorch,python,python-aoti"
MODELS = {  # name -> gen-repo build arguments
    "tiny_mlp": [f"{HERE.parent / 'tests' / 'fixtures' / 'models.py'}:tiny_mlp", "--input",
                 "x:float32:16", "--name", "tiny_mlp"],
    "resnet18": [],
}
SPACE = Space(delays_us=(OFF, 100, 2000), max_batch_sizes=(8,), preferred=False)
GOALS = {"found": 0.95, "time": 0.35, "vs_default": 1.2}


def _best(results, base: str) -> dict | None:
    return (results.decision(base) or {}).get("winner")


def _figure(results, key: str) -> float | None:
    """The throughput a run measured for one candidate (under the objective)."""
    record = results.record(key)
    if not record or record.get("state") != CANDIDATE_MEASURED:
        return None
    score = Settings.from_dict(results.search).objective.score(results.points_of(key))
    return score.throughput if score else None


def _seconds(results, base: str) -> float:
    return sum(c.get("seconds", 0.0) for c in results.candidates if c.get("base") == base)


def compare(name: str, tune, grid) -> dict:
    t, g = _best(tune, name), _best(grid, name)
    t_default = (tune.decision(name) or {}).get("default", {})
    g_default = (grid.decision(name) or {}).get("default", {})
    row = {"model": name, "tune_winner": t and t["key"], "grid_best": g and g["key"],
           "tune_throughput": t and t.get("throughput"),
           "grid_best_throughput": g and g.get("throughput"),
           "grid_figure_of_tune_winner": _figure(grid, t["key"]) if t else None,
           "tune_seconds": round(_seconds(tune, name), 1),
           "grid_seconds": round(_seconds(grid, name), 1),
           "tune_candidates": sum(c.get("base") == name for c in tune.candidates),
           "grid_candidates": sum(c.get("base") == name for c in grid.candidates),
           "tune_default_throughput": t_default.get("throughput"),
           "grid_default_throughput": g_default.get("throughput")}
    ratio = lambda a, b: round(a / b, 3) if a and b else None  # noqa: E731
    row["found"] = ratio(row["tune_throughput"], row["grid_best_throughput"])
    row["found_same_run"] = ratio(row["grid_figure_of_tune_winner"],
                                  row["grid_best_throughput"])
    row["time"] = ratio(row["tune_seconds"], row["grid_seconds"])
    row["vs_default"] = ratio(row["tune_throughput"], row["tune_default_throughput"])
    row["available"] = ratio(row["grid_best_throughput"], row["grid_default_throughput"])
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | tune's winner | grid's best | tune's winner / grid's best, in the grid"
             " (≥ 0.95) | time, tune / grid (≤ 0.35) | tune / default (≥ 1.2 where available) |"
             " grid best / default |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        need = r["available"] is not None and r["available"] >= GOALS["vs_default"]
        lines.append(
            f"| {r['model']} | `{r['tune_winner']}` {r['tune_throughput']} infer/s |"
            f" `{r['grid_best']}` {r['grid_best_throughput']} infer/s |"
            f" **{r['found_same_run']}** (as tune measured it: {r['found']}) |"
            f" **{r['time']}** ({r['tune_seconds']:.0f} s, {r['tune_candidates']} candidates /"
            f" {r['grid_seconds']:.0f} s, {r['grid_candidates']}) |"
            f" **{r['vs_default']}**{'' if need else ' (goal not applicable)'} |"
            f" {r['available']} |")
    return "\n".join(lines)


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repo_root = Path(args.keep_repo) if args.keep_repo else Path(tempfile.mkdtemp(
        prefix="gen-repo-tvg-"))
    settings = Settings(Objective(), (8,), 1, SPACE)
    rows = []
    try:
        for name in args.models.split(","):
            repo = repo_root / name
            if not (repo / f"{name}_python" / "config.pbtxt").is_file():
                code = gen_repo(["build", *MODELS[name], "--variants", VARIANTS, "--out",
                                 str(repo), "--force"])
                if code != 0:
                    print(f"building {name} failed (exit {code})", file=sys.stderr)
                    return code
            models = list_models(repo)
            tune = run_tune(TuneOptions(replace(settings, strategy=STAGED),
                                        out=out / name / "prod", results_dir=out / name / "tune",
                                        force=True), models)
            grid = run_tune(TuneOptions(replace(settings, strategy=GRID),
                                        results_dir=out / name / "grid",
                                        budget_minutes=args.grid_budget_minutes, write=False),
                            models)
            for outcome in (tune, grid):
                if outcome.interrupted:
                    raise KeyboardInterrupt
            rows.append(compare(name, tune.results, grid.results))
    finally:
        if not args.keep_repo:
            shutil.rmtree(repo_root, ignore_errors=True)
    text = table(rows)
    (out / "tune_vs_grid.md").write_text(text + "\n")
    (out / "tune_vs_grid.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)
    print(f"\nreports: {out}/<model>/tune/report.md, {out}/<model>/grid/report.md")
    met = all((r["found_same_run"] or 0) >= GOALS["found"] and (r["time"] or 9) <= GOALS["time"]
              and ((r["available"] or 0) < GOALS["vs_default"]
                   or (r["vs_default"] or 0) >= GOALS["vs_default"]) for r in rows)
    return 0 if met else 3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="tune_vs_grid", help="where the results and reports go")
    p.add_argument("--models", default="tiny_mlp,resnet18", help="tiny_mlp, resnet18 or both")
    p.add_argument("--keep-repo", default=None, metavar="DIR",
                   help="build into DIR and keep it (reused when already built)")
    p.add_argument("--grid-budget-minutes", type=float, default=120.0,
                   help="time limit of the grid (it should measure everything)")
    args = p.parse_args(argv)
    progress.set_quiet(False)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
