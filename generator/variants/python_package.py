"""python: the eager model on the Python backend, shipped as a hermetic torch.package archive."""

from __future__ import annotations

from pathlib import Path

from ..repository.config import Engine
from ..runtime.model import sha256_of
from .base import (EAGER, Artifact, ExportContext, Variant, install_runtime,
                   python_backend_parameters)
from .packaging import export_package

ARTIFACT = "model.package"


class PythonPackageVariant(Variant):
    name = "python"
    label = "eager PyTorch on the Python backend (torch.package)"
    engine = Engine("backend", "python")
    artifact = EAGER
    words = "the eager Python variant"

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        path = version_dir / ARTIFACT
        notes = export_package(ctx, path)
        install_runtime(version_dir)
        load_params = {"artifact": ARTIFACT, "loader": "package",
                       "artifact_sha256": sha256_of(path)}
        return Artifact([ARTIFACT, "model.py"], load_params,
                        python_backend_parameters(ctx.spec, load_params), notes)
