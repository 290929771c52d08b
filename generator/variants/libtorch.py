"""libtorch: TorchScript on Triton's PyTorch backend (platform "pytorch_libtorch", 1/model.pt).

I/O naming (pytorch_backend, checked against release 24.10's source): inputs are matched to
forward() argument names when every config input name is one (the wrapper's forward takes the
spec's input names); outputs without a `<name>__<index>` suffix are matched by config order, which
is the order the wrapper returns them in. Output names never contain "__".
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..build.config import Engine
from ..runtime.model import sha256_of
from .base import Artifact, ExportContext, Variant
from .torchscript import TorchScript, make_torchscript

ARTIFACT = "model.pt"


def save_torchscript(ctx: ExportContext, version_dir: Path) -> tuple[dict[str, str], TorchScript]:
    import torch

    made = make_torchscript(ctx)
    path = version_dir / ARTIFACT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.save is deprecated"
        torch.jit.save(made.module, str(path))
    params = {"artifact": ARTIFACT, "loader": "torchscript", "artifact_sha256": sha256_of(path),
              "torchscript_method": made.method}
    return params, made


class LibtorchVariant(Variant):
    name = "libtorch"
    label = "TorchScript on the PyTorch (libtorch) backend"
    engine = Engine("platform", "pytorch_libtorch")

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        load_params, made = save_torchscript(ctx, version_dir)
        parameters = {"INFERENCE_MODE": "true", "DISABLE_OPTIMIZED_EXECUTION": "false"}
        if ctx.spec.threads:
            parameters["INTRA_OP_THREAD_COUNT"] = str(ctx.spec.threads)
        return Artifact([ARTIFACT], load_params, parameters, list(made.notes), made.summary)
