"""Output sizes read at more points than the two sample cases, before any axis is declared fixed.

The sample cases (batch 4 length 8, batch 3 length 5) agree on sizes that are not fixed: a front
end that keeps every 4th frame has ceil(T/4) = 2 frames at both lengths, ``topk(min(4, N))`` has
4 columns at both, and ``squeeze()`` keeps the batch axis for both batch sizes and drops it for a
one-row batch. A config that declared those sizes would have the server answer other shapes than
its own metadata. So the eager model is also run at batch 1 and max_batch_size, and at lengths
1, 2, 7, 13 and 32 of its dynamic axes (with --check-lengths: lengths co-prime to the two given,
from the shorter one up), within a time budget: an axis is fixed only if it has the same size at
every point. Two more points follow the first three, at the sample's shape (one row of it):
every input at the low end of its range, then at the high end (samples.value_ends), because a
size the values decide (a detector's boxes above its score threshold, nonzero()) can be the same
at every random input. An axis of size 0 at any point is never fixed: an empty axis is a count
that the values decide (random weights detect nothing). A point the model cannot take (a length
too short for an STFT, say) is skipped with a note. Beyond the first five points, a point whose
forward pass would take the passes past BUDGET_S (at the rate of those run) is skipped with a
note too.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from ..errors import ExportError, cause_line
from ..spec import ModelSpec, TensorSpec
from .outputs import OutputPath, Point, check_ranks, flat_outputs, infer_output_specs
from .samples import ENDS, Case, case_lengths, sized_case, value_ends

LENGTHS = (1, 7, 13, 2, 32)  # the shortest, co-prime to the sample lengths 8 and 5, a longer one
BUDGET_S = 10.0  # forward passes beyond the sample cases, at most (predicted from those run)
FIRST = 3  # the points of _plan run whatever they cost (batch 1, lengths 1 and 7) ...
ALWAYS = FIRST + len(ENDS)  # ... and the value ends after them


def probe_lengths(spec: ModelSpec) -> tuple[int, ...]:
    """Lengths of the dynamic axes at the points beyond the sample cases, the longest last:
    LENGTHS for the default sample lengths; with --check-lengths (a model that may take nothing
    shorter than the shorter one), lengths co-prime to both given ones, all above the shorter:
    just above it, just above the longer, between them, and about twice the longer."""
    if not spec.check_lengths:
        return LENGTHS
    low, high = sorted(spec.check_lengths)
    picked: list[int] = []
    for start in (low + 1, high + 1, (low + high) // 2, low + 2, 2 * high):
        n = start
        while n in picked or math.gcd(n, low) != 1 or math.gcd(n, high) != 1:
            n += 1
        picked.append(n)
    return tuple(picked)


def _label(batch: int, length: int | None) -> str:
    parts = ([f"a batch of {batch}"] if batch else []) \
        + ([f"length {length}"] if length is not None else [])
    return ", ".join(parts)


def _plan(spec: ModelSpec, cases: list[Case]) -> list[tuple[int, int | None]]:
    """(batch, length) of each point beyond the sample cases, most telling first."""
    dynamic = any(-1 in t.dims for t in spec.inputs)
    sampled = {c.batch for c in cases}
    sample_len = case_lengths(spec)
    lengths = probe_lengths(spec)
    plan: list[tuple[int, int | None]] = []
    if spec.batching and 1 not in sampled:
        plan.append((1, sample_len["a"] if dynamic else None))
    if dynamic:
        batch = min(2, spec.max_batch_size) if spec.batching else 0
        plan += [(batch, n) for n in lengths[:-1]]
    if spec.batching and spec.max_batch_size not in sampled | {1}:
        plan.append((spec.max_batch_size, sample_len["b"] if dynamic else None))
    if dynamic:
        plan.append((batch, lengths[-1]))
    return plan


def output_specs(run: Callable[[Case], list], serve: Callable[[list], list], spec: ModelSpec,
                 cases: list[Case], raw: dict, paths: list[OutputPath],
                 budget_s: float = BUDGET_S) -> tuple[tuple[TensorSpec, ...], list[str]]:
    """The outputs' specs from the sample cases' raw outputs (``raw``) and the points of _plan;
    and notes on the points skipped.

    ``run(case)`` gives the flat outputs as the model returns them, from the state as loaded;
    ``serve(flat)`` makes them batch-first as served.
    """
    points = [Point(f"sample case {c.name}" + (f" ({_label(c.batch, None)})" if c.batch else ""),
                    c.batch, None, flat_outputs(raw[c.name], paths)) for c in cases]
    rng = np.random.default_rng(spec.seed + 1)
    failed: list[str] = []
    unprobed: list[str] = []
    spent, units_run = 0.0, 0.0
    planned = [(_label(batch, length), batch, length, None) for batch, length in _plan(spec, cases)]
    planned[FIRST:FIRST] = [(c.name, c.batch, None, c) for c in value_ends(spec, cases[0])]
    for i, (label, batch, length, case) in enumerate(planned):
        units = max(batch, 1) * (length or 1)
        if i >= ALWAYS and spent + spent / units_run * units > budget_s:
            unprobed.append(label)
            continue
        if case is None:  # length None: no -1 axis
            case = sized_case(spec, label, batch, length or 1, rng)
        started = time.perf_counter()
        try:
            model = run(case)
        except ExportError as e:
            failed.append(f"{label} ({cause_line(e)})")
            continue
        except (KeyError, IndexError, TypeError) as e:
            raise ExportError(f"the model's output structure changes between inputs: at"
                              f" {label} {e}.",
                              "Return the same tuple/dict keys for every input.") from e
        finally:
            spent += time.perf_counter() - started
            units_run += units
        points.append(Point(label, batch, length, model))
    check_ranks(points, paths, spec.batching)
    for p in points:
        p.served = serve(p.model)
    notes = []
    if failed:
        notes.append(f"output sizes: the model fails on {'; on '.join(failed)}: those points"
                     " were not probed, and requests like them would fail on the server too")
    if unprobed:
        notes.append(f"output sizes were not probed at {'; '.join(unprobed)} (the forward passes"
                     f" would take more than {budget_s:g} s): an axis whose size was the same at"
                     " every point probed is declared fixed")
    return infer_output_specs(points, paths, spec.batching), notes
