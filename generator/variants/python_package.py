"""python: the eager model on the Python backend, shipped as a hermetic torch.package archive."""

from __future__ import annotations

from pathlib import Path

from ..repository.config import Engine
from ..runtime.model import sha256_of
from .base import (EAGER, Artifact, ExportContext, Variant, install_runtime,
                   python_backend_parameters)
from .packaging import baked_parametrizations, export_package
from .weights import WEIGHTS, save_weights, weights_on_meta

ARTIFACT = "model.package"


class PythonPackageVariant(Variant):
    name = "python"
    label = "eager PyTorch on the Python backend (torch.package)"
    engine = Engine("backend", "python")
    artifact = EAGER
    words = "the eager Python variant"

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        path = version_dir / ARTIFACT
        load_params = {"artifact": ARTIFACT, "loader": "package"}
        model, notes = baked_parametrizations(ctx.model)
        files = [ARTIFACT, "model.py"]
        if ctx.spec.mapped_weights:
            try:
                save_weights(model, version_dir / WEIGHTS)
            except Exception as e:  # a tensor a weights-only load cannot read: keep them inside
                (version_dir / WEIGHTS).unlink(missing_ok=True)
                notes.append(f"the weights stay inside {ARTIFACT} (each instance holds its own"
                             f" copy): a mapped weights-only load cannot read them"
                             f" ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            else:
                load_params.update(weights=WEIGHTS,
                                   weights_sha256=sha256_of(version_dir / WEIGHTS))
                files.append(WEIGHTS)
        if "weights" in load_params:
            with weights_on_meta(model):
                notes += export_package(ctx, path, model)
        else:
            notes += export_package(ctx, path, model)
        install_runtime(version_dir)
        load_params["artifact_sha256"] = sha256_of(path)
        return Artifact(files, load_params, python_backend_parameters(ctx.spec, load_params),
                        notes)
