"""aoti: the AOTInductor package on Triton's PyTorch backend (platform "torch_aoti", model.pt2).

The backend (Triton 26.03 and later, beta) names tensors INPUT__i / OUTPUT__i by position and
does not yet support batch sizes above 1: the config serves batch 1 (max_batch_size 0, dims with a
leading 1, no dynamic batching). The embedded server has no PyTorch backend, so this variant is
built and checked offline here, and served by a Triton 26.03+ server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..repository.config import Engine
from ..errors import ExportError
from ..runtime.model import sha256_of
from .aoti_export import ARTIFACT, compiled_package
from .base import Artifact, ExportContext, Variant


def copy_package(ctx: ExportContext, version_dir: Path) -> dict[str, str]:
    if ctx.spec.gpu_instances:
        raise ExportError(
            "the AOTInductor package is compiled for the CPU (gen-repo compiles .pt2 files for"
            " the CPU only), and a CPU package cannot serve the KIND_GPU instances of"
            f" --gpu-instances {ctx.spec.gpu_instances}.",
            "Serve the model on GPUs with the python or python-compile variant (torch.compile"
            " compiles for the GPU when its instance loads), or build the AOTInductor variants"
            " for CPU instances only (--gpu-instances 0).")
    path = version_dir / ARTIFACT
    shutil.copyfile(compiled_package(ctx), path)
    return {"artifact": ARTIFACT, "loader": "aoti", "artifact_sha256": sha256_of(path)}


class AotiVariant(Variant):
    name = "aoti"
    label = "AOTInductor (.pt2) on the PyTorch backend (torch_aoti, batch 1)"
    engine = Engine("platform", "torch_aoti")
    ordinal_names = True
    batch_one = True

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        load_params = copy_package(ctx, version_dir)
        notes = []
        if ctx.spec.batching:
            notes.append("torch_aoti does not batch yet (Triton 26.x): served with"
                         " max_batch_size 0 at batch size 1, tensors named INPUT__i/OUTPUT__i;"
                         " python-aoti serves the same .pt2 with dynamic batching")
        return Artifact([ARTIFACT], load_params, {}, notes)
