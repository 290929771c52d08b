"""What every variant gets (ExportContext) and returns (Artifact)."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

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
        import torch

        return [torch.from_numpy(np.ascontiguousarray(case.inputs[t.name]))
                for t in self.spec.inputs]


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
    # How the server addresses tensors: False = the spec's names; True = INPUT__i / OUTPUT__i.
    ordinal_names: ClassVar[bool] = False
    # True when the backend cannot batch: served with max_batch_size 0 and batch size 1.
    batch_one: ClassVar[bool] = False
    # EAGER or TORCHSCRIPT: what bench compares it as (the eager-vs-TorchScript verdict, the
    # in-process ceiling of its own artifact); None for the others (compiled, AOTInductor),
    # which bench compares with the best in-process figure of any artifact.
    artifact: ClassVar[str | None] = None
    # How a sentence of bench's report names it; None: "the <name> variant".
    words: ClassVar[str | None] = None

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        raise NotImplementedError

    def served_spec(self, spec: ModelSpec) -> ModelSpec:
        """The spec as the server sees this variant (names, batching)."""
        inputs, outputs = spec.inputs, spec.outputs
        changes = {}
        if self.batch_one and spec.batching:
            inputs = tuple(dataclasses.replace(t, dims=(1, *t.dims)) for t in inputs)
            outputs = tuple(dataclasses.replace(t, dims=(1, *t.dims)) for t in outputs)
            changes.update(max_batch_size=0, dynamic_batching=False, max_queue_size=0,
                           queue_timeout_us=0, preferred_batch_sizes=())
        if self.ordinal_names:
            inputs = tuple(dataclasses.replace(t, name=f"INPUT__{i}") for i, t in enumerate(inputs))
            outputs = tuple(dataclasses.replace(t, name=f"OUTPUT__{i}")
                            for i, t in enumerate(outputs))
        return spec.with_(inputs=inputs, outputs=outputs, **changes)

    def served_arrays(self, spec: ModelSpec, arrays: dict[str, np.ndarray],
                      tensors) -> dict[str, np.ndarray]:
        """Sample/reference arrays (as the served artifact takes/returns them) keyed and shaped
        as clients send and receive them: what verify sends and expects, and bench sends."""
        served = self.served_spec(spec)
        renamed = {}
        for t, s in zip(tensors, served.inputs if tensors is spec.inputs else served.outputs):
            a = arrays[t.name]
            a = a[:1] if self.batch_one and spec.batching else a
            if s.reshape(served.batching) is not None:  # the model's shape -> the API's
                a = a.reshape(a.shape[:1 if served.batching else 0] + s.api_dims)
            renamed[s.name] = a
        return renamed


def python_backend_parameters(spec: ModelSpec, load_params: dict[str, str]) -> dict[str, str]:
    """Parameters of a Python-backend config: how to load the artifact, and threads."""
    return {**load_params, "threads": str(spec.threads)}


def install_runtime(version_dir: Path) -> None:
    shutil.copyfile(RUNTIME_MODEL, version_dir / "model.py")
