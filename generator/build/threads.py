"""Intra-op threads of a Python-backend variant, chosen by measurement at build time.

The offline check times the artifact's forward pass (in its fresh process, through the runtime
the server runs) at batch 1 and at the largest batch the dynamic batcher forms, with 1 … this
machine's share of cores threads. The fewest threads within ``TOLERANCE`` of the fastest win: on a
served instance every extra intra-op thread competes with the server, the client and the other
instances for the cores (a tiny model gains nothing from a second thread in-process, and loses
served), while a model that keeps getting faster (resnet) takes them all. The choice goes into the
config parameter ``measured_threads`` ("share" when the most threads measured won: the runtime then
takes the serving machine's share of its cores), the timings into gen_repo.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..spec import ModelSpec

TOLERANCE = 1.10  # more threads must be >10 % faster (mean over the batch sizes) to be chosen
SECONDS = 0.4  # per (threads, batch) setting, in two passes of 2 slices: the fastest counts
SHARE = "share"  # measured_threads when the most threads measured were the fastest


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    timings_ms: dict  # {threads: {batch: ms per forward pass}}

    def record(self) -> dict:
        return {"chosen": self.threads, "measured_threads": self.parameter,
                "timings_ms": self.timings_ms, "tolerance": TOLERANCE}

    def note(self) -> str:
        per = "; ".join(f"{t} thread(s): " + ", ".join(f"batch {b} {ms:.2f} ms"
                                                      for b, ms in row.items())
                        for t, row in self.timings_ms.items())
        what = ("all of the instance's share of cores" if self.parameter == SHARE else
                f"{self.threads} intra-op thread(s)")
        return f"threads by measurement: {what} ({per})"


def choose(timings_ms: dict) -> Choice:
    """The fewest threads whose forward pass is within TOLERANCE of the fastest, on average over
    the batch sizes (each batch size weighs the same: times are normalised by its fastest)."""
    counts = sorted(int(t) for t in timings_ms)
    rows = {t: {int(b): float(ms) for b, ms in timings_ms[str(t)].items()} for t in counts}
    batches = sorted(rows[counts[0]])
    fastest = {b: min(rows[t][b] for t in counts) for b in batches}
    cost = {t: sum(rows[t][b] / fastest[b] for b in batches) / len(batches) for t in counts}
    best = min(cost.values())
    chosen = next(t for t in counts if cost[t] <= best * TOLERANCE)
    parameter = SHARE if chosen == counts[-1] and len(counts) > 1 else str(chosen)
    return Choice(chosen, parameter, {str(t): {str(b): round(ms, 4) for b, ms in rows[t].items()}
                                      for t in counts})
