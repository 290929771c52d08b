"""The summary of scripts/gpu-check.sh: its steps, what was served, and the key figures.

    python scripts/gpu_check_summary.py OUT MODE  > OUT/summary.md   (also writes OUT/figures.json)

Reads what the check left in OUT: steps.tsv, logs/serve.log, logs/verify output (in
logs/serve-verify.log), bench/results.json, tune/results.json, logs/gpu-memory.csv.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path


def steps(out: Path) -> list[tuple[str, str, str]]:
    rows = []
    for line in (out / "steps.tsv").read_text().splitlines():
        name, rc, seconds = line.split("\t")
        rows.append((name, "ok" if rc == "0" else ("skipped" if rc == "skipped" else f"exit {rc}"),
                     seconds))
    return rows


def served(out: Path) -> list[str]:
    """The status table lines gen-repo serve printed (MODEL BACKEND STATUS REASON)."""
    log = out / "logs" / "serve.log"
    if not log.is_file():
        return []
    lines = log.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("MODEL")), None)
    if start is None:
        return []
    table = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("serving "):
            break
        table.append(line)
    return table


def verify_lines(out: Path) -> list[str]:
    log = out / "logs" / "serve-verify.log"
    if not log.is_file():
        return []
    keep = re.compile(r"\b(PASS|FAIL|SKIP|verified|verify)\b")
    return [line for line in log.read_text(errors="replace").splitlines() if keep.search(line)]


def best(points, **where) -> float | None:
    values = [p["throughput"] for p in points if p.get("status") != "failed"
              and p.get("throughput") and all(p.get(k) == v for k, v in where.items())]
    return max(values) if values else None


def bench_figures(out: Path) -> dict:
    path = out / "bench" / "results.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    points, ceiling = data.get("points", []), data.get("ceiling", [])
    figures = {}
    for m in data.get("models", []):
        name = m["name"]
        row = {"base": m.get("base"), "variant": m.get("variant")}
        for n in sorted({p["instances"] for p in points if p["model"] == name}):
            row[f"instances_{n}"] = best(points, model=name, instances=n)
        own = [c for c in ceiling if c.get("source") == name]
        if own:
            top = max(own, key=lambda c: c["throughput"])
            row["ceiling"] = top["throughput"]
            row["ceiling_device"] = top.get("device", "cpu")
            row["ceiling_batch"] = top["batch_size"]
        figures[name] = row
    return figures


def gpu_memory(out: Path) -> list[dict]:
    path = out / "logs" / "gpu-memory.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


def fmt(x) -> str:
    return "-" if x is None else f"{x:,.0f}"


def main(out: Path, mode: str) -> int:
    rows = steps(out)
    figures = bench_figures(out)
    memory = gpu_memory(out)
    print(f"# gen-repo GPU check ({mode})\n")
    facts = out / "logs" / "facts.log"
    if facts.is_file():
        print("```\n" + facts.read_text(errors="replace").strip() + "\n```\n")
    print("| step | result | seconds |\n|---|---|---|")
    for name, result, seconds in rows:
        print(f"| {name} | {result} | {seconds} |")
    table = served(out)
    if table:
        print("\n## Served\n\n```\n" + "\n".join(table) + "\n```")
    lines = verify_lines(out)
    if lines:
        print("\n## verify (HTTP and gRPC)\n\n```\n" + "\n".join(lines[-40:]) + "\n```")
    if figures:
        print("\n## bench (inferences/s: best over concurrency; ceiling: in-process, no server)\n")
        counts = sorted({k for f in figures.values() for k in f if k.startswith("instances_")})
        head = ["model", *[c.replace("_", " ") for c in counts], "ceiling", "ceiling on",
                "served / ceiling"]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for name, f in figures.items():
            served_best = max([f[c] for c in counts if f.get(c)] or [0]) or None
            ratio = (f"{served_best / f['ceiling']:.2f}" if served_best and f.get("ceiling")
                     else "-")
            print(f"| {name} | " + " | ".join(fmt(f.get(c)) for c in counts)
                  + f" | {fmt(f.get('ceiling'))} | {f.get('ceiling_device', '-')} | {ratio} |")
    if memory:
        print("\n## GPU memory while serving (nvidia-smi)\n")
        print("| pid | process | used |\n|---|---|---|")
        for m in memory:
            print(f"| {m.get('pid')} | {m.get('process_name')} |"
                  f" {m.get('used_gpu_memory [MiB]', m.get('used_memory [MiB]', '?'))} |")
    tune = out / "tune" / "report.md"
    if tune.is_file():
        text = tune.read_text(errors="replace")
        print("\n## tune\n\n" + "\n".join(text.splitlines()[:30]))
    (out / "figures.json").write_text(json.dumps({"steps": rows, "bench": figures,
                                                  "gpu_memory": memory}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
