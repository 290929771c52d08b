"""report.md + report.html (+ PNG plots) from results.json, verdict first.

The report is built once as a list of blocks (heading, paragraph, list, table, image) and
rendered twice, so the Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

import html
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..repository.files import write_atomic
from ..status import FAILED, POINT_FAILED, POINT_UNSTABLE, SKIPPED
from . import analysis, plots
from .results import Results, busy_at_start
from .workspace import FLOOR

MD, HTML = "report.md", "report.html"


@dataclass(frozen=True)
class Block:
    kind: str  # h1 h2 h3 p ul table img code
    content: object
    extra: object = None


def _ms(us) -> str:
    return f"{us / 1000:.2f}" if isinstance(us, (int, float)) else ""


def _us(us) -> str:
    return f"{us:.0f}" if isinstance(us, (int, float)) else ""


def _context(results: Results) -> list[Block]:
    m, v, s = results.machine, results.versions, results.server
    state = "complete" if results.complete else \
        f"STOPPED EARLY ({results.stopped_by or 'unknown reason'}): partial results"
    lines = [
        f"Measured {results.created} on {m.get('cpu', '?')} ({m.get('cores', '?')} cores,"
        f" {m.get('memory_gib', '?')} GiB), {m.get('os', '')}.",
        f"Server: {s.get('kind', '?')} {s.get('version', '')}; load generator: perf_analyzer"
        f" ({v.get('perf_analyzer', '?')}) over {results.settings.get('protocol', '?')};"
        f" torch {v.get('torch', '?')}. Run: {state}.",
    ]
    blocks = [Block("p", " ".join(lines))]
    missing = not_measured(results)
    if missing:
        blocks.append(Block("p", "Not measured (planned, but the run stopped first): "
                                 + "; ".join(missing) + "."))
    busy = busy_at_start(m)
    if busy:
        blocks.append(Block("p", f"Warning: the machine was busy (load average {busy[0]:.1f}"
                                 f" at the start on {busy[1]} cores); figures are noisier and"
                                 " lower than on an idle machine."))
    return blocks


def not_measured(results: Results) -> list[str]:
    """The planned points with no record, e.g. ["tiny_mlp_python x1 b1: c4, c8, c16"]."""
    s = results.settings
    skipped = {e["model"] for e in results.loads if e["state"] == SKIPPED}
    failed = {(e["model"], e["instances"]) for e in results.loads if e["state"] == FAILED}
    done = {(p.model, p.instances, p.batch_size, p.concurrency) for p in results.points}
    out = []
    for m in results.models:
        name = m["name"]
        if name in skipped:
            continue
        sizes = m.get("batch_sizes", s.get("batch_sizes", []))  # what the sweep planned for it
        for inst in s.get("instances", []):
            if inst is None:  # a running server: its configured count, once known
                inst = next((p.instances for p in results.points if p.model == name), None)
            if (name, inst) in failed:
                continue
            for b in sizes:
                left = [c for c in s.get("concurrency", []) if (name, inst, b, c) not in done]
                if left:
                    where = f"{name} x{inst}" if inst is not None else name
                    out.append(f"{where} b{b}: " + ", ".join(f"c{c}" for c in left))
    return out


def _rows_table(results: Results) -> Block:
    loads = {}
    for entry in results.loads:
        loads.setdefault(entry["model"], []).append(entry)
    rows = []
    for m in results.models:
        states = loads.get(m["name"], [])
        state = "; ".join(dict.fromkeys(
            f"{e['state']}" + (f" ({e['reason']})" if e.get("reason") else "") for e in states))
        rows.append([m["name"], m.get("variant", ""), m.get("label", ""), state or "not run"])
    return Block("table", ["model", "variant", "what it is", "load"], rows)


def _points_table(results: Results, base: str) -> Block:
    rows = []
    for p in sorted((p for p in results.points if p.base == base),
                    key=lambda p: (p.variant, p.instances, p.batch_size, p.concurrency)):
        status = p.status if p.status != POINT_UNSTABLE else f"unstable (±{p.stability:g}%)"
        if p.status == POINT_FAILED:
            status = f"failed: {p.error[:120]}"
        rows.append([p.variant, str(p.instances), str(p.threads or ""), str(p.batch_size),
                     str(p.concurrency), status,
                     f"{p.throughput:.1f}" if p.throughput is not None else "",
                     _ms(p.get("p50_us")), _ms(p.get("p90_us")), _ms(p.get("p99_us")),
                     _us(p.get("server_queue_us")), _us(p.get("server_compute_input_us")),
                     _us(p.get("server_compute_infer_us")),
                     _us(p.get("server_compute_output_us")),
                     str(p.get("server_avg_batch", "")), p.csv])
    return Block("table", ["variant", "inst", "threads", "batch", "conc", "status", "infer/s",
                           "p50 ms", "p90 ms", "p99 ms", "queue µs", "input µs", "infer µs",
                           "output µs", "avg batch", "CSV"], rows)


def _ceiling_table(results: Results, base: str) -> Block | None:
    pts = [c for c in results.ceiling if c["model"] == base]
    if not pts:
        return None
    rows = [[c["kind"], c["source"], str(c["threads"]), str(c["batch_size"]),
             f"{c['throughput']:.1f}", f"{c['p50_ms']:.2f}", str(c["iterations"])]
            for c in sorted(pts, key=lambda c: (c["kind"], c["batch_size"], -c["threads"]))]
    return Block("table", ["artifact", "from", "threads", "batch", "infer/s",
                           "p50 ms / forward", "iterations"], rows)


def _memory_blocks(results: Results, base: str) -> list[Block]:
    rows = analysis.memory_rows(results, base)
    if not rows:
        return []
    table = []
    for r in rows:
        variant = (f"{r.variant} (the Python backend's fixed cost)" if r.variant == FLOOR
                   else r.variant)
        how = f"{r.measured_as} of {r.stubs} stub(s)" if r.stubs is not None else r.measured_as
        table.append([variant, str(r.instances), how, analysis.mib(r.memory),
                      analysis.mib(r.per_instance), analysis.mib(r.over_floor),
                      analysis.mib(r.uss), analysis.mib(r.gpu_per_instance),
                      f"{r.load_seconds:.1f}" if r.load_seconds is not None else "",
                      f"{r.first_request_ms:.1f}" if r.first_request_ms is not None else "",
                      f"{r.throughput:.1f}" if r.throughput else "",
                      analysis.mib(r.peak)])
    text = ("Read once per model and instance count, idle after the warm-up (an instance"
            " gives back what its forward passes freed after 1 s without a request), with every"
            " model of the run loaded; the peak is the PSS sampled during the model's warm-up"
            " (under load). A Python-backend model's memory is the PSS of its stub processes"
            " (one per instance), summed: a page shared with other processes (torch's libraries,"
            " mapped weights) is split among all that map it -- the other models' stubs and"
            " bench itself included -- so it counts once across them; USS is what is private to"
            " the stubs. A model of a backend inside the server is the server process's resident"
            " memory after its load less before. The floor, measured the same way, is the"
            " Python backend's fixed cost; \"over the floor\" is what the model adds to it per"
            " instance. Load: from the load request to READY (models loaded one at a time);"
            " first request: one sample row right after READY, before the warm-up.")
    return [Block("h3", "Memory and cold start"), Block("p", text),
            Block("table", ["variant", "inst", "measured as", "memory MiB", "per instance MiB",
                            "over the floor, per instance MiB", "USS MiB", "GPU MiB per instance",
                            "load s", "first request ms", "best infer/s",
                            "peak PSS under warm-up MiB"], table)]


def build_blocks(results: Results, out_dir: Path) -> list[Block]:
    bases = results.bases()
    blocks = [Block("h1", f"gen-repo bench: {', '.join(bases) or 'no models'}")]
    blocks += [Block("h2", "Verdict"), Block("ul", analysis.verdict(results) or
                                             ["Nothing was measured."])]
    blocks += _context(results)
    blocks += [Block("h2", "What each row is"), _rows_table(results)]
    for base in bases:
        blocks.append(Block("h2", base))
        for title, path in plots.write_plots(results, base, out_dir / "plots"):
            blocks.append(Block("img", os.path.relpath(path, out_dir), title))
        summary = analysis.summarize(results, base)
        if summary.shortfalls:
            blocks += [Block("h3", "Where it falls short, and why"),
                       Block("ul", summary.shortfalls)]
        blocks += _memory_blocks(results, base)
        blocks += [Block("h3", "Measured points"), _points_table(results, base)]
        ceiling = _ceiling_table(results, base)
        if ceiling:
            blocks += [Block("h3", "In-process ceiling (no server)"),
                       Block("p", "The same artifacts loaded as the Python backend loads them,"
                                  " run in a loop in one fresh process on the rows"
                                  " perf_analyzer sends."), ceiling]
    blocks += _run_section(results)
    return blocks


def _run_section(results: Results) -> list[Block]:
    s = results.settings
    meas = s.get("measurement", {})
    window = (f"windows of {meas.get('interval_ms')} ms" if meas.get("mode") == "time_windows"
              else f"windows of at least {meas.get('request_count')} requests")
    items = [
        f"Command: `{shlex.join(results.command)}`" if results.command else "",
        f"Sweep: concurrency {s.get('concurrency')}, batch sizes {s.get('batch_sizes')},"
        f" instances {s.get('instances')}, protocol {s.get('protocol')}.",
        f"Stability: perf_analyzer {meas.get('mode')}, {window}; a point is stable when the"
        f" last 3 windows agree within {meas.get('stability_percentage')}% (up to"
        f" {meas.get('max_trials')} windows); a point that does not is measured again with"
        f" windows twice as long at {meas.get('relaxed_stability_percentage')}% and marked"
        " unstable. Each model is warmed up by a short unrecorded run after each load.",
        "Files: results.json (every point), csv/ (perf_analyzer's raw CSV and log per point),"
        " plots/.",
    ]
    blocks = [Block("h2", "How this was measured"), Block("ul", [i for i in items if i])]
    first = next((p for p in results.points if p.command), None)
    if first:
        blocks += [Block("p", "Example perf_analyzer command (each point's exact command is in"
                              " results.json):"), Block("code", shlex.join(first.command))]
    if results.notes:
        blocks += [Block("h2", "Notes"), Block("ul", results.notes)]
    return blocks


# ---------------------------------------------------------------------------------------------
# renderers


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + str(b.content))
        elif b.kind == "p":
            out.append(str(b.content))
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.content))
        elif b.kind == "table":
            header, rows = b.content, b.extra
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif b.kind == "img":
            out.append(f"![{b.extra}]({b.content})")
        elif b.kind == "code":
            out.append(f"```\n{b.content}\n```")
    return "\n\n".join(out) + "\n"


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
       "color:#222}table{border-collapse:collapse;font-size:13px;margin:1em 0}"
       "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#f3f3f3}"
       "img{max-width:100%;border:1px solid #eee;margin:.5em 0}"
       "pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}"
       "ul li{margin:.3em 0}")


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    parts = html.escape(str(text)).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: list[Block]) -> str:
    title = next((str(b.content) for b in blocks if b.kind == "h1"), "gen-repo bench")
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{_inline(b.content)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.content) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.content)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                           + "</tr>" for row in b.extra)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "img":
            out.append(f"<figure><img src='{html.escape(str(b.content))}'"
                       f" alt='{html.escape(str(b.extra))}'><figcaption>"
                       f"{html.escape(str(b.extra))}</figcaption></figure>")
        elif b.kind == "code":
            out.append(f"<pre>{html.escape(str(b.content))}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_blocks(blocks: list[Block], out_dir: Path) -> tuple[Path, Path]:
    """Write the blocks as report.md and report.html into ``out_dir``, each atomically."""
    md, page = out_dir / MD, out_dir / HTML
    write_atomic(md, to_markdown(blocks))
    write_atomic(page, to_html(blocks))
    return md, page


def write_report(results: Results, out_dir: Path) -> tuple[Path, Path]:
    """Write plots/, report.md and report.html into ``out_dir``; return the two report paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_blocks(build_blocks(results, out_dir), out_dir)
