"""Why a model failed a step of the build, in words that name the true cause and the route that
works (the checks themselves are elsewhere; this module explains what they found): a model that
refuses ``eval()``, fails on the sample batch for want of the batch axis it expects, answers
with complex numbers, draws random numbers in ``forward()``, or fails in the fresh process of
the offline check.
"""

from __future__ import annotations

import dataclasses
import warnings

from .. import releases
from ..errors import ExportError, error_line
from ..spec import ModelSpec
from ..variants.packaging import load_error_tip

CHECK_INPUTS_TIP = ("Check --input names, dtypes and dims (dims exclude the batch dim when"
                    " --max-batch-size > 0; -1 axes get lengths 8 and 5, or --check-lengths;"
                    " int inputs take values from LOW..HIGH, default 0..10).")


def put_in_eval(model) -> str | None:
    """``model.eval()``; a note when the model refuses it (None when it does not). A module
    made by ``torch.export`` (``ExportedProgram.module()``) replaces its own ``train``/``eval``
    with ones that raise: its graph keeps the mode it was exported in, so it is served as it is,
    with nn.Module's eval() restored (it only sets the ``training`` flags, which its graph does
    not read). Any other eval() that raises refuses the build with its error."""
    try:
        model.eval()
        return None
    except Exception as e:
        line = error_line(type(e).__name__, str(e))
        refusing = [m for m in model.modules() if {"train", "eval"} & set(vars(m))]
        for m in refusing:
            vars(m).pop("train", None)
            vars(m).pop("eval", None)
        try:
            if refusing:
                model.eval()
                return (f"the model's eval() raises ({line}), as a module made by torch.export"
                        " does: its graph keeps the mode it was exported in (export after"
                        " model.eval() for inference), so it is built as it is")
        except Exception:
            pass
        raise ExportError(
            f"the model's eval() raises {line}.",
            "gen-repo serves a model in eval mode (dropout off, batch norm on its running"
            " statistics), so it calls eval(): make eval() work, or build the module it"
            " wraps.") from e


def uncompiled(model) -> tuple[object, str | None]:
    """``model`` with each module torch.compile wrapped (an OptimizedModule, itself or a
    submodule) replaced by the module it compiled (its ``_orig_mod``), and a note naming them
    (None when there is none)."""
    import sys

    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing compiled
    compiled = getattr(eval_frame, "OptimizedModule", None)
    if compiled is None:
        return model, None
    whole = isinstance(model, compiled)
    while isinstance(model, compiled):
        model = model._orig_mod
    parts = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, compiled):
                while isinstance(child, compiled):
                    child = child._orig_mod
                setattr(parent, name, child)
                parts.append(f"{parent_name}.{name}" if parent_name else name)
    if not whole and not parts:
        return model, None
    what = " and ".join((["the model"] if whole else [])
                        + ([f"its submodule{'s' if len(parts) > 1 else ''} {', '.join(parts)}"]
                           if parts else []))
    return model, (f"{what} came compiled with torch.compile (an OptimizedModule): gen-repo"
                   " builds the module it compiled (its _orig_mod), which every variant exports"
                   " or compiles its own way; the python-compile variant serves it under"
                   " torch.compile (--variants python-compile)")


# ---------------------------------------------------------------------------------------------
# the eager model fails on the sample batch


def eager_failure(e: Exception, spec: ModelSpec, case, call, tensors: list) -> ExportError:
    """The refusal of a model that raised ``e`` on the sample ``case`` (``tensors``, as it got
    them; ``call(tensors)`` calls it again). With batching, the model is tried again without the
    batch axis and with the batch on another axis of its inputs: when one of those runs, the
    error names it and the tip the config that serves it, instead of the input flags."""
    message = _fails_on(e, spec, case)
    found = _batch_layout(spec, call, tensors) if spec.batching and not spec.batch_axis \
        else None
    if found is None:
        return ExportError(message, CHECK_INPUTS_TIP)
    return ExportError(f"{message}; {found[0]}", found[1])


def _fails_on(e: Exception, spec: ModelSpec, case) -> str:
    """What failed: the model, on the sample ``case``'s shapes, with ``e``'s line."""
    shapes = ", ".join(f"{t.name}{list(case.inputs[t.name].shape)}:{t.dtype}"
                       for t in spec.inputs)
    return f"the model fails on sample inputs ({shapes}): {error_line(type(e).__name__, str(e))}"


def _runs(call, tensors: list) -> bool:
    import torch

    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(tensors)
        return True
    except Exception:
        return False


def _flags(inputs, batch_dims: dict[str, int]) -> str:
    """--input flags of ``inputs`` without Triton batching: the batch, where the model takes one
    (``batch_dims``: input name -> dim), a -1 dim of its own."""
    out = []
    for t in inputs:
        dims = list(t.dims)
        if t.name in batch_dims:
            dims.insert(batch_dims[t.name], -1)
        flag = str(dataclasses.replace(t, dims=tuple(dims)))
        integer = not t.dtype.startswith(("float", "bfloat", "bool"))
        out.append(f"--input {flag}" + (f":{t.low}..{t.high}" if integer else ""))
    return " ".join(out)


def _batch_layout(spec: ModelSpec, call, tensors: list) -> tuple[str, str] | None:
    """(what runs, the tip) when the model runs on the sample with the batch on another dim of
    every input, with one input's batch on another dim, or without the batch axis (in this
    order: an RNN also takes unbatched inputs, and the batched route serves it better); else
    None."""
    inputs = spec.inputs
    for k in range(1, min(t.dim() for t in tensors)):
        if _runs(call, [t.movedim(0, k) for t in tensors]):
            return (f"it runs with the batch on dim {k} of every input",
                    f"The model takes its batch on dim {k}: build it with --batch-axis {k}"
                    " (clients still send the batch first; the serving wrapper moves it).")
    for i, (t, x) in enumerate(zip(inputs, tensors)):
        for k in range(1, x.dim()):
            moved = [y.movedim(0, k) if j == i else y for j, y in enumerate(tensors)]
            if len(inputs) > 1 and _runs(call, moved):
                batch_dims = {u.name: k if u.name == t.name else 0 for u in inputs}
                return (f"it runs with {t.name}'s batch on dim {k} (the other inputs' on dim 0)",
                        "Served inputs carry the batch on dim 0 (--batch-axis moves it for every"
                        " input alike), so no batched config fits inputs whose batch dims"
                        " differ: build it with --max-batch-size 0 and each input's full dims,"
                        f" the batch a -1 dim ({_flags(inputs, batch_dims)}), or build a wrapper"
                        f" module whose forward() takes {t.name} batch-first and passes"
                        f" {t.name}.movedim(0, {k}) to the model.")
    if _runs(call, [t[0] for t in tensors]):
        return ("it runs on one sample without the batch axis ("
                + ", ".join(f"{t.name}{list(x.shape[1:])}" for t, x in zip(inputs, tensors))
                + ")",
                "The model takes no batch axis: build it with --max-batch-size 0 and each input"
                f" as the model takes it ({_flags(inputs, {})}); Triton then hands it one"
                " request at a time.")
    return None


LONGEST_TRIED = 1 << 14  # the longest -1 axis tried for a model that fails on a short one
SEARCH_S = 10.0  # seconds of forward passes the search for a length the model takes may spend


def too_short(e: Exception, spec: ModelSpec, case, run) -> ExportError | None:
    """The refusal of a model that raised ``e`` on the sample ``case`` because its -1 axes were
    too short for it (an STFT's window, strided convolutions), when it runs on the case's batch
    with them longer (doubled until LONGEST_TRIED, within SEARCH_S; ``run(case)`` calls it):
    the error names the lengths, the tip --check-lengths with two lengths it ran at. None when
    no -1 axis or no longer length helps."""
    import time

    import numpy as np

    from .samples import case_lengths, sized_case

    length = _axis_length(spec, case)
    if length is None:
        return None
    rng = np.random.default_rng(spec.seed)
    batch = case.batch
    deadline = time.monotonic() + SEARCH_S
    n = max(2 * length, 16)
    while n <= LONGEST_TRIED and time.monotonic() < deadline:
        try:
            run(sized_case(spec, f"length {n}", batch, n, rng))
            run(sized_case(spec, f"length {2 * n - 1}", batch, 2 * n - 1, rng))
        except Exception:
            n *= 2
            continue
        given = " and ".join(map(str, case_lengths(spec).values()))
        whose = "--check-lengths" if spec.check_lengths else "the default"
        return ExportError(
            f"{_fails_on(e, spec, case)}; it runs at length {n} and {2 * n - 1}: length"
            f" {length} of the -1 axes is too short for the model.",
            f"The checks give every -1 axis the lengths {given} ({whose}), shorter than this"
            f" model takes: build"
            f" with --check-lengths {2 * n - 1},{n} (or two lengths your clients send, e.g."
            " --check-lengths 16000,12345 for audio at 16 kHz); requests must be at least that"
            " long too.")
    return None


def _axis_length(spec: ModelSpec, case) -> int | None:
    """The length of the first -1 axis of ``case``'s inputs (None: no input has one)."""
    lead = 1 if spec.batching else 0
    for t in spec.inputs:
        dims = t.artifact_dims(spec.batching)
        if -1 in dims:
            return int(case.inputs[t.name].shape[lead + dims.index(-1)])
    return None


# ---------------------------------------------------------------------------------------------
# outputs Triton cannot carry


def refuse_complex(flat: list, paths) -> None:
    """Refuse a complex output with the route that keeps its imaginary part (a cast to a real
    dtype drops it)."""
    for p, value in zip(paths, flat):
        if value.is_complex():
            raise ExportError(
                f"output '{p.name}' is complex ({value.dtype}), which Triton has no datatype"
                " for.",
                f"Return torch.view_as_real() of it: a real tensor with a last dim of 2 (real,"
                " imaginary) that clients turn back with torch.view_as_complex or"
                " numpy's a[..., 0] + 1j * a[..., 1]; or return its .real and .imag as two"
                " outputs. A cast to a real dtype would drop the imaginary part.")


# ---------------------------------------------------------------------------------------------
# a key/value cache among the outputs (HuggingFace models with use_cache=True)

CACHE_TIP = ("Return only the tensors clients need: call the HuggingFace model with"
             " use_cache=False (or set model.config.use_cache = False in the factory), or wrap"
             " it in a module whose forward() returns out.logits.")


def _cache_in(value, path: str = "the output") -> str | None:
    """Where ``value`` (a model's return value) holds a key/value cache -- a transformers Cache
    (DynamicCache...) or a ``past_key_values`` entry -- as words; None when it holds none."""
    if any(c.__name__ == "Cache" and c.__module__.startswith("transformers")
           for c in type(value).__mro__):
        return f"{path}, a {type(value).__name__}"
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, (tuple, list)) else ()
    for key, item in items:
        found = _cache_in(item, repr(key)) or (repr(key) if key == "past_key_values"
                                               and item is not None else None)
        if found:
            return found
    return None


def without_cache(model, run) -> tuple[dict, str | None]:
    """(``run()``, a note), ``run()`` giving the model's raw outputs per sample case: when they
    hold a key/value cache, the model's configs are set to use_cache=False (the note says so)
    and ``run()`` runs again; ExportError when no config turns the cache off."""
    raw = run()
    where = _cache_in(next(iter(raw.values())))
    if where is None:
        return raw, None
    what = (f"the model returns a key/value cache ({where}) beside its outputs: the attention"
            " keys and values kept for generating the next token, state a stateless server"
            " cannot carry from one request to the next, and no tensor Triton can serve")
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None
               and getattr(c, "use_cache", None) is True}
    for config in configs.values():
        config.use_cache = False
    raw = run() if configs else raw
    if not configs or _cache_in(next(iter(raw.values()))):
        raise ExportError(f"{what}.", CACHE_TIP)
    return raw, (f"{what}; built with model.config.use_cache = False (use_cache only says"
                 " whether the cache is returned)")


# ---------------------------------------------------------------------------------------------
# randomness in forward()


def _rng_states() -> dict:
    import random

    import numpy as np
    import torch

    _, keys, pos, *_ = np.random.get_state()
    return {"torch's": torch.get_rng_state(), "numpy's": (keys.copy(), pos),
            "Python's": random.getstate()}


def _same(a, b) -> bool:
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple) and a and isinstance(a[0], np.ndarray):
        return np.array_equal(a[0], b[0]) and a[1] == b[1]
    return a == b


def draws(call):
    """(``call()``, the random generators it drew from: torch's, numpy's, Python's)."""
    before = _rng_states()
    out = call()
    after = _rng_states()
    return out, [name for name in before if not _same(before[name], after[name])]


def refuse_random(drew: list[str], repeat) -> None:
    """Refuse a model whose forward() draws random numbers (``drew``: from which generators)
    when two runs on the same input differ beyond the tolerances (``repeat``: their
    Comparison): no export can answer as the eager run it is checked against."""
    if not drew or repeat.ok:
        return
    raise ExportError(
        f"forward() draws random numbers ({' and '.join(drew)} random generator advanced while"
        " it ran), so two runs on the same input answer differently"
        f" ({repeat.summary()}): no served variant can answer as the eager model did.",
        "Make forward() deterministic in eval mode, the mode gen-repo serves: draw the noise"
        " only while self.training, or take it as an input the client sends (--input"
        " noise:float32:DIMS); a sampling model can serve its mean. Looser --atol/--rtol"
        " would only hide the noise.")


# ---------------------------------------------------------------------------------------------
# the offline check's fresh process

ARCHIVE_TIP = ("The artifact must load where your source code is not importable: keep model code"
               " in modules torch.package can intern, and install third-party packages on the"
               " server.")


def fresh_process_tip(err: dict, frame: dict | None, blocked: list[str]) -> str:
    """The tip for an artifact that failed in the check's fresh process (``err``: the worker's
    report: type, message, stage -- loading, running or timing -- and the artifact's loader),
    by what failed: a tip on reading data or importing code from an archive where one fits
    (packaging.load_error_tip), else one for the stage it failed in."""
    tip = load_error_tip(err["type"], err["message"], frame, blocked)
    if tip:
        return tip
    stage, loader = err.get("stage"), err.get("loader")
    eager = loader == "package"
    if stage == "running":
        what = "The model" if eager else "The saved artifact"
        return (f"{what} ran on these inputs in the build but raises in a fresh process, loaded"
                " as the server loads it: it depends on something only the build"
                " process had -- a global or class attribute set outside the model, a file or"
                " environment variable it reads, a module your script imported, patched or"
                " registered (a custom op) -- not only on its inputs and weights. The other"
                " variants are not affected.")
    if stage == "timing":
        return ("The artifact answered the sample batches but fails at a batch size timed to"
                " choose its threads (1, and --max-batch-size: the largest batch the dynamic"
                " batcher forms): make the model take every batch size up to"
                " --max-batch-size, or lower it; --threads N skips the timing.")
    if stage == "loading" and not eager and err["type"] not in ("ModuleNotFoundError",
                                                                 "ImportError"):
        return ("The saved artifact does not load in a fresh process: it needs something the"
                " build process had loaded (a custom operator library, an extension module"
                " your code imports), which the server must load too. The other variants are"
                " not affected: build without this one (--variants).")
    return ARCHIVE_TIP


def export_route(results: list, spec) -> str | None:
    """A note for a build whose TorchScript variants were refused for TorchScript's sake (not
    for bfloat16 tensors that the target release's PyTorch backend lacks): whether the
    export-based variants (torch.export + AOTInductor) were built, or how to build them.
    ``results``: the build's VariantResults; ``spec``: its ModelSpec."""
    from ..variants import registry
    from ..variants.base import TORCHSCRIPT, bf16_without_backend
    from ..status import OK

    bf16 = bf16_without_backend(spec)
    refused = [r.variant for r in results if r.status != OK
               and registry.artifact_of(r.variant) == TORCHSCRIPT
               and not (bf16 and registry.get(r.variant).engine.value != "python")]
    if not refused:
        return None
    exported = {r.variant: r.status for r in results if r.variant in registry.exported()}
    lead = f"TorchScript was refused ({', '.join(refused)})"
    built = [v for v, status in exported.items() if status == OK]
    if built:
        return (f"{lead}; the export-based {' and '.join(built)} (torch.export + AOTInductor)"
                " took the model: it serves compiled C++ code without TorchScript")
    if exported:
        return f"{lead}, and torch.export was refused too ({', '.join(exported)}): see each ERROR"
    aoti_since = max(releases.TORCH_AOTI.since, releases.PYTORCH_BF16.since if bf16 else "")
    return (f"{lead}; torch.export may still take the model: build --variants python-aoti"
            " (AOTInductor in the Python backend, served here) or aoti (Triton's PyTorch backend,"
            f" --triton-release {aoti_since} or later)")
