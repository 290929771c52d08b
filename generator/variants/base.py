"""What every variant gets (ExportContext) and returns (Artifact)."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from .. import releases
from ..repository.config import Engine
from ..errors import ExportError
from ..spec import ModelSpec

RUNTIME_MODEL = Path(__file__).resolve().parent.parent / "runtime" / "model.py"
# What an artifact is, for comparisons (bench measures each kind in-process too): the model as
# written, or TorchScript.
EAGER, TORCHSCRIPT = "eager", "torchscript"


@dataclass
class ExportContext:
    spec: ModelSpec  # complete: outputs inferred
    model: object  # the eager GenRepoWrapper (flat tuple outputs, forward args = input names)
    wrapper_module: str
    user_modules: tuple[str, ...]
    cases: list  # samples.Case
    references: dict[str, dict[str, np.ndarray]]  # case name -> output name -> array
    cache: dict = field(default_factory=dict)  # shared work between variants (e.g. TorchScript)

    def shared(self, key: str, make):
        """``make(self)`` once per build for work several variants share (a TorchScript module,
        an AOTInductor package); a refusal (ExportError) is remembered and raised again."""
        if key not in self.cache:
            try:
                self.cache[key] = make(self)
            except ExportError as e:
                self.cache[key] = e
        value = self.cache[key]
        if isinstance(value, ExportError):
            raise value
        return value

    def torch_inputs(self, case) -> list:
        """Fresh copies of ``case``'s inputs: a model that changes them in place leaves the
        case as it was."""
        from ..runtime.model import fresh_tensors

        return fresh_tensors([case.inputs[t.name] for t in self.spec.inputs])

    def refuse_autograd(self, what: str) -> None:
        """Refuse ``what`` (an export method) for a model that takes gradients inside forward()
        (the build runs it under torch.no_grad): it cannot carry that computation."""
        from ..runtime.model import NO_GRAD

        if self.spec.forward_mode != NO_GRAD:
            return
        raise ExportError(
            f"forward() computes gradients with autograd (it fails under torch.inference_mode"
            f" and runs under torch.no_grad), which {what} cannot carry: it records or compiles"
            " the forward ops only, not the backward pass that torch.autograd.grad runs.",
            "The python variant serves the eager model, run under torch.no_grad so that"
            " forward() can enable grad for its own gradient (--variants python).")


@dataclass
class Artifact:
    files: list[str]  # written into the version dir
    load_params: dict[str, str]  # how runtime/model.py's load_model() loads it (offline check)
    config_parameters: dict[str, str]  # config.pbtxt parameters
    notes: list[str] = field(default_factory=list)  # warnings and decisions, shown in the summary
    method: str | None = None  # how it was made, for the summary (e.g. "script (--script)")


class Variant:
    name: ClassVar[str]
    label: ClassVar[str]  # what the row in a report means
    engine: ClassVar[Engine]
    # EAGER or TORCHSCRIPT: what bench compares it as (the eager-vs-TorchScript verdict, the
    # in-process ceiling of its own artifact); None for the others (compiled, AOTInductor),
    # which bench compares with the best in-process figure of any artifact.
    artifact: ClassVar[str | None] = None
    # True when the artifact comes from torch.export (AOTInductor): a model TorchScript cannot
    # take may still export.
    exported: ClassVar[bool] = False
    # How a sentence of bench's report names it; None: "the <name> variant".
    words: ClassVar[str | None] = None

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        raise NotImplementedError

    def batch_one(self, spec: ModelSpec) -> bool:
        """True when the backend cannot batch this variant in ``spec``'s target release: it is
        served with max_batch_size 0 at batch size 1."""
        return False

    def served_names(self, spec: ModelSpec) -> tuple[list[str], list[str]] | None:
        """(input names, output names) the server knows the tensors by in ``spec``'s target
        release, in the spec's order; None: the spec's own names."""
        return None

    def check_batch_sizes(self, spec: ModelSpec) -> tuple[int, ...]:
        """Batch sizes, besides the sample cases', the offline check runs the artifact at: the
        sizes a server forms that an export may handle apart (a dynamic batch dim at 1)."""
        return ()

    def served_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec as the server sees this variant (names, batching)."""
        inputs, outputs = spec.inputs, spec.outputs
        changes = {}
        if self.batch_one(spec) and spec.batching:
            inputs = tuple(dataclasses.replace(t, dims=(1, *t.dims)) for t in inputs)
            outputs = tuple(dataclasses.replace(t, dims=(1, *t.dims)) for t in outputs)
            changes.update(max_batch_size=0, dynamic_batching=False, max_queue_size=0,
                           queue_timeout_us=0, preferred_batch_sizes=())
        names = self.served_names(spec)
        if names is not None:
            inputs = tuple(dataclasses.replace(t, name=n) for t, n in zip(inputs, names[0]))
            outputs = tuple(dataclasses.replace(t, name=n) for t, n in zip(outputs, names[1]))
        return spec.with_(inputs=inputs, outputs=outputs, **changes)

    def served_arrays(self, spec: ModelSpec, arrays: dict[str, np.ndarray],
                      tensors) -> dict[str, np.ndarray]:
        """Sample/reference arrays (as the served artifact takes/returns them) keyed and shaped
        as clients send and receive them: what verify sends and expects, and bench sends."""
        served = self.served_spec(spec)
        renamed = {}
        for t, s in zip(tensors, served.inputs if tensors is spec.inputs else served.outputs):
            a = arrays[t.name]
            a = a[:1] if self.batch_one(spec) and spec.batching else a
            if s.reshape(served.batching) is not None:  # the model's shape -> the API's
                a = a.reshape(a.shape[:1 if served.batching else 0] + s.api_dims)
            renamed[s.name] = a
        return renamed


def bf16_without_backend(spec: ModelSpec) -> list[str]:
    """The names of ``spec``'s bfloat16 inputs and outputs when the PyTorch backend of its target
    release has no BF16 tensors ([] when it has, or there are none)."""
    if releases.has(spec.triton_release, releases.PYTORCH_BF16):
        return []
    return [t.name for t in (*spec.inputs, *spec.outputs) if t.dtype == "bfloat16"]


def refuse_bf16(spec: ModelSpec, variant: str) -> None:
    """Refuse ``variant``, served by the PyTorch backend, when ``spec`` has bfloat16 inputs or
    outputs and the backend of its target release has no BF16 tensors."""
    bf16 = bf16_without_backend(spec)
    feature = releases.PYTORCH_BF16
    if not bf16:
        return
    raise ExportError(
        f"{', '.join(bf16)} {'is' if len(bf16) == 1 else 'are'} bfloat16, and the PyTorch"
        f" backend of Triton {spec.triton_release} (--triton-release) has no BF16 tensors"
        f" (from {feature.since} on): it would refuse every request to the {variant} variant.",
        f"Serve it with the python variant, which carries BF16 on every release; or return"
        f" float32 from forward() (out.float()); or, for a Triton {feature.since} or later"
        f" server, pass --triton-release {feature.since}.")


def forward_parameters(spec: ModelSpec) -> dict[str, str]:
    """The runtime's parameter for the context of the forward pass: set only for a model that
    needs torch.no_grad (autograd inside forward()) instead of inference mode."""
    from ..runtime.model import FORWARD_MODE, INFERENCE_MODE

    return {} if spec.forward_mode == INFERENCE_MODE else {FORWARD_MODE: spec.forward_mode}


def python_backend_parameters(spec: ModelSpec, load_params: dict[str, str]) -> dict[str, str]:
    """Parameters of a Python-backend config: how to load the artifact, threads, the forward
    pass's context where it is not inference mode, and imports at load where asked."""
    from ..runtime.model import AT_LOAD, DEFERRED_IMPORTS

    deferral = {} if spec.deferred_imports else {DEFERRED_IMPORTS: AT_LOAD}
    return {**load_params, "threads": str(spec.threads), **forward_parameters(spec), **deferral}


def install_runtime(version_dir: Path) -> None:
    shutil.copyfile(RUNTIME_MODEL, version_dir / "model.py")
