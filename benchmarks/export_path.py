"""Eager, TorchScript and AOTInductor side by side: resnet18 and a tiny transformer encoder, each
built as the python (eager, torch.package), python-ts (TorchScript) and python-aoti
(torch.export + AOTInductor) variants and measured by ``gen-repo bench`` in the same run.

    .venv/bin/python benchmarks/export_path.py [--rounds 3] [--out bench_export] [--keep-repo DIR]

All three are served by the Python backend of the embedded tritonserver (no PyTorch backend is
needed), so the comparison is of the artifacts: the same model.py around an eager module, a
TorchScript module and an AOTInductor package. Where a PyTorch backend is found
(``GEN_REPO_BACKEND_DIRECTORY``) the libtorch variant is built and measured too. gRPC, batch-1
requests, dynamic batching, 1 instance, concurrency 1 and 8; the models alternate within each
round, and the table gives medians over the rounds (each round's report is kept). Written as
``export_path.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from goals import figures, median  # noqa: E402

from generator.bench.results import Results  # noqa: E402
from generator.cli import main as gen_repo  # noqa: E402
from generator.serve.triton_install import default_backend_dirs, has_pytorch_backend  # noqa: E402

FIXTURES = HERE.parent / "tests" / "fixtures" / "models.py"
MODELS = {  # name -> gen-repo build arguments
    "resnet18": [],
    "tiny_bert": [f"{FIXTURES}:tiny_bert", "--input", "input_ids:int64:-1:0..30",
                  "--input", "token_type_ids:int64:-1:0..2"],
}
EAGER = "python"


def table(rounds: dict[str, list[dict]]) -> str:
    """Medians per model and variant, and each against eager (python) of the same round."""
    lines = ["| model | variant | c=8 infer/s | vs eager | c=1 p50 ms | vs eager | rounds (infer/s) |",
             "|---|---|---|---|---|---|---|"]
    for name, got in rounds.items():
        variants = sorted({v for r in got for v in r if v != "floor"},
                          key=lambda v: (v != EAGER, v))
        for v in variants:
            thr = [r.get(v, (None, None))[0] for r in got]
            p50 = [r.get(v, (None, None))[1] for r in got]
            thr_ratio = median([t / r[EAGER][0] if t and r.get(EAGER, (None,))[0] else None
                                for t, r in zip(thr, got)])
            p50_ratio = median([p / r[EAGER][1] if p and r.get(EAGER, (None, None))[1] else None
                                for p, r in zip(p50, got)])
            each = " ".join("n/a" if t is None else f"{t:,.0f}" for t in thr)
            lines.append(
                f"| {name} | {v} | {_fmt(median(thr), ',.0f')} | {_fmt(thr_ratio, '.2f')}x |"
                f" {_fmt(median(p50), '.2f')} | {_fmt(p50_ratio, '.2f')}x | {each} |")
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_export")
    p.add_argument("--keep-repo", default=None, metavar="DIR")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    out = Path(args.out)
    root = Path(args.keep_repo or tempfile.mkdtemp(prefix="gen-repo-export-path-"))
    variants = "python,python-ts,python-aoti"
    if any(has_pytorch_backend(Path(d)) for d in default_backend_dirs()):
        variants += ",libtorch"
    repos = {}
    for name, build_args in MODELS.items():
        repos[name] = root / name
        if not (repos[name] / f"{name}_python_aoti" / "config.pbtxt").is_file():
            code = gen_repo(["build", *build_args, "--out", str(repos[name]), "--force",
                             "--variants", variants])
            if code != 0:
                print(f"building {name} failed (exit {code})", file=sys.stderr)
                return code
    rounds: dict[str, list[dict]] = {name: [] for name in MODELS}
    for k in range(1, args.rounds + 1):  # rounds outside, models inside: they alternate
        for name, repo in repos.items():
            where = out / name / f"round{k}"
            code = gen_repo(["bench", "--repo", str(repo), "--out", str(where), "--concurrency",
                             "1,8", "--batch-size", "1", "--instances", "1", "--protocol", "grpc",
                             "--no-ceiling"])
            if code not in (0, 3):
                print(f"bench of {name} failed (exit {code})", file=sys.stderr)
                return code
            rounds[name].append(figures(Results.load(where / "results.json"), name))
    text = table(rounds)
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_path.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
