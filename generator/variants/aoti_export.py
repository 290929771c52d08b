"""torch.export + AOTInductor, shared by the aoti and python-aoti variants (compiled once).

The batch axis and every -1 axis are exported as dynamic dims (``Dim.AUTO``: torch.export works
out which axes must be equal, e.g. tokens and mask lengths). An export that specialises an axis
anyway is caught by the parity check on the second sample case.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from ..errors import ExportError
from .base import ExportContext

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


def compiled_package(ctx: ExportContext) -> Path:
    """Path of the compiled .pt2 (in a temp dir owned by the build), made on first use."""
    return ctx.shared(CACHE_KEY, _compile)


def _compile(ctx: ExportContext) -> Path:
    import logging
    import tempfile

    import torch
    import torch._inductor

    args = tuple(ctx.torch_inputs(ctx.cases[0]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(ctx.model, args, dynamic_shapes=_dynamic_shapes(ctx),
                                          strict=False)
    except Exception as e:
        raise ExportError(
            f"torch.export failed: {type(e).__name__}: {_first_line(e)}",
            "torch.export needs one graph for every input: data-dependent control flow and"
            " shapes must be rewritten (torch.cond, torch._check) — the python variant still"
            " serves the eager model.") from e
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
