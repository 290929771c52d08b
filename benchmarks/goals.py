"""The speed goals, measured: resnet18 and a tiny 2-layer MLP, the eager Python-backend variant
against the libtorch variant on a real PyTorch backend and against the Python backend's floor.

    .venv/bin/python benchmarks/goals.py                   # builds both into a temp repository
    .venv/bin/python benchmarks/goals.py --out bench_goals --keep-repo DIR --rounds 5

Builds the default resnet18 and ``tests/fixtures/models.py:tiny_mlp`` with ``gen-repo build``
(libtorch, python and the python-ts stand-in), adds a hand-written libtorch config of the same model.pt (``INPUT__0`` /
``OUTPUT__0`` naming, no backend parameters, 200 µs batching delay: what one would write by
hand), and runs ``gen-repo bench`` on each model for a few rounds: gRPC, batch-1 requests,
dynamic batching up to 8, 1 instance, concurrency 1 and 8. Within a round every variant -- libtorch
as built, libtorch hand-written, python, and the floor bench serves beside them (an identity
Python-backend model, no torch) -- is measured in turn at each point, so the ratios are same-run
ratios; the table gives the median over the rounds and each round. It needs a PyTorch backend
(``GEN_REPO_BACKEND_DIRECTORY``, else ``/opt/tritonserver/backends``), and says so
without one. About 2 minutes per round on 2 cores; every round's report is kept, and the table
is written as ``goals.md`` beside them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from generator import progress  # noqa: E402
from generator.bench import analysis  # noqa: E402
from generator.bench.results import Results  # noqa: E402
from generator.repository import layout  # noqa: E402
from generator.cli import main as gen_repo  # noqa: E402
from generator.serve.triton_install import (GET_PYTORCH_BACKEND,  # noqa: E402
                                            default_backend_dirs, has_pytorch_backend)

MODELS = {  # name -> gen-repo build arguments
    "resnet18": [],
    "tiny_mlp": [f"{HERE.parent / 'tests' / 'fixtures' / 'models.py'}:tiny_mlp", "--input",
                 "x:float32:16"],
}
HANDWRITTEN = "libtorch-handwritten"


@dataclass(frozen=True)
class Goal:
    model: str
    what: str
    op: str  # ">=" | "<="
    bound: float

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.bound if self.op == ">=" else value <= self.bound


EAGER_VS_LIBTORCH = "eager / libtorch throughput, concurrency 8"
EAGER_VS_FLOOR = "eager / floor throughput, concurrency 8"
EAGER_VS_FLOOR_P50 = "eager / floor p50 latency, concurrency 1"
CEILING = "eager served / in-process ceiling"
GENERATED_VS_HAND = "libtorch as built / hand-written config, throughput, concurrency 8"
STANDIN = "eager / python-ts (the stand-in without a PyTorch backend), throughput, concurrency 8"
GOALS = (
    Goal("resnet18", EAGER_VS_LIBTORCH, ">=", 1.0),
    Goal("resnet18", CEILING, ">=", 0.95),
    Goal("resnet18", GENERATED_VS_HAND, ">=", 1.0),
    Goal("tiny_mlp", EAGER_VS_LIBTORCH, ">=", 0.90),
    Goal("tiny_mlp", EAGER_VS_FLOOR, ">=", 0.90),
    Goal("tiny_mlp", EAGER_VS_FLOOR_P50, "<=", 1.10),
    Goal("tiny_mlp", GENERATED_VS_HAND, ">=", 1.0),
)
# Reported beside the goals, not goals: what a server without a PyTorch backend would compare.
STANDIN_ROWS = tuple(Goal(m, STANDIN, ">=", 0.0) for m in ("resnet18", "tiny_mlp"))


def _throughput(results: Results, model: str, concurrency: int) -> float | None:
    pts = results.measured(model=model, batch_size=1, instances=1, concurrency=concurrency)
    return pts[0].throughput if pts else None


def measured(results: Results, base: str) -> dict[str, float | None]:
    """The goal ratios of one model from one round's bench results (batch 1, 1 instance)."""
    c = analysis.compare(results, base, batch=1, inst=1, target_concurrency=8)
    floor = next((f for f in analysis.floor_shares(results, base, 1, 1)
                  if f.variant == analysis.eager_variant()), None)
    eager = next((r for r in analysis.ceiling_ratios(results, base)
                  if r.variant == analysis.eager_variant() and r.batch_size == 1), None)
    built, hand = (_throughput(results, f"{base}_{v}", 8) for v in ("libtorch", "handwritten"))
    shown = figures(results, base)
    py, ts = (shown.get(v, (None, None))[0] for v in ("python", "python-ts"))
    return {
        EAGER_VS_LIBTORCH: c.throughput_ratio
        if c.concurrency == 8 and c.torchscript_variant == "libtorch" else None,
        EAGER_VS_FLOOR: floor.throughput_ratio if floor and floor.concurrency == 8 else None,
        EAGER_VS_FLOOR_P50: floor.p50_ratio if floor and floor.low_concurrency == 1 else None,
        CEILING: eager.ratio if eager else None,
        GENERATED_VS_HAND: built / hand if built and hand else None,
        STANDIN: py / ts if py and ts else None,
        "_figures": shown,
        "_split": (f"p50 {floor.p50_ms:.2f} ms = floor {floor.floor_p50_ms:.2f} + forward"
                   f" {floor.forward_ms:.2f} + model.py {floor.overhead_ms:.2f}"
                   if floor and floor.forward_ms is not None else ""),
    }


def figures(results: Results, base: str) -> dict[str, tuple[float | None, float | None]]:
    """variant -> (throughput at concurrency 8, p50 ms at concurrency 1), batch 1, 1 instance."""
    out = {}
    for variant, model in analysis.models_of(results, base).items():
        low = results.measured(model=model, batch_size=1, instances=1, concurrency=1)
        out[variant] = (_throughput(results, model, 8),
                        low[0].get("p50_us") / 1000 if low and low[0].get("p50_us") else None)
    return out


def figures_table(rounds: dict[str, list[dict]]) -> str:
    """Median absolute figures per model and variant over the rounds."""
    lines = ["| model | variant | c=8 infer/s (median) | c=1 p50 ms (median) |",
             "|---|---|---|---|"]
    for name, got in rounds.items():
        variants = sorted({v for r in got for v in r["_figures"]})
        for v in variants:
            thr = median([r["_figures"].get(v, (None, None))[0] for r in got])
            p50 = median([r["_figures"].get(v, (None, None))[1] for r in got])
            lines.append(f"| {name} | {v} | {'n/a' if thr is None else f'{thr:,.0f}'} |"
                         f" {'n/a' if p50 is None else f'{p50:.2f}'} |")
    return "\n".join(lines)


def add_handwritten(repo: Path, base: str) -> None:
    """``<base>_handwritten``: the libtorch model.pt with the config one would write by hand."""
    from google.protobuf import text_format

    src = layout.BuiltModel(repo / f"{base}_libtorch")
    dst = repo / f"{base}_handwritten"
    shutil.rmtree(dst, ignore_errors=True)
    (dst / layout.VERSION).mkdir(parents=True)
    shutil.copy2(src.path / layout.VERSION / "model.pt", dst / layout.VERSION / "model.pt")
    config = src.config
    config.name = dst.name
    config.ClearField("parameters")
    config.dynamic_batching.max_queue_delay_microseconds = 200
    rename = {}
    for kind, tensors in (("INPUT", config.input), ("OUTPUT", config.output)):
        for i, t in enumerate(tensors):
            rename[t.name] = f"{kind}__{i}"
            t.name = rename[t.name]
    (dst / layout.CONFIG).write_text(text_format.MessageToString(config))
    for case_file in src.path.glob("gen_repo_*.npz"):  # the same samples, under the new names
        with np.load(case_file) as data:
            arrays = {rename.get(k, k): data[k] for k in data.files}
        with open(dst / case_file.name, "wb") as f:
            np.savez(f, **arrays)
    record = dict(src.record, variant=HANDWRITTEN, model_name=dst.name,
                  label="the same model.pt, config written by hand (INPUT__0 naming, delay 200 µs)")
    record["spec"] = dict(record["spec"], inputs=[dict(t, name=rename[t["name"]]) for t in
                                                  record["spec"]["inputs"]],
                          outputs=[dict(t, name=rename[t["name"]]) for t in
                                   record["spec"]["outputs"]])
    (dst / layout.RECORD).write_text(json.dumps(record, indent=1))


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def table(rows: list[tuple[Goal, list[float | None]]], goals: bool = True) -> str:
    lines = ["| model | ratio | goal | median | met | rounds |" if goals else
             "| model | ratio | median | rounds |", "|---|---|---|---|---|---|" if goals else
             "|---|---|---|---|"]
    for goal, values in rows:
        value = median(values)
        met = goal.met(value)
        each = " ".join("n/a" if v is None else f"{v:.3f}" for v in values)
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"| {goal.model} | {goal.what} | {goal.op} {goal.bound:.2f} | {shown} |"
                     f" {'n/a' if met is None else ('yes' if met else 'NO')} | {each} |" if goals
                     else f"| {goal.model} | {goal.what} | {shown} | {each} |")
    return "\n".join(lines)


def run(args) -> int:
    if not any(has_pytorch_backend(Path(d)) for d in default_backend_dirs()):
        print(f"ERROR: these goals are stated against the libtorch variant on a real PyTorch"
              f" backend, and gen-repo finds none.\nTIP: {GET_PYTORCH_BACKEND}.",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    repo_root = Path(args.keep_repo) if args.keep_repo else Path(tempfile.mkdtemp(
        prefix="gen-repo-goals-"))
    bench_flags = ["--concurrency", args.concurrency, "--batch-size", "1", "--instances",
                   args.instances, "--protocol", "grpc"]
    rows, standin, splits = [], [], []
    try:
        repos = {}
        for name, build_args in MODELS.items():
            repo = repos[name] = repo_root / name
            if not (repo / f"{name}_python" / "config.pbtxt").is_file():
                code = gen_repo(["build", *build_args, "--out", str(repo), "--force",
                                 "--variants", "libtorch,python,python-ts"])
                if code != 0:
                    print(f"building {name} failed (exit {code})", file=sys.stderr)
                    return code
            add_handwritten(repo, name)
        rounds: dict[str, list[dict]] = {name: [] for name in MODELS}
        for k in range(1, args.rounds + 1):  # rounds outside, models inside: they alternate
            for name, repo in repos.items():
                where = out / name / f"round{k}"
                code = gen_repo(["bench", "--repo", str(repo), "--out", str(where),
                                 *bench_flags])
                if code not in (0, 3):
                    print(f"bench of {name} failed (exit {code})", file=sys.stderr)
                    return code
                rounds[name].append(measured(Results.load(where / "results.json"), name))
        for name in MODELS:
            rows += [(g, [r[g.what] for r in rounds[name]]) for g in GOALS if g.model == name]
            standin += [(g, [r[g.what] for r in rounds[name]]) for g in STANDIN_ROWS
                        if g.model == name]
            splits += [f"{name} round {k + 1}: {r['_split']}" for k, r in enumerate(rounds[name])
                       if r["_split"]]
    finally:
        if not args.keep_repo:
            shutil.rmtree(repo_root, ignore_errors=True)
    text = (table(rows) + "\n\nNot goals: what a server without a PyTorch backend compares\n\n"
            + table(standin, goals=False) + "\n\n" + figures_table(rounds) + "\n\n"
            + "\n".join(f"- {s}" for s in splits))
    (out / "goals.md").write_text(text + "\n")
    print(text)
    print(f"\nreports: {out}/<model>/round<k>/report.md")
    return 0 if all(g.met(median(v)) for g, v in rows) else 3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_goals", help="where the bench results go")
    p.add_argument("--keep-repo", default=None, metavar="DIR",
                   help="build into DIR and keep it (reused when already built)")
    p.add_argument("--instances", default="1", help="instance counts to sweep (default 1)")
    p.add_argument("--concurrency", default="1,8",
                   help="concurrency levels (the goals need 1 and 8)")
    p.add_argument("--rounds", type=int, default=3, help="bench runs per model (median)")
    args = p.parse_args(argv)
    progress.set_quiet(False)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
