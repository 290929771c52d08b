"""What every variant gets (ExportContext) and returns (Artifact)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..config import Engine
from ..spec import ModelSpec

RUNTIME_MODEL = Path(__file__).resolve().parent.parent / "runtime" / "model.py"


@dataclass
class ExportContext:
    spec: ModelSpec  # complete: outputs inferred
    model: object  # the eager GenRepoWrapper (flat tuple outputs, forward args = input names)
    wrapper_module: str
    user_modules: tuple[str, ...]
    cases: list  # samples.Case
    references: dict[str, dict[str, np.ndarray]]  # case name -> output name -> array
    cache: dict = field(default_factory=dict)  # shared work between variants (e.g. TorchScript)

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


class Variant:
    name: ClassVar[str]
    label: ClassVar[str]  # what the row in a report means
    engine: ClassVar[Engine]

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        raise NotImplementedError


def python_backend_parameters(spec: ModelSpec, load_params: dict[str, str]) -> dict[str, str]:
    """Parameters of a Python-backend config: how to load the artifact, and threads."""
    return {**load_params, "threads": str(spec.threads)}


def install_runtime(version_dir: Path) -> None:
    shutil.copyfile(RUNTIME_MODEL, version_dir / "model.py")
