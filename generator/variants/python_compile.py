"""python-compile: the eager torch.package run under torch.compile in the Python backend.

Compiled and warmed up in initialize() for the batch sizes the dynamic batcher can form (dynamic
shapes: 1, 2 and max_batch_size cover them), so no request pays for compilation; a compile failure
falls back to eager with the reason in the server log (and in the build summary).
"""

from __future__ import annotations

from pathlib import Path

from ..repository.config import Engine
from .base import Artifact, ExportContext, Variant
from .python_package import PythonPackageVariant


def warmup_batch_sizes(spec) -> str:
    if not spec.batching:
        return ""
    sizes = {1, min(2, spec.max_batch_size), spec.max_batch_size, *spec.preferred_batch_sizes}
    return ",".join(str(s) for s in sorted(sizes))


class PythonCompileVariant(Variant):
    name = "python-compile"
    label = "eager PyTorch under torch.compile on the Python backend"
    engine = Engine("backend", "python")

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        artifact = PythonPackageVariant().export(ctx, version_dir)
        extra = {"compile_mode": ctx.spec.compile_mode,
                 "warmup_batch_sizes": warmup_batch_sizes(ctx.spec)}
        artifact.load_params.update(extra)
        artifact.config_parameters.update(extra)
        return artifact
