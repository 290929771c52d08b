"""The speed goals, measured: resnet18 and a tiny 2-layer MLP, eager against TorchScript, served
against the in-process ceiling.

    .venv/bin/python benchmarks/goals.py                   # builds both into a temp repository
    .venv/bin/python benchmarks/goals.py --out bench_goals --keep-repo DIR --rounds 5

Builds the default resnet18 and ``tests/fixtures/models.py:tiny_mlp`` with ``gen-repo build`` (default
variants: libtorch + python; bench serves the libtorch model.pt through the Python backend where
no PyTorch backend exists), runs ``gen-repo bench`` on each (gRPC, batch-1 requests, dynamic
batching up to 8) for a few rounds, and prints the goal table with the median of the rounds --
also written as ``goals.md`` beside the reports. Rounds make the ratios robust on a machine that
other work shares; every round's report is kept.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from generator import progress  # noqa: E402
from generator.bench import analysis  # noqa: E402
from generator.bench.results import Results  # noqa: E402
from generator.cli import main as gen_repo  # noqa: E402

MODELS = {  # name -> gen-repo build arguments
    "resnet18": [],
    "tiny_mlp": [f"{HERE.parent / 'tests' / 'fixtures' / 'models.py'}:tiny_mlp", "--input",
                 "x:float32:16"],
}


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


GOALS = (
    Goal("resnet18", "eager / TorchScript throughput, concurrency 8", ">=", 0.98),
    Goal("resnet18", "eager served / in-process ceiling", ">=", 0.95),
    Goal("tiny_mlp", "eager / TorchScript throughput, concurrency 8", ">=", 0.90),
    Goal("tiny_mlp", "eager / TorchScript p50 latency, concurrency 1", "<=", 1.15),
)


def measured(results: Results, base: str) -> dict[str, float | None]:
    """The goal ratios of one model from its bench results (batch 1, 1 instance)."""
    c = analysis.compare(results, base, batch=1, inst=1, target_concurrency=8)
    eager = next((r for r in analysis.ceiling_ratios(results, base)
                  if r.variant == analysis.EAGER_VARIANT and r.batch_size == 1), None)
    return {
        "eager / TorchScript throughput, concurrency 8":
            c.throughput_ratio if c.concurrency == 8 else None,
        "eager / TorchScript p50 latency, concurrency 1":
            c.p50_ratio if c.low_concurrency == 1 else None,
        "eager served / in-process ceiling": eager.ratio if eager else None,
        "_torchscript": c.torchscript_variant,
    }


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def table(rows: list[tuple[Goal, list[float | None], str]]) -> str:
    lines = ["| model | ratio | goal | median | met | rounds | TorchScript variant measured |",
             "|---|---|---|---|---|---|---|"]
    for goal, values, ts in rows:
        value = median(values)
        met = goal.met(value)
        each = " ".join("n/a" if v is None else f"{v:.3f}" for v in values)
        lines.append(f"| {goal.model} | {goal.what} | {goal.op} {goal.bound:.2f} |"
                     f" {'n/a' if value is None else f'{value:.3f}'} |"
                     f" {'n/a' if met is None else ('yes' if met else 'NO')} | {each} |"
                     f" {ts or 'none'} |")
    return "\n".join(lines)


def run(args) -> int:
    out = Path(args.out)
    repo_root = Path(args.keep_repo) if args.keep_repo else Path(tempfile.mkdtemp(
        prefix="gen-repo-goals-"))
    bench_flags = ["--quick"] if args.quick else ["--concurrency", args.concurrency]
    bench_flags += ["--batch-size", "1", "--instances", args.instances, "--protocol", "grpc"]
    rows = []
    try:
        for name, build_args in MODELS.items():
            repo = repo_root / name
            if not (repo / f"{name}_python" / "config.pbtxt").is_file():
                code = gen_repo(["build", *build_args, "--out", str(repo), "--force"])
                if code != 0:
                    print(f"building {name} failed (exit {code})", file=sys.stderr)
                    return code
            rounds = []
            for k in range(1, args.rounds + 1):
                where = out / name / f"round{k}"
                code = gen_repo(["bench", "--repo", str(repo), "--out", str(where),
                                 *bench_flags])
                if code not in (0, 3):
                    print(f"bench of {name} failed (exit {code})", file=sys.stderr)
                    return code
                rounds.append(measured(Results.load(where / "results.json"), name))
            rows += [(g, [r[g.what] for r in rounds], rounds[0]["_torchscript"])
                     for g in GOALS if g.model == name]
    finally:
        if not args.keep_repo:
            shutil.rmtree(repo_root, ignore_errors=True)
    text = table(rows)
    (out / "goals.md").write_text(text + "\n")
    print(text)
    print(f"\nreports: {out}/<model>/round<k>/report.md")
    return 0 if all(g.met(median(v)) for g, v, _ in rows) else 3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_goals", help="where the bench results go")
    p.add_argument("--keep-repo", default=None, metavar="DIR",
                   help="build into DIR and keep it (reused when already built)")
    p.add_argument("--instances", default="1", help="instance counts to sweep (default 1)")
    p.add_argument("--concurrency", default="1,8",
                   help="concurrency levels (the goals need 1 and 8)")
    p.add_argument("--rounds", type=int, default=3, help="bench runs per model (median)")
    p.add_argument("--quick", action="store_true", help="bench --quick (a first look)")
    args = p.parse_args(argv)
    progress.set_quiet(False)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
