"""Does the model treat a batch the way Triton does: batch-first tensors of independent rows?

Triton's dynamic batcher concatenates the rows of several requests into one batch and splits the
outputs back along the first axis. That is only right for a model whose every output is a
batch-first tensor and whose row ``i`` depends on input row ``i`` alone. Two kinds of models break
it, and a build that said OK for them would serve wrong answers, so both are refused here, on the
eager model, before any variant is exported:

- one result per row (torchvision detection models called on a batch return a list of one dict per
  image): there is no batch-first tensor to split;
- rows that depend on each other (centring or normalising over the batch, batch statistics, a
  softmax over the batch axis, a per-request flag or id read from row 0 and applied to every
  row): a client's answer would change with the requests it is merged with.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ExportError, cause_line
from ..repository.compare import compare
from ..runtime.model import to_numpy
from .samples import ENDS, Case, value_end, varied_rows
from ..spec import ModelSpec

def per_item_tip(spec: ModelSpec) -> str:
    """The routes that serve a model returning one result per row: one image per request
    (tried on torchvision's detectors: served right over HTTP and gRPC), or a wrapper."""
    t = spec.inputs[0]
    one = f"{t.name}:{t.dtype}:{'x'.join(map(str, (1, *t.dims)))}"
    return ("Serve one image per request: build with --max-batch-size 0 and a batch of exactly one"
            f" in the input dims (--input {one}): the model then returns one result per request,"
            " whose tensors are served as its outputs (boxes [-1, 4]: the count may differ per"
            " request). To keep batching, build a wrapper that stacks the per-image results into"
            " batch-first tensors (padding variable counts). Example: docs/model-shapes.md.")


def check_per_item(raw: dict, cases: list[Case], spec: ModelSpec) -> None:
    """Refuse a model that returns a list (or tuple) with one item per row of the batch."""
    if not spec.batching or len({c.batch for c in cases}) < 2:
        return  # one batch size: a list as long as the batch is indistinguishable from a tuple
    values = [raw[c.name] for c in cases]
    if not all(isinstance(v, (list, tuple)) and len(v) == c.batch for v, c in zip(values, cases)):
        return
    first = values[0][0]
    item = (f"a dict of {', '.join(map(str, first))}" if isinstance(first, dict)
            else type(first).__name__)
    sizes = " and ".join(f"{len(v)} for a batch of {c.batch}" for v, c in zip(values, cases))
    raise ExportError(
        f"the model returns one result per image (per row of the batch): a"
        f" {type(values[0]).__name__} of {sizes}, each {item}. Triton batches batch-first"
        " tensors and splits them back by rows, so it cannot serve a list that grows with the"
        " batch.", per_item_tip(spec))


PROBE_ROWS = 4  # rows of the batch whose every input differs from row to row


def check_rows_independent(run: Callable[[Case], list], batched: dict[str, list], cases: list[Case],
                           names: list[str], spec: ModelSpec, model=None) -> list[str]:
    """Run each row of a batch alone and compare it with its row of the batched run; return notes.

    ``run(case)`` gives the flat, served (batch-first) outputs for ``case``; ``batched`` holds
    them for every case already. Compared row by row: every sample case of 2 rows or more (the
    served references are their rows, and verify sends each row alone: kernels may round alike
    at batches of 3 and 1 and not at 4 and 1), and a batch of up to PROBE_ROWS rows whose every
    input differs from row to row by construction (samples.varied_rows) -- sample rows may agree
    on a flag or an id, and a model that reads it from one row and applies it to the whole batch
    would pass; and the smallest case's row 0 beside rows whose every input lies at an end of its
    range (_compare_beside_ends). This costs one forward pass per row of each, one for the varied
    batch and four for the ends.
    Within the parity tolerances: rows may legitimately differ a little with the batch size
    (BLAS kernels round differently). Raises ExportError when a row depends on the others, naming dynamic
    quantization as the cause when ``model`` (the eager model) has dynamically quantized modules.
    """
    usable = [c for c in cases if c.batch >= 2]
    if not spec.batching or not usable:
        return []
    cause = _mixing_cause(model, spec)
    case, *others = sorted(usable, key=lambda c: c.batch)
    _compare_rows(run, case, batched[case.name], f"sample case {case.name}", names, spec, cause)
    probe = varied_rows(spec, case, min(PROBE_ROWS, spec.max_batch_size))
    what = (f"a batch whose rows differ in every input ({_described(probe, spec)})")
    notes = []
    try:
        together = run(probe)
    except ExportError as e:
        notes.append(f"rows run alone were compared with the sample cases only: the model"
                     f" fails on {what}: {cause_line(e)}")
    else:
        _compare_rows(run, probe, together, what, names, spec, cause)
    notes += _compare_beside_ends(run, case, batched[case.name], names, spec, cause)
    for other in others:  # last: the varied batch names a coupling more plainly
        _compare_rows(run, other, batched[other.name], f"sample case {other.name}", names, spec,
                      cause)
    return notes


DYNAMIC_QUANTIZED = ("torch.ao.nn.quantized.dynamic", "torch.nn.quantized.dynamic")


def dynamically_quantized(model) -> list[str]:
    """The names of ``model``'s dynamically quantized modules (what
    torch.ao.quantization.quantize_dynamic puts in place of Linear, LSTM, GRU...)."""
    return [f"{name or 'the model'} ({type(m).__name__})" for name, m in model.named_modules()
            if type(m).__module__.startswith(DYNAMIC_QUANTIZED)]


def _mixing_cause(model, spec: ModelSpec) -> tuple[str, str]:
    """(why a model's rows depend on each other, the route that serves it): dynamic quantization
    when the model has dynamically quantized modules, else the usual ways a model mixes rows."""
    unbatched = ("Build with --max-batch-size 0 so that each request is one call of the model on"
                 " exactly the rows the client sends, with the batch axis in the input dims"
                 f" ({_unbatched_example(spec)})")
    dynamic = dynamically_quantized(model) if model is not None else []
    if dynamic:
        shown = ", ".join(dynamic[:3]) + (f" and {len(dynamic) - 3} more" if len(dynamic) > 3
                                          else "")
        return (f"The model is dynamically quantized (torch.ao.quantization.quantize_dynamic:"
                f" {shown}): each such layer quantizes its input with a scale read from the whole"
                " batch it is given, so a row's answer depends on its batch-mates.",
                f"{unbatched}: a client's answer then depends on its own rows only. Or quantize"
                " statically (torch.ao.quantization with calibration data: fixed scales), or"
                " serve the model unquantized; both keep rows independent, and batching.")
    return ("The model mixes the batch (e.g. it centres or normalises over dim 0, uses batch"
            " statistics, or a softmax over the batch axis), applies one row's value to every"
            " row (e.g. if bool(flag[0]), table[ids[0]]), or decides for the whole batch from"
            " the values of all its rows (e.g. if x.abs().max() > limit).",
            f"{unbatched}; or make each row's output depend on its own row only.")


def _compare_rows(run: Callable[[Case], list], case: Case, batched: list, what: str,
                  names: list[str], spec: ModelSpec, cause: tuple[str, str]) -> None:
    for i in range(case.batch):
        row = Case(f"{case.name}[{i}]", 1, {k: v[i:i + 1] for k, v in case.inputs.items()})
        try:
            alone = run(row)
        except ExportError as e:
            raise ExportError(
                f"the model fails on a batch of one row (row {i} of {what} alone):"
                f" {cause_line(e, 300)}. Triton hands the model batches of"
                f" any size from 1 to max_batch_size ({spec.max_batch_size}).",
                "Make the model work on a single row, or build with --max-batch-size 0 and the"
                " batch axis in the input dims.") from e
        got = {n: to_numpy(a) for n, a in zip(names, alone)}
        want = {n: to_numpy(b[i:i + 1]) for n, b in zip(names, batched)}
        result = compare(got, want, spec.atol, spec.rtol)
        if not result.ok:
            _refuse_batch_size_dependence(run, case, i, want, what, names, spec, result)
            raise _depending(f"row {i} of {what} run alone is answered differently than inside"
                             f" its batch of {case.batch} ({result.summary()})", cause)


def _compare_beside_ends(run: Callable[[Case], list], case: Case, batched: list,
                         names: list[str], spec: ModelSpec, cause: tuple[str, str]) -> list[str]:
    """For each end of the inputs' ranges, a batch of ``case``'s row 0 and rows whose every input
    lies at that end (samples.value_end), against ``case`` itself and a batch of copies of the
    end row, all of ``case``'s size (no batch-size rounding between them): a model that decides
    for the whole batch from the values of its rows (if x.abs().max() > limit: any row decides;
    if mask.all(): every row does) answers row 0 or the end rows differently in the mix, though
    random rows and rows shifted by a few spreads stay on one side of its limit. Raises
    ExportError then; returns notes where the model fails on such rows."""
    notes = []
    for end in ENDS:
        row = value_end(spec, case, end)
        copies = Case(f"{row.name} x{case.batch}", case.batch,
                      {k: np.repeat(v, case.batch, axis=0) for k, v in row.inputs.items()})
        mixed = Case(f"{case.name} row 0 and {row.name}", case.batch,
                     {k: np.concatenate([v[:1], copies.inputs[k][1:]])
                      for k, v in case.inputs.items()})
        ends = f"rows whose every input lies at the {end} end of its range ({_values(row, spec)})"
        try:
            alike, together = run(copies), run(mixed)
        except ExportError as e:
            notes.append(f"rows were not compared beside {ends}: the model fails on them:"
                         f" {cause_line(e)}")
            continue
        first_row = compare({n: to_numpy(a[:1]) for n, a in zip(names, together)},
                            {n: to_numpy(b[:1]) for n, b in zip(names, batched)},
                            spec.atol, spec.rtol)
        if not first_row.ok:
            raise _depending(
                f"row 0 of sample case {case.name} is answered differently beside {ends} than"
                f" inside its own batch of {case.batch} ({first_row.summary()})", cause)
        end_rows = compare({n: to_numpy(a[1:]) for n, a in zip(names, together)},
                           {n: to_numpy(b[1:]) for n, b in zip(names, alike)},
                           spec.atol, spec.rtol)
        if not end_rows.ok:
            raise _depending(
                f"{ends} are answered differently beside row 0 of sample case {case.name} than"
                f" in a batch of {case.batch} copies ({end_rows.summary()})", cause)
    return notes


def _depending(finding: str, cause: tuple[str, str]) -> ExportError:
    return ExportError(
        f"rows of a batch depend on each other: {finding}. Triton's dynamic batcher merges the"
        " requests of different clients into one batch, so each client's answer would depend on"
        f" the others' rows. {cause[0]}", cause[1])


def _values(row: Case, spec: ModelSpec) -> str:
    """Each input's one value in ``row`` (samples.value_end fills each input with one)."""
    parts = []
    for t in spec.inputs:
        value = np.asarray(row.inputs[t.name]).flat[0]
        shown = (bool(value) if isinstance(value, np.bool_) else int(value)
                 if np.issubdtype(type(value), np.integer) else f"{float(value):.4g}")
        parts.append(f"{t.name} = {shown}")
    return ", ".join(parts)


ROUNDING_REL = 1e-2  # a relative difference below this, at most, can be rounding


def _refuse_batch_size_dependence(run: Callable[[Case], list], case: Case, i: int, want: dict,
                                  what: str, names: list[str], spec: ModelSpec, result) -> None:
    """Row ``i`` of ``case`` differs alone from inside the batch: raise ExportError when it is
    answered the same inside a batch of as many copies of itself (then its answer depends on the
    batch size, not on the other rows -- kernels that round differently per batch size, or code
    that tests the batch size); return when not (the rows are coupled)."""
    copies = Case(f"{case.name} (row {i} x{case.batch})", case.batch,
                  {k: np.repeat(v[i:i + 1], case.batch, axis=0) for k, v in case.inputs.items()})
    try:
        twin = run(copies)
    except ExportError:
        return
    same = compare({n: to_numpy(t[:1]) for n, t in zip(names, twin)}, want, 0.0, 1e-6)
    if not same.ok:
        return
    rel = max((m.max_rel for m in result.mismatches), default=0.0)
    largest = max((float(np.abs(a).max()) for a in want.values()
                   if a.size and np.issubdtype(a.dtype, np.floating)), default=0.0)
    unbatched = (f"build with --max-batch-size 0 (the batch axis in the input dims,"
                 f" {_unbatched_example(spec)}): each request is then one call on exactly the"
                 " rows its client sends")
    if 0 < rel <= ROUNDING_REL:
        rtol = 10.0 ** (np.ceil(np.log10(rel)) + 1)  # rounding varies with the inputs
        tip = (f"It is the size of float rounding (at most {rel:.1e} of a value here; values up"
               f" to {largest:.3g}): if that is close enough, build with --rtol {rtol:g} (ten"
               f" times that, as rounding varies with the inputs). Otherwise {unbatched}.")
    else:
        tip = f"Make the answer independent of the batch size, or {unbatched}."
    raise ExportError(
        f"row {i} of {what} is answered differently alone than inside its batch of"
        f" {case.batch} ({result.summary()}), but the same inside a batch of {case.batch} copies"
        " of itself: its answer changes with the batch size, not with the other rows. Kernels"
        " that round differently per batch size do this (at large values the rounding exceeds"
        " the tolerances), and so does code that tests x.shape[0]. Triton's dynamic batcher"
        f" forms batches of every size from 1 to max_batch_size ({spec.max_batch_size}), so a"
        " client's answer would change with the load.", tip)


def _described(case: Case, spec: ModelSpec) -> str:
    """How the varied rows differ, input by input: a per-row value's values, else what varies."""
    parts = []
    for t in spec.inputs:
        arr = case.inputs[t.name]
        if arr.ndim == 1:  # one value per row
            values = [bool(v) if arr.dtype == bool else round(float(v), 2)
                      if np.issubdtype(arr.dtype, np.floating) else int(v) for v in arr]
            parts.append(f"{t.name} {values}")
        elif arr.dtype == bool:
            parts.append(f"{t.name} alternating")
        elif np.issubdtype(arr.dtype, np.integer):
            parts.append(f"{t.name} spread over {t.low}..{t.high}")
        else:
            parts.append(f"{t.name} shifted from row to row")
    return "; ".join(parts)


def _unbatched_example(spec: ModelSpec) -> str:
    t = spec.inputs[0]
    dims = "x".join(map(str, (-1, *t.dims)))
    return f"e.g. --input {t.name}:{t.dtype}:{dims} for {t}"
