"""PNG plots (matplotlib, Agg backend): one figure per question, one file per model.

    throughput vs concurrency     a line per variant x instance count, ceiling as a dashed line
    p99 latency vs throughput     the classic serving curve
    throughput vs instances       best throughput at each instance count (the interpreter question)
    served / ceiling              a bar per variant x batch size
    memory vs throughput          a point per variant x instance count; the floor's memory (the
                                  Python backend's fixed cost) as dotted lines
"""

from __future__ import annotations

from pathlib import Path

from . import analysis
from .results import Results
from .workspace import FLOOR


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label(results: Results, model: str) -> str:
    return results.model_info(model).get("variant") or model


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _is_floor(results: Results, model: str) -> bool:
    return _label(results, model) == FLOOR


def _series(results: Results, base: str):
    """(model, instances, batch) -> points sorted by concurrency; the floor is not a series (it
    is a bound: ``_floor_line``)."""
    out: dict[tuple[str, int, int], list] = {}
    for p in results.points:
        if p.base == base and p.throughput is not None and not _is_floor(results, p.model):
            out.setdefault((p.model, p.instances, p.batch_size), []).append(p)
    return {k: sorted(v, key=lambda p: p.concurrency) for k, v in sorted(out.items())}


def _floor_line(ax, results: Results, base: str, batch: int, top: float) -> None:
    """The Python backend's floor as a dotted line at its best throughput, or, when it is far
    above every variant (a big model), as a note: a curve 30x higher would flatten the rest."""
    best = max((p.throughput for p in results.points if p.base == base and p.batch_size == batch
                and p.throughput is not None and _is_floor(results, p.model)), default=None)
    if best is None:
        return
    label = f"Python backend's floor (no model), {best:,.0f}/s"
    if best <= 5 * top:
        ax.axhline(best, color="black", linestyle=":", label=label)
    else:
        ax.text(0.98, 0.02, label + ": off the scale", transform=ax.transAxes, fontsize=7,
                ha="right", va="bottom", alpha=0.8)


def throughput_vs_concurrency(results: Results, base: str, path: Path) -> Path | None:
    series = _series(results, base)
    batches = sorted({b for _, _, b in series})
    if not batches:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.2), squeeze=False)
    for ax, b in zip(axes[0], batches, strict=True):
        top = 0.0
        for (model, inst, batch), pts in series.items():
            if batch == b:
                ax.plot([p.concurrency for p in pts], [p.throughput for p in pts], marker="o",
                        label=f"{_label(results, model)} ×{inst}")
                top = max([top] + [p.throughput for p in pts])
        _floor_line(ax, results, base, b, top)
        ceiling = analysis.best_ceiling(results, base, b)
        if ceiling:
            ax.axhline(ceiling["throughput"], color="grey", linestyle="--",
                       label=f"in-process ceiling ({ceiling['kind']},"
                             f" {ceiling['throughput']:.0f}/s)")
        if ceiling and ceiling["throughput"] > 5 * top:  # keep the served curves readable
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xscale("log", base=2)
        ticks = sorted({p.concurrency for (_, _, batch), pts in series.items() if batch == b
                        for p in pts})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        _label_axes(ax, "concurrency (requests in flight)", "throughput (inferences/s)",
                    f"{base}: throughput, batch {b}")
    return _save(fig, path)


def latency_vs_throughput(results: Results, base: str, path: Path) -> Path | None:
    series = _series(results, base)
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (model, inst, b), pts in series.items():
        ax.plot([p.throughput for p in pts], [p.get("p99_us", 0) / 1000 for p in pts],
                marker="o", label=f"{_label(results, model)} ×{inst} b{b}")
        for p in pts:
            ax.annotate(f"c{p.concurrency}", (p.throughput, p.get("p99_us", 0) / 1000),
                        fontsize=6, alpha=0.7, xytext=(3, 3), textcoords="offset points")
    _label_axes(ax, "throughput (inferences/s)", "p99 latency (ms)",
                f"{base}: p99 latency vs throughput")
    return _save(fig, path)


def throughput_vs_instances(results: Results, base: str, path: Path) -> Path | None:
    measured = [p for p in results.points if p.base == base and p.throughput is not None]
    if len({p.instances for p in measured}) < 2:
        return None
    batch = min(p.batch_size for p in measured)
    per_model = analysis.scaling(results, base, batch)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for model, per in sorted(per_model.items()):
        if _is_floor(results, model):
            continue
        xs = sorted(per)
        ax.plot(xs, [per[x] for x in xs], marker="o", label=_label(results, model))
    ax.set_xticks(sorted({p.instances for p in measured}))
    _label_axes(ax, "instances (Python interpreters / model copies)",
                "best throughput over concurrency (inferences/s)",
                f"{base}: throughput vs instances, batch {batch}")
    ax.set_ylim(bottom=0)
    return _save(fig, path)


def ceiling_ratio(results: Results, base: str, path: Path) -> Path | None:
    ratios = analysis.ceiling_ratios(results, base)
    if not ratios:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    labels = [f"{r.variant}\nbatch {r.batch_size}" for r in ratios]
    bars = ax.bar(labels, [r.ratio for r in ratios], color="tab:blue")
    for bar, r in zip(bars, ratios, strict=True):
        ax.annotate(f"{r.ratio:.2f}×", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.axhline(1.0, color="grey", linestyle="--", label="in-process ceiling")
    ax.set_ylabel("best served throughput / in-process ceiling")
    ax.set_title(f"{base}: served as a fraction of the ceiling")
    ax.set_ylim(0, max(1.1, max(r.ratio for r in ratios) * 1.15))
    ax.legend(fontsize=8)
    return _save(fig, path)


def memory_vs_throughput(results: Results, base: str, path: Path) -> Path | None:
    rows = analysis.memory_rows(results, base)
    served = [r for r in rows if r.variant != FLOOR and r.throughput]
    if not served:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for variant in sorted({r.variant for r in served}):
        own = sorted((r for r in served if r.variant == variant), key=lambda r: r.instances)
        xs = [r.memory / 2**20 for r in own]
        ax.plot(xs, [r.throughput for r in own], marker="o",
                label=f"{variant} ({own[0].measured_as})")
        for r, x in zip(own, xs, strict=True):
            ax.annotate(f"×{r.instances}", (x, r.throughput), fontsize=7, alpha=0.8,
                        xytext=(3, 3), textcoords="offset points")
    for r in rows:
        if r.variant == FLOOR:
            ax.axvline(r.memory / 2**20, color="black", linestyle=":", alpha=0.6,
                       label=f"Python backend's fixed cost ×{r.instances} (floor),"
                             f" {analysis.mib(r.memory)} MiB")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    _label_axes(ax, "memory attributable to the model (MiB)",
                "best throughput over concurrency (inferences/s)",
                f"{base}: memory vs throughput")
    return _save(fig, path)


PLOTS = (
    ("throughput_vs_concurrency", throughput_vs_concurrency, "Throughput vs concurrency"),
    ("latency_vs_throughput", latency_vs_throughput, "p99 latency vs throughput"),
    ("throughput_vs_instances", throughput_vs_instances, "Throughput vs instances"),
    ("ceiling_ratio", ceiling_ratio, "Served / in-process ceiling"),
    ("memory_vs_throughput", memory_vs_throughput, "Memory vs throughput"),
)


def write_plots(results: Results, base: str, out_dir: Path) -> list[tuple[str, Path]]:
    """Every plot that has data for ``base``: [(title, path)]."""
    made = []
    for stem, fn, title in PLOTS:
        path = fn(results, base, out_dir / f"{base}_{stem}.png")
        if path:
            made.append((title, path))
    return made


def _label_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


# The figure setup, axes and file writing of these plots, for the plots of later stages (tune).
pyplot, save_figure, label_axes = _pyplot, _save, _label_axes
