"""Why ``torch.export`` could not make one graph of a model, in words that name the cause, the line
of the model's code it comes from, and the route that works — never the exporter's own dump.

Causes told apart: a branch or a size that depends on the values of the inputs (a guard on a
data-dependent value), a call that leaves torch (NumPy, ``.item()`` into Python code), an
operation the exporter does not support, and an axis declared dynamic that the model's code
fixes to the sample's size (the export succeeds, with that axis fixed: ``fixed_axes``).
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

from ..errors import ExportError

ROUTE_EAGER = ("the python variant serves the eager model as it is (--variants python), and"
               " python-ts the TorchScript one where the libtorch variant was built")
_RAISED_AT = re.compile(r'The following call raised this error:\s*\n\s*File "([^"]+)", line (\d+),'
                        r' in \w+\n\s*(.+)')
_CAUSED_BY = re.compile(r"Caused by: \(?(\S+):(\d+) in \w+\)?")


def _library(path: str) -> bool:
    parts = Path(path).parts
    return "site-packages" in parts or "dist-packages" in parts or "torch" in parts \
        or path.startswith("<")


def user_line(e: BaseException) -> str | None:
    """``file:line `code``` of the model's own code where the exporter stopped, when it says."""
    text = str(e)
    found = _RAISED_AT.search(text)
    if found:
        return f"{found.group(1)}:{found.group(2)} `{found.group(3).strip()}`"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not _library(f.filename)
              and "generator" not in Path(f.filename).parts]
    if frames:
        f = frames[-1]
        return f"{f.filename}:{f.lineno} `{(f.line or '').strip()}`"
    found = _CAUSED_BY.search(text)
    if found and not _library(found.group(1)):
        return f"{found.group(1)}:{found.group(2)}"
    return None


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__


def export_failure(e: BaseException) -> ExportError:
    """The refusal for an exception out of ``torch.export.export``."""
    name = type(e).__name__
    text = str(e)
    where = user_line(e)
    at = f" at {where}" if where else ""
    if "DataDependent" in name or "data-dependent" in text:
        return ExportError(
            f"torch.export cannot make one graph of the model: forward() branches on, or sizes a"
            f" tensor by, the values of its inputs{at}; an exported graph must hold for every"
            f" input, and this line needs the values ({name}).",
            "Rewrite that line with torch.cond (a branch) or torch._check (a size the values"
            f" decide), or serve the model without export: {ROUTE_EAGER}.")
    if ".numpy()" in text or "numpy" in text.lower():
        return ExportError(
            f"torch.export cannot follow forward() out of torch{at}: it converts a tensor to"
            " NumPy, which an exported graph cannot hold.",
            f"Compute it with torch operations, or serve the model without export: {ROUTE_EAGER}.")
    if "Unsupported" in name or "not supported" in text or "unsupported" in text.lower():
        return ExportError(
            f"torch.export does not support an operation of forward(){at}: {_first_line(e)}",
            f"Replace that operation with one torch.export supports, or serve the model without"
            f" export: {ROUTE_EAGER}.")
    return ExportError(
        f"torch.export failed{at}: {name}: {_first_line(e)}",
        f"torch.export needs one graph for every input; {ROUTE_EAGER}.")


def fixed_axes(program, dynamic_shapes, names: list[str]) -> list[str]:
    """``input axis N (size S)`` for each axis asked dynamic that the exported program fixed."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    fixed = []
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"
                    and n.name in {s.arg.name for s in program.graph_signature.input_specs
                                   if s.kind.name == "USER_INPUT"}]
    for name, axes, node in zip(names, dynamic_shapes, placeholders):
        value = node.meta.get("val")
        if value is None or not axes:
            continue
        for axis in axes:
            size = value.shape[axis]
            if is_concrete_int(size):
                fixed.append(f"{name} axis {axis} (size {int(size)})")
    return fixed


def refuse_fixed(fixed: list[str]) -> ExportError:
    return ExportError(
        f"torch.export fixed {', '.join(fixed)} to the sample's size: the model's code (a"
        " reshape or view to a constant size, a size check) only holds for that size, so the"
        " exported graph would refuse or misanswer every other one.",
        "If that axis really has one size, declare it fixed in --input (its size instead of -1;"
        " the batch axis: --max-batch-size 0 and the batch in the dims); else make the code"
        f" follow the size (x.shape[...] instead of a constant), or {ROUTE_EAGER}.")


class _Sized:
    """What a guard reads of an input: its ``size()``."""

    def __init__(self, shape: tuple[int, ...]):
        self._shape = shape

    def size(self) -> tuple[int, ...]:
        return self._shape


class _Inputs(dict):
    """The inputs by name, also under any other key a guard reads them through (the wrapper's
    ``**inputs``, ``kwargs``)."""

    def __missing__(self, key):
        return self


def unmet_guard(program, cases: list[tuple[str, dict]]) -> tuple[str, str] | None:
    """(guard, case label) of the first guard of ``program`` that fails at one of ``cases``
    (label, {input name: shape}); None when every guard holds at all of them. A guard that
    cannot be evaluated here is left to the check."""
    for guard in getattr(program, "_guards_code", []):
        for label, shapes in cases:
            sized = _Inputs({name: _Sized(shape) for name, shape in shapes.items()})
            scope = {"L": sized}
            try:
                holds = eval(guard, {"__builtins__": {}}, scope)  # noqa: S307 - torch's own text
            except Exception:
                break
            if not holds:
                return guard, label
    return None


def readable(guard: str) -> str:
    """A guard with ``L['inputs']['x'].size()[1]`` written ``x.shape[1]``."""
    return re.sub(r"L(?:\['[^']+'\])*\['([^']+)'\]\.size\(\)\[(\d+)\]", r"\1.shape[\2]", guard)


def refuse_guard(guard: str, label: str) -> ExportError:
    return ExportError(
        f"torch.export made its graph on a condition on the input sizes that does not hold at"
        f" {label}: `{readable(guard)}`. The AOTInductor package does not check it when it runs, so a"
        " request of such sizes would be answered wrongly (the model's code, e.g. a strided"
        " slice or a reshape, only holds for some sizes in the graph's arithmetic).",
        f"Give the axis sizes where it holds (fixed dims in --input), or {ROUTE_EAGER}.")
