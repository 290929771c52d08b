"""How a Python-backend variant runs its forward pass -- intra-op threads and, for an eager model
with 2-D convolutions, the weights' memory layout -- chosen by measurement at build time.

The offline check times the artifact's forward pass (in its fresh process, through the runtime
the server runs) at batch 1 and at the largest batch the dynamic batcher forms, with 1 … this
machine's share of cores threads, and for an eager conv net also with its weights in
channels_last layout (oneDNN's CPU convolutions run faster on it; its answers are checked against
eager like the artifact's own). The simplest setting within ``TOLERANCE`` of the fastest wins --
fewest threads first, then the default layout: on a served instance every extra intra-op thread
competes with the server, the client and the other instances for the cores (a tiny model gains
nothing from a second thread in-process, and loses served), while a model that keeps getting
faster (resnet) takes them all. The choice goes into the config parameters ``measured_threads``
("share" when the most threads measured won: the runtime then takes the serving machine's share
of its cores) and ``memory_format``; the timings into gen_repo.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..machine import cores
from ..runtime.model import CHANNELS_LAST, MEASURED_THREADS, MEMORY_FORMAT
from ..spec import ModelSpec

TOLERANCE = 1.10  # a more complex setting must be >10 % faster (mean over the batch sizes)
SECONDS = 0.25  # per (layout, threads, batch) setting, in three passes: the fastest slice counts
SHARE = "share"  # measured_threads when the most threads measured were the fastest
CONTIGUOUS = "contiguous"


def plan(spec: ModelSpec) -> dict | None:
    """What to time for ``spec`` (thread counts, batch sizes, seconds each), or None when the user
    chose the threads (--threads) or there is nothing to choose from."""
    if spec.threads or not spec.cpu_instances:
        return None
    share = max(1, cores() // spec.cpu_instances)
    batches = sorted({1, spec.max_batch_size}) if spec.batching and spec.dynamic_batching else [1]
    return {"threads": list(range(1, share + 1)), "batch_sizes": batches, "seconds": SECONDS}


@dataclass(frozen=True)
class Choice:
    threads: int  # the thread count chosen
    parameter: str  # what measured_threads says: a number, or "share"
    memory_format: str  # contiguous | channels_last
    timings_ms: dict  # {memory format: {threads: {batch: ms per forward pass}}}

    @property
    def parameters(self) -> dict[str, str]:
        """The config parameters that carry the choice."""
        out = {MEASURED_THREADS: self.parameter}
        if self.memory_format == CHANNELS_LAST:
            out[MEMORY_FORMAT] = CHANNELS_LAST
        return out

    def record(self) -> dict:
        return {"chosen": self.threads, "measured_threads": self.parameter,
                "memory_format": self.memory_format, "timings_ms": self.timings_ms,
                "tolerance": TOLERANCE}

    def note(self) -> str:
        per = "; ".join(f"{fmt}, {t} thread(s): " + ", ".join(
            f"batch {b} {ms:.2f} ms" for b, ms in row.items())
            for fmt, rows in self.timings_ms.items() for t, row in rows.items())
        what = ("all of the instance's share of cores" if self.parameter == SHARE else
                f"{self.threads} intra-op thread(s)")
        if self.memory_format == CHANNELS_LAST:
            what += ", weights in channels_last layout"
        return f"forward pass set by measurement: {what} ({per})"


def choose(timings_ms: dict) -> Choice:
    """The simplest setting whose forward pass is within TOLERANCE of the fastest, on average over
    the batch sizes (each batch size weighs the same: times are normalised by its fastest)."""
    rows = {(fmt, int(t)): {int(b): float(ms) for b, ms in per.items()}
            for fmt, by_threads in timings_ms.items() for t, per in by_threads.items()}
    batches = sorted(next(iter(rows.values())))
    fastest = {b: min(r[b] for r in rows.values()) for b in batches}
    cost = {k: sum(r[b] / fastest[b] for b in batches) / len(batches) for k, r in rows.items()}
    best = min(cost.values())
    simplest = sorted(rows, key=lambda k: (k[1], k[0] != CONTIGUOUS))
    fmt, chosen = next(k for k in simplest if cost[k] <= best * TOLERANCE)
    counts = sorted({t for _, t in rows})
    parameter = SHARE if chosen == counts[-1] and len(counts) > 1 else str(chosen)
    return Choice(chosen, parameter, fmt, {
        f: {str(t): {str(b): round(ms, 4) for b, ms in rows[(f, t)].items()}
            for (f2, t) in sorted(rows) if f2 == f}
        for f in timings_ms})
