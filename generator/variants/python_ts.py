"""python-ts: the TorchScript artifact served through the Python backend.

It lets TorchScript be compared with the eager model on a server without a PyTorch backend
(the embedded one); reports label it as such, never as the libtorch variant.
"""

from __future__ import annotations

from pathlib import Path

from ..repository.config import Engine
from .base import (TORCHSCRIPT, Artifact, ExportContext, Variant, install_runtime,
                   python_backend_parameters)
from .libtorch import ARTIFACT, save_torchscript


class PythonTorchScriptVariant(Variant):
    name = "python-ts"
    label = "TorchScript through the Python backend (stand-in where no PyTorch backend exists)"
    engine = Engine("backend", "python")
    artifact = TORCHSCRIPT
    words = "TorchScript through the Python backend (python-ts)"

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        load_params, made = save_torchscript(ctx, version_dir)
        install_runtime(version_dir)
        return Artifact([ARTIFACT, "model.py"], load_params,
                        python_backend_parameters(ctx.spec, load_params), list(made.notes),
                        made.summary)
