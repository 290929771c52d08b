"""python-aoti: the AOTInductor .pt2 loaded with aoti_load_package inside the Python backend,
with the dynamic batch dim, so it batches and serves on the embedded server."""

from __future__ import annotations

from pathlib import Path

from ..repository.config import Engine
from .aoti import batcher_sizes, copy_package
from .base import Artifact, ExportContext, Variant, install_runtime, python_backend_parameters


class PythonAotiVariant(Variant):
    name = "python-aoti"
    label = "AOTInductor (.pt2) through the Python backend"
    engine = Engine("backend", "python")
    exported = True

    def check_batch_sizes(self, spec) -> tuple[int, ...]:
        return batcher_sizes(spec)

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        load_params = copy_package(ctx, version_dir)
        install_runtime(version_dir)
        return Artifact(["model.pt2", "model.py"], load_params,
                        python_backend_parameters(ctx.spec, load_params))
