"""gen-repo build: model -> checked variants -> model directories swapped in atomically.

Each variant is built in a staging directory beside the repository, checked in a fresh process,
given its config.pbtxt and the SHA-256 of each of its files (gen_repo.sha256), and renamed into
place; a failing variant leaves nothing behind and
does not stop the others (model_navigator style: every step gets a status).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, progress
from . import capacity, diagnosis, rows, sizes
from ..repository import layout
from ..repository import staging as stage_dirs
from ..variants import threads
from .arguments import InputBinding, bind_inputs
from .check import CheckJob, check_artifacts
from ..repository.compare import compare
from ..repository import manifest
from ..repository.config import build_header, model_config, record_spec, write_config
from ..errors import ExportError, GenRepoError, RepositoryError, SpecError, os_error
from .outputs import flat_outputs, output_paths
from .samples import Case, make_cases, resized, save_npz
from .objects import from_object
from .sources import load_model, load_weights
from ..runtime.model import NO_GRAD, forward_context, fresh_tensors, to_numpy
from ..spec import ModelSpec
from ..status import FAILED, OK
from ..table import format_table
from ..variants import registry
from ..variants.base import ExportContext
from ..variants.weights import store_layout
from .wrapper import make_wrapper

BF16_TOLERANCE = 1e-2  # atol and rtol at least, for a model with a bfloat16 output


@dataclass
class VariantResult:
    variant: str
    model: str
    status: str  # OK | FAILED
    seconds: float
    detail: str
    notes: list[str] = field(default_factory=list)
    tip: str | None = None


@dataclass
class BuildReport:
    spec: ModelSpec
    results: list[VariantResult]
    notes: list[str]

    @property
    def exit_code(self) -> int:
        ok = sum(r.status == OK for r in self.results)
        if ok == len(self.results):
            return 0
        return 3 if ok else 1

    def table(self) -> str:
        lines = [format_table(("VARIANT", "MODEL", "STATUS", "TIME", "DETAIL"),
                              [(r.variant, r.model, r.status, f"{r.seconds:.1f} s", r.detail)
                               for r in self.results])]
        for r in self.results:
            lines += [f"  note ({r.variant}): {n}" for n in r.notes]
        lines += [f"  note: {n}" for n in self.notes]
        ok = [r for r in self.results if r.status == OK]
        lines.append(f"{len(ok)} of {len(self.results)} variants written to"
                     f" {Path(self.spec.out).resolve()}")
        return "\n".join(lines)


def versions() -> dict[str, str]:
    import torch

    out = {"gen_repo": __version__, "python": platform.python_version(),
           "torch": torch.__version__, "numpy": np.__version__}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - pinned dependency
        pass
    return out


# ---------------------------------------------------------------------------------------------


def _tensors(spec: ModelSpec, case) -> list:
    """Fresh copies of a case's inputs (as the served artifact takes them), shaped as the model
    takes them: every call gets its own, so a model that changes its inputs in place cannot
    change the case."""
    tensors = fresh_tensors([case.inputs[t.name] for t in spec.inputs])
    # A scalar without batching is served as one element; the model gets its 0-d value (the
    # serving wrapper does the same).
    tensors = [x.squeeze(0) if t.artifact_dims(spec.batching) != t.dims else x
               for t, x in zip(spec.inputs, tensors)]
    if spec.batch_axis:  # served tensors are batch-first; the model wants the batch elsewhere
        tensors = [t.movedim(0, spec.batch_axis) for t in tensors]
    return tensors


def _call(model, spec: ModelSpec, binding: InputBinding, case):
    """The model's raw output for a case, called as the serving wrapper calls it (same
    binding), in the spec's forward mode."""
    with forward_context(spec.forward_mode):
        return binding.call(model, _tensors(spec, case))


def _run_eager(model, spec: ModelSpec, binding: InputBinding, case):
    """_call, or the refusal that says why the model failed (and a batch layout it runs with,
    if any)."""
    try:
        return _call(model, spec, binding, case)
    except Exception as e:
        raise diagnosis.eager_failure(e, spec, case, lambda ts: binding.call(model, ts),
                                      _tensors(spec, case)) from e


def _forward_mode(model, spec: ModelSpec, binding: InputBinding, case) -> ModelSpec:
    """``spec`` as it is when the model runs on ``case`` in inference mode; with forward_mode
    NO_GRAD when it fails there and runs under torch.no_grad (it takes gradients inside
    forward()). A model that fails both ways is refused: for a length too short for it when it
    runs at longer ones, else as _run_eager says."""
    try:
        _call(model, spec, binding, case)
        return spec
    except Exception as e:
        failure = e
    grad = spec.with_(forward_mode=NO_GRAD)
    try:
        _call(model, grad, binding, case)
        return grad
    except Exception:
        pass
    short = diagnosis.too_short(failure, spec, case, lambda c: _call(model, spec, binding, c))
    if short is not None:
        raise short from failure
    _run_eager(model, spec, binding, case)  # raises, with the diagnosis
    return spec


def _to_numpy(tensors) -> list[np.ndarray]:
    return [to_numpy(t) for t in tensors]


def _bf16_tolerance(spec: ModelSpec, outputs) -> tuple[ModelSpec, list[str]]:
    """``spec`` with tolerances no tighter than a bfloat16 output's precision (8 significant
    bits: rounding a sum differently moves it by about 1e-2 of its value), and a note; as it is
    when no output is bfloat16 or the tolerances are that wide already."""
    bf16 = [t.name for t in outputs if t.dtype == "bfloat16"]
    if not bf16 or min(spec.atol, spec.rtol) >= BF16_TOLERANCE:
        return spec, []
    spec = spec.with_(atol=max(spec.atol, BF16_TOLERANCE), rtol=max(spec.rtol, BF16_TOLERANCE))
    return spec, [f"{', '.join(bf16)} {'is' if len(bf16) == 1 else 'are'} bfloat16 (served as"
                  f" TYPE_BF16; numpy clients get float32 arrays): parity checks use"
                  f" atol={spec.atol:g} rtol={spec.rtol:g}, the precision of 8 significant bits"]


def _served(flat: list, spec: ModelSpec) -> list:
    """Flat model outputs as the served artifact returns them: batch first, and without
    batching a 0-d output as one element (Triton has no 0-d tensors; the wrapper does the
    same)."""
    if not spec.batching:
        return [t.unsqueeze(0) if t.dim() == 0 else t for t in flat]
    if not spec.batch_axis:
        return flat
    try:
        return [t.movedim(spec.batch_axis, 0) for t in flat]
    except IndexError as e:
        raise ExportError(f"an output has fewer than {spec.batch_axis + 1} axes, so it has no"
                          f" batch axis {spec.batch_axis}: {e}.",
                          "Check --batch-axis; every output must carry the batch axis.") from e


def _buffer_snapshot(model) -> dict:
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def _restore_mutated_buffers(model, before: dict) -> list[str]:
    """Buffers that forward() changed, restored to their loaded values."""
    import torch

    changed = []
    for name, buf in model.named_buffers():
        old = before.get(name)
        if old is not None and (old.shape != buf.shape or not torch.equal(old, buf)):
            changed.append(name)
            with torch.no_grad():
                buf.copy_(old) if old.shape == buf.shape else None
    return changed


def _mode_dependent(model) -> list[str]:
    """Names of layers that behave differently in train and eval mode."""
    import torch.nn as nn

    kinds = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm,
             nn.modules.instancenorm._InstanceNorm)
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, kinds)})


def prepare(spec: ModelSpec, obj=None) -> tuple[ExportContext, list[str]]:
    """Load the model (or copy ``obj``, an nn.Module), make samples, infer outputs, wrap:
    everything the variants share."""
    import torch

    notes: list[str] = []
    torch.manual_seed(spec.seed)
    with progress.step(f"loading {spec.source}"):
        loaded = load_model(spec.source, spec.weights) if obj is None else from_object(obj)
        if obj is not None and spec.weights:
            load_weights(loaded.module, spec.weights)
    model, compiled = diagnosis.uncompiled(loaded.module)
    notes += filter(None, [compiled])
    if model.training and loaded.kind != "torchvision" and _mode_dependent(model):
        notes.append(f"the model was in training mode with {', '.join(_mode_dependent(model))};"
                     " it was put into eval() mode (dropout off, batch-norm uses running"
                     " statistics)")
    notes += filter(None, [diagnosis.put_in_eval(model)])  # a torch.export module refuses it
    inputs = spec.inputs or loaded.default_inputs
    if not inputs:
        raise SpecError(f"no inputs given for '{spec.source}'.",
                        "Describe each input: --input NAME:DTYPE:DIMS (e.g. --input"
                        " x:float32:16), or list them in the spec file.")
    spec = spec.with_(inputs=tuple(inputs))
    binding = bind_inputs(model, spec.inputs, spec.inputs_by_position)
    if not binding.by_name and len(spec.inputs) > 1:
        notes.append(binding.reason)
    cases = make_cases(spec)
    buffers = _buffer_snapshot(model)
    with progress.step("running the eager model on sample inputs"):
        spec = _forward_mode(model, spec, binding, cases[0])
        if spec.forward_mode == NO_GRAD:
            notes.append("forward() takes gradients (it fails under torch.inference_mode and"
                         " runs under torch.no_grad): every check and the served Python-backend"
                         " model run it under torch.no_grad")
        raw, uncached = diagnosis.without_cache(
            model, lambda: {c.name: _run_eager(model, spec, binding, c) for c in cases})
        notes += filter(None, [uncached])
        rows.check_per_item(raw, cases, spec)
        paths = output_paths(raw[cases[0].name])
        # Without batching a 0-d output is served as one element (the wrapper unsqueezes it).
        scalar_outputs = tuple(i for i, v in enumerate(flat_outputs(raw[cases[0].name], paths))
                               if not spec.batching and v.dim() == 0)
        try:
            flat = {name: _served(flat_outputs(value, paths), spec)
                    for name, value in raw.items()}
        except (KeyError, IndexError, TypeError) as e:
            raise ExportError(f"the model's output structure changes between inputs: {e}.",
                              "Return the same tuple/dict keys for every input.") from e
        diagnosis.refuse_complex(flat[cases[0].name], paths)

        def run(case, served: bool = True) -> list:
            """Flat outputs for ``case`` (served: batch-first), from the state as loaded."""
            try:
                out = flat_outputs(_run_eager(model, spec, binding, case), paths)
            finally:
                _restore_mutated_buffers(model, buffers)
            return _served(out, spec) if served else out

        mutated = _restore_mutated_buffers(model, buffers)
        if mutated:
            # Served instances would each drift on their own: every variant starts from the
            # loaded state, and the references are recomputed from it.
            notes.append(f"forward() changes the buffers {', '.join(mutated)}: served as is,"
                         " each instance would drift on its own. The serving wrapper restores"
                         " them after every call, so every request is answered from the state"
                         " as loaded; make forward() pure if the state is meant to persist")
            flat = {c.name: run(c) for c in cases}
        # Sizes read at batch 1 and max_batch_size and at more lengths than the samples' two.
        outputs, probed = sizes.output_specs(lambda c: run(c, served=False),
                                             lambda f: _served(f, spec), spec, cases, raw, paths)
        notes += probed
        spec, widened = _bf16_tolerance(spec, outputs)
        notes += widened
        again, drew = diagnosis.draws(lambda: run(cases[0]))
        if any(not torch.equal(a, b) for a, b in zip(again, flat[cases[0].name])):
            notes.append("the eager model is not deterministic (two runs on the same input"
                         " differ" + (f": forward() draws from {' and '.join(drew)} random"
                                      " generator" if drew else "")
                         + "); parity checks use the tolerances --atol/--rtol")
        names = [t.name for t in outputs]
        repeat = compare(dict(zip(names, _to_numpy(again))),
                         dict(zip(names, _to_numpy(flat[cases[0].name]))), spec.atol, spec.rtol)
        diagnosis.refuse_random(drew, repeat)
        if repeat.ok:
            # Only for a model that repeats itself within the tolerances: one that does not
            # fails its parity check anyway and would be misreported as mixing rows.
            notes += rows.check_rows_independent(run, flat, cases, names, spec, model)
    spec = spec.with_(outputs=outputs)
    if spec.dtype != "float32":
        model = model.to(getattr(torch, spec.dtype))
        notes.append(f"the model computes in {spec.dtype}; it is checked against the float32"
                     f" eager model with atol={spec.atol:g} rtol={spec.rtol:g}")
    wrapped, wrapper_module = make_wrapper(model, spec, binding, paths, tuple(mutated),
                                           scalar_outputs)
    references = {name: dict(zip([t.name for t in outputs], _to_numpy(values)))
                  for name, values in flat.items()}
    ctx = ExportContext(spec, wrapped, wrapper_module, loaded.user_modules, cases, references)
    return ctx, notes


@dataclass
class Staged:
    """A variant exported into its staging directory, waiting for its check."""

    variant: object  # Variant
    model_name: str
    staging: Path
    artifact: object  # Artifact
    export_s: float
    start: float

    def job(self, spec: ModelSpec) -> CheckJob:
        python_backend = self.variant.engine.value == "python"
        return CheckJob(self.staging / layout.VERSION, self.artifact.load_params, python_backend,
                        threads.plan(self.variant.served_spec(spec)) if python_backend else None)


def stage_variant(ctx: ExportContext, variant_name: str) -> Staged | VariantResult:
    """Export one variant (with its samples) into a staging dir; a failure is a FAILED result."""
    spec = ctx.spec
    variant = registry.get(variant_name)
    model_name = spec.model_dir_name(variant_name)
    start = time.perf_counter()
    staging = stage_dirs.staging_dir(Path(spec.out), model_name)
    try:
        version_dir = staging / layout.VERSION
        version_dir.mkdir()
        for case in ctx.cases:  # first: compiled variants warm up on them
            samples_file, reference_file = layout.case_files(case.name)
            save_npz(staging / samples_file, variant.served_arrays(spec, case.inputs, spec.inputs))
            save_npz(staging / reference_file,
                     variant.served_arrays(spec, ctx.references[case.name], spec.outputs))
        with progress.step(f"[{variant_name}] exporting") as timing:
            artifact = variant.export(ctx, version_dir)
        return Staged(variant, model_name, staging, artifact, timing["seconds"], start)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        failed = variant_failure(e, "exporting")
        if failed is None:
            raise
        return VariantResult(variant_name, model_name, FAILED, time.perf_counter() - start,
                             failed.message, [], failed.tip)


def variant_failure(e: BaseException, step: str) -> GenRepoError | None:
    """What ``e``, raised while ``step`` one variant, says about that variant alone (the others
    go on): a GenRepoError as it is, any other exception as its own error line; None for what
    ends the whole build (Ctrl-C, a full disk)."""
    if isinstance(e, GenRepoError):
        return e
    if not isinstance(e, Exception) or os_error(e) is not None:
        return None
    return GenRepoError(f"{step} failed: {diagnosis.error_line(type(e).__name__, str(e))}",
                        "An error gen-repo does not explain, in this variant only: the others"
                        " are not affected. Build without it (--variants); if the error is not"
                        " your model's, report it as a gen-repo bug.")


def finish_variant(ctx: ExportContext, staged: Staged, check, command: list[str],
                   shared_notes: list[str]) -> VariantResult:
    """Record, config.pbtxt last, then rename into the repository — or discard on a failed check."""
    spec, variant, artifact = ctx.spec, staged.variant, staged.artifact
    notes = artifact.notes + check.notes
    parameters = dict(artifact.config_parameters)
    choice = threads.choose(check.thread_timings) if check.ok and check.thread_timings else None
    if choice:
        parameters.update(choice.parameters)
        notes = notes + [choice.note()]
        if "weights" in artifact.load_params:  # mapped weights: stored in the layout served
            changed = store_layout(staged.staging / layout.VERSION, artifact.load_params,
                                   choice.parameters)
            artifact.load_params.update(changed)
            parameters.update(changed)
    try:
        if not check.ok:
            return VariantResult(variant.name, staged.model_name, FAILED,
                                 time.perf_counter() - staged.start, check.detail, notes,
                                 check.tip)
        served = variant.served_spec(spec)
        record = {
            "gen_repo": __version__, "variant": variant.name, "label": variant.label,
            "model_name": staged.model_name, "spec": record_spec(served), "command": command,
            "versions": versions(), "seed": spec.seed,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "artifacts": {artifact.load_params["artifact"]: artifact.load_params["artifact_sha256"]},
            "load_params": artifact.load_params,
            "check": {"ok": True, "detail": check.detail, "max_abs": check.max_abs},
            "export_seconds": round(staged.export_s, 2),
            "export_method": artifact.method,
            "forward_pass": choice.record() if choice else None,
            "notes": shared_notes + notes,
        }
        (staged.staging / layout.RECORD).write_text(json.dumps(record, indent=2) + "\n")
        write_config(staged.staging, model_config(served, staged.model_name, variant.engine,
                                                  parameters), build_header(variant.name))
        manifest.write(staged.staging)
        stage_dirs.swap_in(staged.staging, Path(spec.out) / staged.model_name)
        detail = (f"{artifact.method}; " if artifact.method else "") \
            + f"export {staged.export_s:.1f} s; " + check.detail
        return VariantResult(variant.name, staged.model_name, OK,
                             time.perf_counter() - staged.start, detail, notes)
    finally:
        shutil.rmtree(staged.staging, ignore_errors=True)  # gone already when swapped in


def batch_cases(ctx: ExportContext, staged: list[Staged]) -> tuple[list[Case], dict]:
    """The cases at the batch sizes the staged variants' checks run beyond the sample cases'
    (Variant.check_batch_sizes), and their references: sample case a's rows repeated or cut,
    whose answers are its own (the build refuses a batching model whose rows depend on each
    other)."""
    base = ctx.cases[0]
    sizes = {b for s in staged for b in s.variant.check_batch_sizes(ctx.spec)}
    cases = [Case(f"batch {b}", b, resized(base.inputs, b))
             for b in sorted(sizes - {c.batch for c in ctx.cases})]
    return cases, {c.name: resized(ctx.references[base.name], c.batch) for c in cases}


def build_variants(ctx: ExportContext, command: list[str],
                   shared_notes: list[str]) -> list[VariantResult]:
    """Export every variant, check them all in one fresh process, then swap the good ones in."""
    staged = {name: stage_variant(ctx, name) for name in ctx.spec.variants}
    ready = [s for s in staged.values() if isinstance(s, Staged)]
    checks = []
    try:
        if ready:
            extra, extra_references = batch_cases(ctx, ready)
            with progress.step(f"checking {', '.join(s.variant.name for s in ready)} in a fresh"
                               " process"):
                checks = check_artifacts(ctx.spec, [s.job(ctx.spec) for s in ready],
                                         ctx.cases + extra,
                                         {**ctx.references, **extra_references},
                                         [*ctx.user_modules, ctx.wrapper_module])
    except BaseException:
        for s in ready:
            shutil.rmtree(s.staging, ignore_errors=True)
        raise
    results = dict(zip([s.variant.name for s in ready],
                       [finish_variant(ctx, s, c, command, shared_notes)
                        for s, c in zip(ready, checks)]))
    return [results.get(name) or staged[name] for name in ctx.spec.variants]


def build_repository(spec: ModelSpec, command: list[str] | None = None,
                     model=None) -> BuildReport:
    """Build ``spec``'s variants into its repository; ``model``: the nn.Module object to build
    (gen_repo.build), else the model comes from ``spec.source``."""
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise RepositoryError(f"output '{out}' exists and is not a directory.",
                              "Choose another --out.")
    with stage_dirs.build_lock(out):
        return _build_locked(spec, out, command, model)


def _build_locked(spec: ModelSpec, out: Path, command: list[str] | None, model) -> BuildReport:
    taken = [spec.model_dir_name(v) for v in spec.variants if (out / spec.model_dir_name(v)).exists()]
    if taken and not spec.force:
        raise RepositoryError(
            f"'{out}' already holds {', '.join(taken)}; gen-repo does not overwrite models.",
            "Pass --force to replace them, or choose another --name or --out.")
    foreign = [name for name in taken if not (out / name / layout.RECORD).is_file()]
    if foreign:
        raise RepositoryError(
            f"'{out}' holds {', '.join(foreign)}, which gen-repo did not write (no"
            f" {layout.RECORD} in it): --force replaces only models gen-repo built.",
            "Move or delete it yourself, or choose another --name or --out.")
    if out.parent.is_dir():
        for p in stage_dirs.clean_stale_staging(out):
            progress.info(f"removed {p.name}, left by an interrupted build")
    ctx, notes = prepare(spec, model)
    weights = capacity.model_bytes(ctx.model)
    capacity.check_disk(weights, len(spec.variants), out)
    python_variants = sum(registry.get(v).engine.value == "python" for v in spec.variants)
    for line in capacity.estimate(weights, ctx.spec, python_variants,
                                  len(spec.variants) - python_variants):
        (progress.warn if line.startswith("WARNING") else progress.info)(line)
        notes.append(line)
    results = build_variants(ctx, command or [], notes)
    route = diagnosis.export_route(results, ctx.spec)
    return BuildReport(ctx.spec, results,
                       notes + ([route] if route else []) + [capacity.peak_memory_note()])
