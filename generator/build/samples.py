"""Sample inputs and reference outputs: the evidence every check compares against.

Two cases are always made: ``a`` (stored for ``verify``) and ``b`` with another batch size and other
lengths for the dynamic axes (8 and 5, or --check-lengths), so a trace that baked in a shape or a
branch is caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import dtypes
from ..errors import SpecError
from ..spec import ModelSpec, TensorSpec

CASES = ("a", "b")
DEFAULT_LENGTHS = (8, 5)  # of every -1 axis in cases a and b, unless --check-lengths says
_BATCH = {"a": 4, "b": 3}


@dataclass
class Case:
    name: str
    batch: int  # 0 when the model has no batch dim
    inputs: dict[str, np.ndarray]  # as the served artifact takes them (TensorSpec.artifact_dims)


def case_lengths(spec: ModelSpec) -> dict[str, int]:
    """The length of every -1 axis in each sample case: --check-lengths, else 8 and 5."""
    return dict(zip(CASES, spec.check_lengths or DEFAULT_LENGTHS))


def case_batch(spec: ModelSpec, case: str) -> int:
    if not spec.batching:
        return 0
    want = _BATCH[case]
    if spec.max_batch_size >= want:
        return want
    return spec.max_batch_size if case == "a" else max(1, spec.max_batch_size - 1)


def random_tensor(t: TensorSpec, batch: int, dyn_len: int, rng: np.random.Generator) -> np.ndarray:
    """Random values shaped as the served artifact takes them (batch first, 0 = no batch)."""
    dims = t.artifact_dims(batching=bool(batch))
    shape = ([batch] if batch else []) + [dyn_len if d == -1 else d for d in dims]
    dt = dtypes.lookup(t.dtype)
    if dt.name == "bool":
        return rng.random(shape) < 0.7
    if np.issubdtype(dt.numpy, np.integer):
        return rng.integers(t.low, t.high, size=shape).astype(dt.numpy)
    return rng.standard_normal(shape).astype(dt.numpy)


def sized_case(spec: ModelSpec, name: str, batch: int, dyn_len: int,
               rng: np.random.Generator) -> Case:
    """Random inputs with ``batch`` rows (0: no batch dim) and every dynamic axis ``dyn_len``
    long: a point at which the output sizes are read (sizes.output_specs)."""
    return Case(name, batch, {t.name: random_tensor(t, batch, dyn_len, rng) for t in spec.inputs})


ENDS = ("low", "high")


def value_ends(spec: ModelSpec, base: Case) -> list[Case]:
    """Two cases shaped as ``base``'s first row (``base`` itself without batching) whose values
    lie at the ends of each input's range instead of at random (value_end, ENDS): an output whose
    size the values decide (detections above a score threshold, nonzero(), unique()) may have
    the same size at every random input and another one at these."""
    return [value_end(spec, base, end) for end in ENDS]


def value_end(spec: ModelSpec, base: Case, end: str) -> Case:
    """A case shaped as ``base``'s first row (``base`` itself without batching) whose every
    element lies at the ``end`` ("low" or "high") of its input's range: at the low end 0.0, the
    range's low bound, False; at the high end 100 times ``base``'s largest magnitude, the range's
    last value, True."""
    batch = 1 if base.batch else 0
    inputs = {}
    for t in spec.inputs:
        full = np.asarray(base.inputs[t.name])
        arr = full[:1] if batch else full
        if arr.dtype == np.bool_:
            value = end == "high"
        elif np.issubdtype(arr.dtype, np.integer):
            value = t.low if end == "low" else t.high - 1
        else:
            finite = np.abs(full[np.isfinite(full)])
            value = 0.0 if end == "low" else min(
                100.0 * max(float(finite.max(initial=0.0)), 1.0), _largest(arr.dtype) / 16)
        inputs[t.name] = np.full(arr.shape, value, dtype=arr.dtype)
    rows = "a batch of 1, " if batch else ""
    return Case(f"{rows}every input at the {end} end of its range", batch, inputs)


def _largest(dtype) -> float:
    try:
        return float(np.finfo(dtype).max)
    except (TypeError, ValueError):  # not a numpy float type
        return float(np.finfo(np.float16).max)


def varied_rows(spec: ModelSpec, base: Case, batch: int) -> Case:
    """A batch of ``batch`` rows shaped as ``base``'s rows, whose every input differs from row to
    row by construction -- random samples may repeat a flag or an id in every row, and a user's
    example inputs may be one request repeated (a mask of ones) -- so that a model reading a
    per-request value from one row and applying it to the whole batch answers the other rows
    differently than it answers them alone:

    - bool: both values in every row (with two elements or more), alternating along the row one
      by one, two by two, ..., and each row the negation of the one before (a per-row flag: True,
      False, True, ...);
    - int: each row shifted by a different part of the input's range [low, high), so the rows
      spread over it (a per-row id: one value per row);
    - float: ``base``'s rows shifted by offsets from -3 to +3 times their spread, so row 0 lies
      well below the last row (a per-row threshold falls between them).
    """
    offsets = np.linspace(-3.0, 3.0, batch)
    inputs = {}
    for t in spec.inputs:
        arr = np.asarray(base.inputs[t.name])
        row_shape, rows = arr.shape[1:], [arr[i % arr.shape[0]] for i in range(batch)]
        if arr.dtype == np.bool_:
            size = int(np.prod(row_shape, dtype=np.int64))
            r, j = np.arange(batch)[:, None], np.arange(size)[None, :]
            pattern = ((j >> (r // 2)) + r) % 2 == 0  # TFTF.., FTFT.., TTFF.., FFTT.., ...
            inputs[t.name] = pattern.reshape((batch, *row_shape))
        elif np.issubdtype(arr.dtype, np.integer):
            span = t.high - t.low
            first = (np.asarray(rows[0], np.int64) - t.low) % span
            step = max(1, span // batch)
            inputs[t.name] = np.stack([t.low + (first + r * step) % span
                                       for r in range(batch)]).astype(arr.dtype)
        else:
            values = np.stack(rows).astype(np.float64)
            finite = values[np.isfinite(values)]
            spread = float(finite.std()) if finite.size else 0.0
            spread = spread if spread > 0 else 1.0
            shift = (offsets * spread).reshape((batch,) + (1,) * len(row_shape))
            inputs[t.name] = (values + shift).astype(arr.dtype)
    return Case(f"{batch} varied rows", batch, inputs)


def resized(arrays: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Batch-first ``arrays`` with their rows repeated, then cut, to ``batch`` rows."""
    return {k: np.concatenate([a] * -(-batch // a.shape[0]))[:batch] for k, a in arrays.items()}


def make_cases(spec: ModelSpec) -> list[Case]:
    rng = np.random.default_rng(spec.seed)
    cases = []
    for c, length in case_lengths(spec).items():
        batch = case_batch(spec, c)
        cases.append(Case(c, batch, {t.name: random_tensor(t, batch, length, rng)
                                     for t in spec.inputs}))
    if spec.example_inputs:
        cases[0] = load_example_inputs(spec)
    return cases


def load_example_inputs(spec: ModelSpec) -> Case:
    path = Path(spec.example_inputs)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise SpecError(f"example inputs '{path}' could not be read as .npz: {e}.",
                        "Save them with numpy.savez(path, name1=array1, ...).") from e
    missing = [t.name for t in spec.inputs if t.name not in arrays]
    if missing:
        raise SpecError(f"example inputs '{path}' lack arrays for {missing} (has {sorted(arrays)}).",
                        "Name each array after its --input.")
    batch = 0
    served = {}
    for t in spec.inputs:
        arr = arrays[t.name]
        rank = len(t.dims) + (1 if spec.batching else 0)
        want = dtypes.lookup(t.dtype).numpy
        if arr.ndim != rank or arr.dtype != want:
            raise SpecError(f"example input '{t.name}' is {arr.dtype}{list(arr.shape)}; the spec"
                            f" says {t.dtype} with rank {rank}"
                            f"{' (batch first)' if spec.batching else ''}.",
                            "Match the --input spec or fix the array.")
        if spec.batching:
            batch = arr.shape[0]
            if batch > spec.max_batch_size:
                raise SpecError(f"example input '{t.name}' has batch {batch} >"
                                f" max_batch_size {spec.max_batch_size}.",
                                "Raise --max-batch-size or give a smaller batch.")
        if not t.dims:  # 0-d values, shaped as the served artifact takes them: [B] or [1]
            arr = arr.reshape(arr.shape[:rank] + t.artifact_dims(spec.batching))
        served[t.name] = arr
    return Case("a", batch, served)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
