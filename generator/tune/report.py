"""tune's report.md + report.html, from results.json alone (so it can be written again from a
stopped run): the decision first, then per model the throughput-vs-p99 plot with the configs on
the Pareto front (throughput, p99, memory) and the winner marked, and the table of every
measured candidate.

Built with bench's blocks and renderers (one Markdown and one HTML writer for both reports) and
bench's plot setup.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..bench import plots
from ..bench.report import Block, write_blocks
from ..bench.results import busy_at_start
from ..status import CANDIDATE_MEASURED, POINT_FAILED, POINT_UNSTABLE
from .candidate import Candidate
from .objective import MIN_LATENCY, TIE, Objective
from .results import TuneResults
from .settings import Settings

MIB = 2**20


def _objective(results: TuneResults) -> Objective:
    return Settings.from_dict(results.search).objective


def candidate_rows(results: TuneResults, base: str) -> list[list[str]]:
    """Every measured candidate of ``base``: ranked ones first (in ranking order), then the
    rest in the order they were measured."""
    objective = _objective(results)
    decision = results.decision(base) or {}
    ranking = decision.get("ranking", [])
    marks = {}
    for label in ("default", "runner_up", "winner"):
        entry = decision.get(label)
        if entry:
            marks.setdefault(entry["key"], []).append(label.replace("_", "-"))
    excluded = {e["key"]: e["reason"] for e in decision.get("excluded", [])}
    front = set(decision.get("pareto", []))
    records = [r for r in results.candidates if r.get("base") == base]
    scores = {r["key"]: objective.score(results.points_of(r["key"])) for r in records
              if r.get("state") == CANDIDATE_MEASURED}
    top = max((s for k, s in scores.items() if s and k in ranking), default=None,
              key=lambda s: s.goodness)
    order = {k: i for i, k in enumerate(ranking)}
    records.sort(key=lambda r: (order.get(r["key"], len(order)), results.candidates.index(r)))
    rows = []
    for r in records:
        c = Candidate.from_dict(r)
        points = results.points_of(c.key)
        score = scores.get(c.key)
        note = marks.get(c.key, [])
        if ranking and c.key == ranking[0] and top and score and score.goodness < top.goodness:
            note.append(f"within {TIE:.0%} of the best figure ({_figure_of(top)}): a tie, and"
                        " the simpler config wins")
        if r.get("key") in front:
            note.append("on the Pareto front (throughput, p99, memory)")
        if r.get("key") in excluded:
            note.append(excluded[r["key"]])
        if r.get("stopped_early"):
            note.append(f"stopped early: {r['stopped_early']}")
        if r.get("state") != CANDIDATE_MEASURED:
            note.append(f"failed: {(r.get('reason') or '')[:160]}")
        elif score is None:
            note.append("no point counts under the objective")
        if any(p.status == POINT_UNSTABLE for p in points):
            note.append("unstable points")
        p = score.point if score else None
        rank = str(order[c.key] + 1) if c.key in order else ""
        memory = r.get("memory_bytes")
        rows.append([rank, c.variant, str(c.instances), str(c.threads),
                     c.batching.describe(), r.get("stage", ""),
                     f"{p.throughput:.1f}" if p else "", _ms(p.get("p50_us")) if p else "",
                     _ms(p.get("p99_us")) if p else "", str(p.concurrency) if p else "",
                     f"{memory / MIB:.0f}" if memory is not None else "",
                     f"{r.get('seconds', 0):.0f}", "; ".join(note)])
    return rows


def _figure_of(score) -> str:
    return (f"{score.p99_ms:.1f} ms p99" if score.kind == MIN_LATENCY else
            f"{score.throughput:.1f} infer/s")


def _ms(us) -> str:
    return f"{us / 1000:.1f}" if isinstance(us, (int, float)) else ""


def tradeoff_plot(results: TuneResults, base: str, path: Path) -> Path | None:
    """Throughput against p99 of every measured point, a colour per variant, the configs on the
    Pareto front (throughput, p99, memory) circled at their figure, the winner and the default
    config marked."""
    points = [p for p in results.points if p.base == base and p.status != POINT_FAILED
              and p.throughput and p.get("p99_us")]
    if not points:
        return None
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for variant in sorted({p.variant for p in points}):
        own = [p for p in points if p.variant == variant]
        ax.scatter([p.throughput for p in own], [p.get("p99_us") / 1000 for p in own], s=22,
                   alpha=0.75, label=variant)
    decision = results.decision(base) or {}
    objective = _objective(results)
    front = [score.point for score in (objective.score(results.points_of(k))
                                       for k in decision.get("pareto", [])) if score]
    if front:
        ax.scatter([p.throughput for p in front], [p.get("p99_us") / 1000 for p in front],
                   s=300, facecolors="none", edgecolors="black", linewidths=1.2, zorder=6,
                   label="Pareto front (throughput, p99, memory)")
    for label, marker, colour in (("default", "D", "tab:grey"), ("winner", "*", "tab:red")):
        entry = decision.get(label)
        if entry and entry.get("throughput"):
            ax.scatter([entry["throughput"]], [entry["p99_ms"]], marker=marker, s=200 if
                       marker == "*" else 90, color=colour, edgecolor="black", zorder=5,
                       label=f"{label}: {entry['describe']}")
    budget = objective.p99_budget_ms
    if budget:
        ax.axhline(budget, color="tab:red", linestyle=":", label=f"p99 budget {budget:g} ms")
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    plots.label_axes(ax, "throughput (inferences/s)", "p99 latency (ms)",
                     f"{base}: every measured point, throughput vs p99")
    ax.legend(fontsize=7)
    return plots.save_figure(fig, path)


def _context(results: TuneResults) -> list[Block]:
    s = Settings.from_dict(results.search)
    m, v, server = results.machine, results.versions, results.server
    state = "complete" if results.complete else \
        f"STOPPED EARLY ({results.stopped_by or 'unknown reason'}): the decision is from what" \
        " was measured before"
    runs = results.runs
    measured = sum(r.get("measured_points", 0) for r in runs)
    reused = sum(r.get("reused_points", 0) for r in runs[-1:])
    items = [
        f"Objective: {s.objective.describe()}, at {s.load_text()}; strategy {s.strategy};"
        f" time budget {results.search.get('budget_minutes', '?')} min.",
        f"Run: {state}. {len(runs)} run(s); {measured} perf_analyzer point(s) measured"
        + (f", {reused} reused from results.json by the last run (--resume)" if reused else "")
        + ".",
        f"Machine: {m.get('cpu', '?')} ({m.get('cores', '?')} cores,"
        f" {m.get('memory_gib', '?')} GiB). Server: {server.get('kind', '?')}"
        f" {server.get('version', '')} with backends {', '.join(server.get('backends', []))};"
        f" perf_analyzer ({v.get('perf_analyzer', '?')}); torch {v.get('torch', '?')}.",
    ]
    busy = busy_at_start(m)
    if busy:
        items.append(f"The machine was busy (load average {busy[0]:.1f} at the start on"
                     f" {busy[1]} cores): figures are noisier and lower than on an idle one.")
    return [Block("h2", "Context"), Block("ul", items)]


def build_blocks(results: TuneResults, out_dir: Path) -> list[Block]:
    bases = [d["base"] for d in results.decisions] or \
        list(dict.fromkeys(r["base"] for r in results.candidates))
    blocks = [Block("h1", f"gen-repo tune: {', '.join(bases) or 'no models'}"),
              Block("h2", "Decision")]
    lines = []
    for d in results.decisions:
        line = d.get("sentence", d["base"])
        if d.get("written"):
            line += f". Written to `{d['written']}`, verified over HTTP and gRPC."
        elif d.get("error"):
            line += f". Not written: {d['error']}"
        lines.append(line)
    blocks.append(Block("ul", lines or ["Nothing was decided: nothing was measured."]))
    blocks += _context(results)
    for base in bases:
        d = results.decision(base) or {}
        blocks.append(Block("h2", base))
        plot = tradeoff_plot(results, base, out_dir / "plots" / f"{base}_throughput_vs_p99.png")
        if plot:
            blocks.append(Block("img", os.path.relpath(plot, out_dir),
                                "Throughput vs p99: every measured point, the Pareto front, the"
                                " winner and the default config"))
        about = []
        if d.get("runner_up"):
            r = d["runner_up"]
            about.append(f"Runner-up: {r['describe']} ({_figure(r)}).")
        if d.get("space"):
            total = sum(x["candidates"] for x in d["space"].values())
            about.append(f"Searched {d.get('measured', 0)} of {total} candidates of the space"
                         f" ({', '.join(d.get('variants', []))}; instances × threads × batching)"
                         f" in {d.get('measured_seconds', 0):.0f} s of measurement.")
        if about:
            blocks.append(Block("p", " ".join(about)))
        blocks += [Block("h3", "Every measured candidate"),
                   Block("table", ["rank", "variant", "inst", "threads", "batching", "stage",
                                   "infer/s", "p50 ms", "p99 ms", "at conc", "memory MiB",
                                   "seconds", "note"], candidate_rows(results, base))]
        skipped = [f"`{x['key']}` ({x['stage']}): {x['reason']}"
                   for x in d.get("not_measured", [])]
        if d.get("notes") or skipped:
            blocks += [Block("h3", "Dropped and not measured"),
                       Block("ul", d.get("notes", []) + skipped)]
    blocks += _how(results)
    return blocks


def _figure(entry: dict) -> str:
    if entry.get("throughput") is None:
        return entry.get("reason", "no figure")
    return (f"{entry['throughput']:.1f} infer/s at p99 {entry['p99_ms']:.1f} ms, concurrency"
            f" {entry['concurrency']}")


def _how(results: TuneResults) -> list[Block]:
    meas = results.search.get("measurement", {})
    items = [
        f"Command: `{shlex.join(results.command)}`" if results.command else "",
        "Each candidate is its model directory with the config rewritten, loaded alone on the"
        " embedded tritonserver, warmed up, measured by perf_analyzer at each concurrency level"
        " in ascending order, and unloaded; memory is the server's resident memory (its"
        " Python-backend processes included) after loading and measuring, less before.",
        f"Stability: windows of {meas.get('interval_ms')} ms; a point counts when its last 3"
        f" windows agree within {meas.get('stability_percentage')}%, else it is measured again"
        f" with windows twice as long at {meas.get('relaxed_stability_percentage')}% and marked"
        " unstable.",
        "Files: results.json (every candidate and point; --resume reads it), csv/ (each"
        " point's perf_analyzer CSV and log), plots/, tritonserver.log.",
    ]
    blocks = [Block("h2", "How this was measured"), Block("ul", [i for i in items if i])]
    if results.notes:
        blocks += [Block("h2", "Notes"), Block("ul", results.notes)]
    return blocks


def write_report(results: TuneResults, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_blocks(build_blocks(results, out_dir), out_dir)
