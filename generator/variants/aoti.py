"""aoti: the AOTInductor package on Triton's PyTorch backend (platform "torch_aoti", model.pt2).

What its config may use depends on the target release (``spec.triton_release``; the table is
generator/releases.py): the platform exists from 26.03, so for an older release the variant is
refused with one that serves it; until 26.04 the backend binds tensors by position, named
INPUT__i/OUTPUT__i, and from 26.05 by the package's call spec (KWARGS[<input>], RESULT[<i>]);
until 26.05 it serves batch 1 only (max_batch_size 0, dims with a leading 1, no dynamic
batching), and from 26.06 it batches along the package's dynamic batch dim, so the check runs
the package at the batch sizes a batcher forms. The embedded server has no PyTorch backend: this
variant is built and checked offline here, and served by a server of its target release.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import releases
from ..repository.config import Engine
from ..errors import ExportError
from ..runtime.model import sha256_of
from .aoti_export import ARTIFACT, call_spec_names, compiled_package
from .base import Artifact, ExportContext, Variant, refuse_bf16


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


def batcher_sizes(spec) -> tuple[int, ...]:
    """The batch sizes beyond the sample cases' that a check of a batching AOTInductor package
    runs: 1, max_batch_size and the preferred ones (none without batching)."""
    if not spec.batching:
        return ()
    return tuple(sorted({1, spec.max_batch_size, *spec.preferred_batch_sizes}))


def refuse_release(spec) -> None:
    """Refuse the variant when ``spec``'s target release has no torch_aoti platform."""
    feature = releases.TORCH_AOTI
    if releases.has(spec.triton_release, feature):
        return
    raise ExportError(
        f"torch_aoti needs Triton {feature.since} or later, and the configs are written for"
        f" Triton {spec.triton_release} (--triton-release {spec.triton_release}), whose PyTorch"
        " backend has no such platform.",
        f"For a Triton {feature.since}+ server pass its release, e.g. --triton-release"
        f" {releases.AOTI_BATCHING.since} (torch_aoti batches from"
        f" {releases.AOTI_BATCHING.since}); or build the python-aoti variant, which serves the"
        " same .pt2 on the Python backend of any release.")


class AotiVariant(Variant):
    name = "aoti"
    label = "AOTInductor (.pt2) on the PyTorch backend (torch_aoti)"
    engine = Engine("platform", "torch_aoti")
    exported = True

    def batch_one(self, spec) -> bool:
        return not releases.has(spec.triton_release, releases.AOTI_BATCHING)

    def served_names(self, spec) -> tuple[list[str], list[str]]:
        if releases.has(spec.triton_release, releases.AOTI_CALL_SPEC_NAMES):
            return call_spec_names(spec)
        return ([f"INPUT__{i}" for i in range(len(spec.inputs))],
                [f"OUTPUT__{i}" for i in range(len(spec.outputs))])

    def check_batch_sizes(self, spec) -> tuple[int, ...]:
        return (1,) if self.batch_one(spec) and spec.batching else batcher_sizes(spec)

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        spec = ctx.spec
        refuse_release(spec)
        refuse_bf16(spec, self.name)
        load_params = copy_package(ctx, version_dir)
        inputs, outputs = self.served_names(spec)
        notes = [f"Triton {spec.triton_release}: tensors named {', '.join(inputs + outputs)}"]
        if spec.batching and self.batch_one(spec):
            notes.append(f"torch_aoti batches from Triton {releases.AOTI_BATCHING.since}: for"
                         f" {spec.triton_release} it is served with max_batch_size 0 at batch"
                         " size 1; python-aoti serves the same .pt2 with dynamic batching")
        return Artifact([ARTIFACT], load_params, {}, notes)
