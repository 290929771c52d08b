"""Model outputs: flatten tensors / tuples / lists / dicts (one level of nesting) into named outputs.

The flattening is expressed as accessor paths (``out["logits"]``, ``out[1][0]``) that a generated
wrapper module applies inside ``forward``; every variant serves that wrapper, so all variants expose
the same output names in the same order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import dtypes
from ..errors import ExportError
from ..spec import TensorSpec

SINGLE_OUTPUT = "output"


@dataclass(frozen=True)
class OutputPath:
    name: str
    path: tuple  # keys (str) or indices (int) from the model's return value to the tensor

    def accessor(self, root: str = "out") -> str:
        return root + "".join(f"[{k!r}]" if isinstance(k, str) else f"[{k}]" for k in self.path)


def _clean(key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", str(key))
    name = re.sub(r"_+", "_", name).strip("_") or "out"
    return name if name[0].isalpha() else f"out_{name}"


def output_paths(value) -> list[OutputPath]:
    """Walk a model's return value; raise ExportError for anything that is not tensors."""
    import torch

    def walk(v, path: tuple, depth: int):
        if isinstance(v, torch.Tensor):
            yield path
            return
        if depth >= 2:
            raise ExportError(
                f"model output at {path!r} is nested more than one level deep.",
                "Return a tensor, a tuple/list/dict of tensors, or one more level of"
                " tuples/dicts; flatten deeper structures in a wrapper module.")
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    raise ExportError(f"model output dict key {k!r} is not a string.",
                                      "Use string keys: they become the output names.")
                yield from walk(v[k], path + (k,), depth + 1)
        elif isinstance(v, (tuple, list)):
            if not v:
                raise ExportError("model returned an empty tuple/list.", "Return tensors.")
            for i, item in enumerate(v):
                yield from walk(item, path + (i,), depth + 1)
        else:
            raise ExportError(
                f"model output at {path!r} is a {type(v).__name__}, not a tensor.",
                "Triton serves tensors only: return tensors (or tuples/dicts of tensors).")

    paths = list(walk(value, (), 0))
    if paths == [()]:
        return [OutputPath(SINGLE_OUTPUT, ())]
    names: list[str] = []
    for p in paths:
        parts = [(_clean(k) if isinstance(k, str) else str(k)) for k in p]
        if isinstance(p[0], int):
            parts = [SINGLE_OUTPUT] + parts
        name = "_".join(parts)
        base, n = name, 1
        while name in names:  # keys that clean to the same name
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return [OutputPath(n, p) for n, p in zip(names, paths)]


def flat_outputs(value, paths: list[OutputPath]) -> list:
    out = []
    for p in paths:
        v = value
        for k in p.path:
            v = v[k]
        out.append(v)
    return out


@dataclass
class Point:
    """One run of the eager model at which the output sizes are read."""

    label: str  # "sample case a", "a batch of 1, length 8"
    batch: int  # rows of the batch (0: no batching)
    length: int | None  # every dynamic input axis's length (None: as the case has it)
    model: list  # the flat outputs as the model returns them (the batch at --batch-axis)
    served: list | None = None  # the same, batch-first as served (once their ranks agree)


SQUEEZE_BATCH_TIP = (
    "squeeze() with no dim drops the batch axis when a batch has one row: use squeeze(-1) (or"
    " squeeze(dim) with the axis meant), or build with --max-batch-size 0 and the batch axis in"
    " the input dims.")
SQUEEZE_LENGTH_TIP = (
    "A squeeze() drops the axes of size 1 it is given (all of them with no dim): squeeze only an"
    " axis that is 1 at every length, e.g. squeeze(-1); or give the input a fixed length in its"
    " --input dims.")


def _shape(t) -> list[int]:
    return list(t.shape)


def check_ranks(points: list[Point], paths: list[OutputPath], batching: bool) -> None:
    """Refuse an output whose rank is not the same at every point: no config can declare it, and
    a request like the odd point would get a wrongly shaped answer. ``points[0]`` is a sample
    case, whose rank is the one the model is built with."""
    for k, p in enumerate(paths):
        ref = points[0]
        rank = len(ref.model[k].shape)
        odd = next((q for q in points if len(q.model[k].shape) != rank), None)
        if odd is None:
            continue
        shapes = (f"shape {_shape(odd.model[k])} for {odd.label}, {_shape(ref.model[k])} for"
                  f" {ref.label}")
        if len(odd.model[k].shape) < rank and batching and odd.batch == 1:
            raise ExportError(
                f"output '{p.name}' loses its batch axis for a batch of one row: {shapes}."
                " Triton splits a merged batch's outputs by their first axis and declares one"
                " rank per output, so a one-row request would be answered with a wrong shape.",
                SQUEEZE_BATCH_TIP)
        if len(odd.model[k].shape) < rank and odd.length == 1:
            raise ExportError(
                f"output '{p.name}' loses an axis at length 1: {shapes}. Triton declares one"
                " rank per output, so a request of length 1 would be answered with a wrong"
                " shape.", SQUEEZE_LENGTH_TIP)
        raise ExportError(f"output '{p.name}' changes rank between inputs: {shapes}.",
                          "Triton needs a fixed rank per output.")


def infer_output_specs(points: list[Point], paths: list[OutputPath],
                       batching: bool) -> tuple[TensorSpec, ...]:
    """Output specs from runs at several batch sizes and dynamic lengths (``points``, served
    shapes filled in, ranks checked by check_ranks).

    An axis is fixed only if it has the same size, not 0, at every point; else it is dynamic
    (-1). With batching, axis 0 must be the batch axis at every point.
    """
    specs = []
    for k, p in enumerate(paths):
        first = points[0].served[k]
        try:
            dt = dtypes.from_torch(first.dtype)
        except KeyError as e:
            raise ExportError(f"output '{p.name}' has dtype {first.dtype}, which Triton cannot"
                              " serve.", "Cast it in the model, e.g. to float32.") from e
        shapes = [tuple(q.served[k].shape) for q in points]
        if len({len(s) for s in shapes}) > 1:  # check_ranks refuses it first
            raise ExportError(f"output '{p.name}' changes rank between inputs"
                              f" ({' vs '.join(map(str, shapes))}).",
                              "Triton needs a fixed rank per output.")
        if batching:
            for q, shape in zip(points, shapes):
                if not shape or shape[0] != q.batch:
                    raise ExportError(
                        f"output '{p.name}' has shape {shape} for a batch of {q.batch}"
                        f" ({q.label}): its first axis is not the batch axis.",
                        "Serve the model without Triton batching (--max-batch-size 0) or return"
                        " outputs with the batch first.")
            shapes = [s[1:] for s in shapes]
        dims = tuple(sizes.pop() if len(sizes) == 1 and 0 not in sizes else -1
                     for sizes in map(set, zip(*shapes)))
        specs.append(TensorSpec(p.name, dt.name, dims))
    return tuple(specs)
