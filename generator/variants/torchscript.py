"""TorchScript export, shared by the libtorch and python-ts variants (made once per build).

``torch.jit.trace`` by default. A trace runs the model once and records the ops it saw, so it
silently bakes in data-dependent branches and shapes: the trace is checked at once on the second
sample case; when it is wrong there, ``torch.jit.script`` is tried, and the variant is refused
with the reason when that fails too.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..build.compare import compare
from ..errors import ExportError
from .base import ExportContext

CACHE_KEY = "torchscript"


def _outputs(ts, ctx: ExportContext, case) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        out = ts(*ctx.torch_inputs(case))
    out = [out] if isinstance(out, torch.Tensor) else list(out)
    return {t.name: o.detach().cpu().numpy() for t, o in zip(ctx.spec.outputs, out)}


def _mismatch(ts, ctx: ExportContext) -> str | None:
    """None when the TorchScript module matches eager on every case, else a description."""
    for case in ctx.cases:
        try:
            got = _outputs(ts, ctx, case)
        except Exception as e:
            return f"fails on sample case {case.name}: {_first_line(e)}"
        result = compare(got, ctx.references[case.name], ctx.spec.atol, ctx.spec.rtol)
        if not result.ok:
            return f"differs from eager on sample case {case.name} (batch {case.batch}):" \
                f" {result.summary()}"
    return None


def _trace(ctx: ExportContext):
    import torch

    first = ctx.cases[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.trace is deprecated"
        ts = torch.jit.trace(ctx.model, tuple(ctx.torch_inputs(first)), check_trace=False)
    tracer_warnings = sorted({str(w.message).split(". ")[0][:160] for w in caught
                              if issubclass(w.category, torch.jit.TracerWarning)})
    return ts, tracer_warnings


def _script(ctx: ExportContext):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated"
        return torch.jit.script(ctx.model)


def make_torchscript(ctx: ExportContext):
    """Return (ScriptModule, method, notes), made once per build for both TorchScript variants."""
    return ctx.shared(CACHE_KEY, _make)


def _make(ctx: ExportContext):
    notes: list[str] = []
    if ctx.spec.script:
        try:
            ts = _script(ctx)
        except Exception as e:
            raise ExportError(f"torch.jit.script failed: {_first_line(e)}",
                              "Drop --script to trace instead, or make the model scriptable.") from e
        bad = _mismatch(ts, ctx)
        if bad:
            raise ExportError(f"the scripted model {bad}.",
                              "Check the tolerances (--atol/--rtol) or the model's determinism.")
        return ts, "script", notes
    try:
        ts, tracer_warnings = _trace(ctx)
    except Exception as e:
        trace_error = f"torch.jit.trace failed: {_first_line(e)}"
        ts, tracer_warnings = None, []
    else:
        trace_error = None
        bad = _mismatch(ts, ctx)
        if bad is None:
            if tracer_warnings:
                notes.append("trace warnings (checked on a second input, outputs match): "
                             + "; ".join(tracer_warnings[:3]))
            return ts, "trace", notes
        trace_error = f"the traced model {bad}"
    # Fall back to scripting: it keeps control flow that tracing bakes in.
    try:
        ts = _script(ctx)
    except Exception as e:
        raise ExportError(
            f"{trace_error}; torch.jit.script failed too: {_first_line(e)}",
            "The model has data-dependent control flow that tracing cannot capture and scripting"
            " cannot compile. Make forward() scriptable (type annotations, no unsupported Python),"
            " or ship only the eager python variant (--variants python).") from e
    bad = _mismatch(ts, ctx)
    if bad:
        raise ExportError(f"{trace_error}; the scripted model also {bad}.",
                          "Ship the eager python variant (--variants python).")
    notes.append(f"fell back to torch.jit.script: {trace_error}")
    return ts, "script", notes


def _first_line(e: Exception) -> str:
    """One line for a summary; TorchScript errors put the message last, after a traceback."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if any("Traceback of TorchScript" in ln for ln in lines):
        lines = lines[-1:]
    line = lines[0][:300] if lines else ""
    return line if line.startswith(type(e).__name__) else f"{type(e).__name__}: {line}"
