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


def infer_output_specs(flat_a: list, flat_b: list, paths: list[OutputPath], batch_a: int,
                       batch_b: int, batching: bool) -> tuple[TensorSpec, ...]:
    """Output specs from two runs with different batch sizes / dynamic lengths.

    An axis whose size differs between the two runs is dynamic (-1). With batching, axis 0 must be
    the batch axis in both runs.
    """
    specs = []
    for p, a, b in zip(paths, flat_a, flat_b):
        try:
            dt = dtypes.from_torch(a.dtype)
        except KeyError as e:
            raise ExportError(f"output '{p.name}' has dtype {a.dtype}, which Triton cannot serve.",
                              "Cast it in the model, e.g. to float32.") from e
        shape_a, shape_b = tuple(a.shape), tuple(b.shape)
        if len(shape_a) != len(shape_b):
            raise ExportError(f"output '{p.name}' changes rank between inputs ({shape_a} vs"
                              f" {shape_b}).", "Triton needs a fixed rank per output.")
        if batching:
            if not shape_a or shape_a[0] != batch_a or shape_b[0] != batch_b:
                raise ExportError(
                    f"output '{p.name}' has shape {shape_a} for a batch of {batch_a}: its first"
                    " axis is not the batch axis.",
                    "Serve the model without Triton batching (--max-batch-size 0) or return"
                    " outputs with the batch first.")
            shape_a, shape_b = shape_a[1:], shape_b[1:]
        dims = tuple(x if x == y else -1 for x, y in zip(shape_a, shape_b))
        specs.append(TensorSpec(p.name, dt.name, dims))
    return tuple(specs)
