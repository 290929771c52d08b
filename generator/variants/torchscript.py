"""TorchScript export, shared by the libtorch and python-ts variants (made once per build).

``torch.jit.trace`` by default. A trace runs the model once and records the ops it saw, so it
silently bakes in data-dependent branches and shapes. What ships:

- the trace, when it raised no TracerWarning that counts (generator.variants.tracer_warnings)
  and matches eager on both sample cases;
- ``torch.jit.script`` instead, when the trace is wrong on a sample case, fails, or raised
  TracerWarnings that say it may be wrong for other inputs (two random samples taking the same
  branch prove nothing) — if the scripted model compiles and matches eager on both cases;
- the warned trace anyway only with ``--accept-trace-warnings`` (the user's responsibility), and
  only when it matches eager on both cases;
- otherwise nothing: the variant is refused, naming the lines of the model's code the tracer
  flagged and what to change there.

``--script`` scripts directly. The build summary says which method shipped, and why.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..variants import threads
from ..repository.compare import compare
from ..variants.threads import CONTIGUOUS
from ..errors import ExportError, error_line
from ..runtime.model import CHANNELS_LAST, has_conv_weights, time_forward, to_numpy
from ..spec import OPTION_BY_KEY
from . import tracer_warnings
from .base import ExportContext

CACHE_KEY = "torchscript"
ACCEPT_FLAG = OPTION_BY_KEY["accept_trace_warnings"].flag


@dataclass
class TorchScript:
    module: object  # the ScriptModule
    method: str  # trace | script
    why: str = ""  # why this method, for the summary ("" for a clean trace)
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return f"{self.method} ({self.why})" if self.why else self.method


def _outputs(ts, ctx: ExportContext, case) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what a model warns about as it runs is not the check's
        out = ts(*ctx.torch_inputs(case))
    out = [out] if isinstance(out, torch.Tensor) else list(out)
    return {t.name: to_numpy(o) for t, o in zip(ctx.spec.outputs, out)}


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
    """(ScriptModule, every TracerWarning raised, located)."""
    import torch

    with tracer_warnings.recorded() as warned:
        ts = torch.jit.trace(ctx.model, tuple(ctx.torch_inputs(ctx.cases[0])), check_trace=False)
    return ts, warned


def _script(ctx: ExportContext):
    import torch

    with warnings.catch_warnings():
        # "torch.jit.script is deprecated", and libraries' notes on how they behave when scripted
        warnings.simplefilter("ignore")
        return torch.jit.script(ctx.model)


def make_torchscript(ctx: ExportContext) -> TorchScript:
    """The TorchScript module for both TorchScript variants, made once per build."""
    ctx.refuse_autograd("TorchScript (torch.jit.trace or torch.jit.script)")
    return ctx.shared(CACHE_KEY, lambda c: _in_measured_layout(c, _make(c)))


def save(made: TorchScript, path) -> None:
    """torch.jit.save ``made`` to ``path``; refused, with what stops it, when it cannot be
    written (the fresh-process check then loads it as the server will)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.save is deprecated"
            torch.jit.save(made.module, str(path))
    except Exception as e:
        Path(path).unlink(missing_ok=True)
        line = _first_line(e)
        call = re.search(r"Python function call '([^']+)'", line)
        if call:
            tip = (f"forward() calls {call.group(1)}, Python code TorchScript keeps as a call"
                   " back into Python (a custom torch.autograd.Function's apply(), or a function"
                   " marked @torch.jit.ignore), which a saved module cannot hold. Inference needs"
                   " no custom backward: under `if torch.jit.is_tracing():` compute the"
                   " Function's forward with torch operations directly.")
        else:
            tip = "Make the model scriptable, or trace a model without this construct."
        raise ExportError(f"torch.jit.save cannot write the TorchScript module ({made.summary}):"
                          f" {line}", tip + " The python variant serves the eager model"
                          " (--variants python).") from e


def _copy(ts):
    """An independent copy of a ScriptModule (saved and loaded again, as the server will)."""
    import io

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.save/load is deprecated"
        torch.jit.save(ts, buf)
        buf.seek(0)
        return torch.jit.load(buf)


def _ms_per_call(ts, tensors) -> float:
    calls, seconds, _ = time_forward(ts, tensors, threads.SECONDS)
    return seconds / calls * 1000


def _in_measured_layout(ctx: ExportContext, made: TorchScript) -> TorchScript:
    """For a conv net served on CPU: the module with its 4-D weights in channels_last layout when
    that runs the forward pass faster by more than threads.TOLERANCE (threads.choose), timed
    here on the first sample case (the layouts in turn, best of two), the same rule the
    Python-backend variants' measured choice applies; the converted module is checked against
    eager like the module itself. TorchScript keeps the weights' strides through torch.jit.save, and the graph then
    runs oneDNN's channels_last convolutions (resnet18 at batch 8 here: ~1.35x)."""
    import torch

    if not ctx.spec.cpu_instances or not has_conv_weights(ctx.model):
        return made
    try:  # an optional trial: a model the layout breaks (x.view) keeps the default one
        converted = _copy(made.module).to(memory_format=torch.channels_last)
        failed = _mismatch(converted, ctx)
        tensors = ctx.torch_inputs(ctx.cases[0])
        ms = {CONTIGUOUS: [], CHANNELS_LAST: []}
        for _ in range(2 if failed is None else 0):
            for fmt, module in ((CONTIGUOUS, made.module), (CHANNELS_LAST, converted)):
                ms[fmt].append(_ms_per_call(module, tensors))
    except Exception as e:
        failed = f"fails: {_first_line(e)}"
    if failed is not None:
        return replace(made, notes=made.notes + [
            f"weights kept in contiguous layout: with channels_last weights (tried for speed)"
            f" the module {failed}"])
    plain, fast = min(ms[CONTIGUOUS]), min(ms[CHANNELS_LAST])
    timed = (f"batch {ctx.cases[0].batch}: contiguous {plain:.2f} ms, channels_last {fast:.2f} ms"
             f" per forward pass, {torch.get_num_threads()} thread(s)")
    one = str(torch.get_num_threads())  # threads.choose's rule, over the two layouts only
    if threads.choose({CONTIGUOUS: {one: {"1": plain}}, CHANNELS_LAST: {one: {"1": fast}}}
                      ).memory_format == CONTIGUOUS:
        return replace(made, notes=made.notes + [f"weights kept in contiguous layout ({timed})"])
    return replace(made, module=converted, notes=made.notes + [
        f"weights in channels_last layout, chosen by measurement ({timed})"])


def _make(ctx: ExportContext) -> TorchScript:
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
        return TorchScript(ts, "script", "--script")
    try:
        ts, warned = _trace(ctx)
    except Exception as e:
        return _script_instead(ctx, f"torch.jit.trace failed: {_first_line(e)}", "trace failed",
                               [], [], matched=False)
    suspects, notes = tracer_warnings.suspects(warned), _benign_note(warned)
    bad = _mismatch(ts, ctx)
    baked = baked_devices(ts) if ctx.spec.gpu_instances else []
    if bad is None and baked:
        return _script_instead(
            ctx, "the trace baked in the device it ran on (the GPU instances run on another):"
            f" {'; '.join(baked)}", "the trace baked in its device", suspects, notes,
            matched=False, tip="Create tensors on the device of an input (`device=x.device`),"
            " which torch.jit.script keeps, or serve on CPU instances only.")
    if bad is None:
        if not suspects:
            return TorchScript(ts, "trace", "", notes)
        listing = tracer_warnings.listing(suspects)
        if ctx.spec.accept_trace_warnings:
            return TorchScript(ts, "trace", f"TracerWarnings accepted by {ACCEPT_FLAG}", notes + [
                f"shipped the trace although it raised TracerWarnings ({ACCEPT_FLAG}): it matches"
                " eager on both sample cases but may answer wrongly for inputs that take another"
                f" path: {listing}"])
        return _script_instead(
            ctx, "the trace raised TracerWarnings that say it may be wrong for other inputs (it"
            f" matches eager on both samples, which took the same path): {listing}",
            "the trace raised TracerWarnings", suspects, notes, matched=True)
    trace_error = f"the traced model {bad}"
    if suspects:
        trace_error += f"; the tracer warned: {tracer_warnings.listing(suspects)}"
    return _script_instead(ctx, trace_error, "the trace is wrong on a sample input", suspects,
                           notes, matched=False)


def _script_instead(ctx: ExportContext, trace_error: str, why: str, suspects: list,
                    notes: list[str], matched: bool, tip: str = "") -> TorchScript:
    """torch.jit.script in place of a trace that cannot ship; it compiles the control flow that
    tracing bakes in. Refused when it does not compile or does not match eager (``tip``: how to
    fix the model, when the trace's problem is not one the tracer warns about)."""
    tip = (tip + " The python variant serves the eager model (--variants python).") if tip \
        else _refusal_tip(suspects, matched)
    try:
        ts = _script(ctx)
    except Exception as e:
        raise ExportError(f"{trace_error}; torch.jit.script failed too: {_first_line(e)}",
                          tip) from e
    bad = _mismatch(ts, ctx)
    if bad:
        raise ExportError(f"{trace_error}; the scripted model also {bad}.", tip)
    return TorchScript(ts, "script", why, notes + [f"fell back to torch.jit.script: {trace_error}"])


def baked_devices(ts) -> list[str]:
    """Where a traced module uses a device constant: the trace records the device a tensor was
    created on (``torch.arange(n)``, ``torch.zeros(..., device=x.device)`` alike) as a constant,
    so on a GPU instance it creates that tensor on the CPU. One "op at file(line)" per use, the
    line being the first frame outside torch's own code."""
    found = []
    for node in ts.inlined_graph.nodes():
        if node.kind() != "prim::Constant" or node.output().type().kind() != "DeviceObjType":
            continue
        for use in node.output().uses():
            frames = [f.strip() for f in use.user.sourceRange().splitlines() if f.strip()]
            own = [f for f in frames if "/torch/" not in f and "gen_repo_wrapper" not in f]
            site = (own or frames or ["an unknown line"])[0].split(": ")[0]
            found.append(f"{use.user.kind()} at {site}")
    return list(dict.fromkeys(found))


def _benign_note(warned: list) -> list[str]:
    benign = [w for w in warned if w.benign]
    if not benign:
        return []
    sites = ", ".join(w.site for w in benign[:3]) + (" ..." if len(benign) > 3 else "")
    return [f"{len(benign)} TracerWarning(s) not counted, raised"
            f" {' or '.join(sorted({w.benign for w in benign}))}: {sites}"]


def _refusal_tip(suspects: list, matched: bool) -> str:
    """How to fix the model; the opt-in flag only where it would help (the trace matched)."""
    if suspects:
        tip = tracer_warnings.how_to_fix(suspects)
    else:
        tip = ("The trace depends on its sample input (a branch, a loop count or a shape baked"
               " in). Make forward() scriptable (type annotations, no unsupported Python) so"
               " torch.jit.script keeps it.")
    if matched:
        tip += f" {ACCEPT_FLAG} ships the trace anyway, on your own responsibility."
    return tip + " The python variant serves the eager model (--variants python)."


def _first_line(e: Exception) -> str:
    """One line for a summary: the one that says what failed (errors.what_failed)."""
    return error_line(type(e).__name__, str(e))
