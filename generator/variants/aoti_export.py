"""torch.export + AOTInductor, shared by the aoti and python-aoti variants (compiled once).

The batch axis and every -1 axis are exported as dynamic dims (``Dim.AUTO``: torch.export works
out which axes must be equal, e.g. tokens and mask lengths). An export that specialises an axis
anyway is caught by the parity check on the second sample case.

The package takes the inputs as keyword arguments named after the spec's inputs and returns a
tuple of the outputs in config order, so its call spec -- what the PyTorch backend names tensors
by from Triton 26.05 -- reads KWARGS[<input>] and RESULT[<i>] (``call_spec_names``).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from pathlib import Path

from ..errors import ExportError
from .base import ExportContext
from .export_causes import export_failure, fixed_axes, refuse_fixed, refuse_guard, unmet_guard

CACHE_KEY = "aoti_package"
ARTIFACT = "model.pt2"


def _dynamic_shapes(ctx: ExportContext):
    from torch.export import Dim

    shapes = []
    for t in ctx.spec.inputs:
        axes = {0: Dim.AUTO} if ctx.spec.batching else {}
        offset = 1 if ctx.spec.batching else 0
        axes.update({i + offset: Dim.AUTO for i, d in enumerate(t.dims) if d == -1})
        shapes.append(axes or None)
    return tuple(shapes)


def _servable_sizes(ctx: ExportContext) -> list[tuple[str, dict]]:
    """(label, {input: shape}) at the batch sizes the server may form (2 to max_batch_size:
    torch.export's graph starts at 2, batch 1 is checked by running it) and the lengths 2 to
    GUARD_LENGTHS of every -1 axis, all inputs at the same length."""
    spec = ctx.spec
    batches = range(2, max(spec.max_batch_size, 2) + 1) if spec.batching else [None]
    dynamic = any(-1 in t.dims for t in spec.inputs)
    found = []
    for batch in batches:
        for length in range(2, GUARD_LENGTHS + 1) if dynamic else [None]:
            shapes = {t.name: ((batch,) if batch else ()) + tuple(
                length if d == -1 else d for d in t.dims) for t in spec.inputs}
            label = ", ".join(filter(None, [f"batch {batch}" if batch else "",
                                            f"length {length}" if length else ""]))
            found.append((label, shapes))
    return found


GUARD_LENGTHS = 64


def call_spec_names(spec) -> tuple[list[str], list[str]]:
    """(input names, output names) of the package's call spec, as the PyTorch backend spells
    them: keyword inputs KWARGS[<name>], the outputs' tuple RESULT[<i>]."""
    return ([f"KWARGS[{t.name}]" for t in spec.inputs],
            [f"RESULT[{i}]" for i in range(len(spec.outputs))])


def _by_keyword(model):
    """``model`` called with keyword inputs, its outputs always a tuple (one output too)."""
    import torch

    class KeywordCall(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **inputs):
            out = self.inner(**inputs)
            return out if isinstance(out, tuple) else (out,)

    return KeywordCall(model)


def compiled_package(ctx: ExportContext) -> Path:
    """Path of the compiled .pt2 (in a temp dir owned by the build), made on first use."""
    ctx.refuse_autograd("torch.export with AOTInductor")
    return ctx.shared(CACHE_KEY, _compile)


def _compile(ctx: ExportContext) -> Path:
    import logging
    import tempfile

    import torch
    import torch._inductor

    names = [t.name for t in ctx.spec.inputs]
    inputs = dict(zip(names, ctx.torch_inputs(ctx.cases[0])))
    dynamic = _dynamic_shapes(ctx)
    try:  # the exporter prints graph dumps of what it could not guard: the refusal says it
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.export.export(_by_keyword(ctx.model), (), kwargs=inputs,
                                          dynamic_shapes=dict(zip(names, dynamic)),
                                          strict=False)
    except Exception as e:
        raise export_failure(e) from e
    fixed = fixed_axes(program, dynamic, names)
    if fixed:
        raise refuse_fixed(fixed)
    unmet = unmet_guard(program, _servable_sizes(ctx))
    if unmet:
        raise refuse_guard(*unmet)
    folder = Path(tempfile.mkdtemp(prefix="gen-repo-aoti-"))
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = torch._inductor.aoti_compile_and_package(
                program, package_path=str(folder / ARTIFACT))
    except Exception as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise ExportError(f"AOTInductor compilation failed: {type(e).__name__}: {_first_line(e)}",
                          "AOTInductor on CPU needs a C++ compiler (g++) on the build machine;"
                          " run with -v for the compiler's message.") from e
    return Path(path)


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else ""
