"""The python variants' weights, apart from the pickled module: ``1/weights.pt`` (torch.save of
the state dict) beside ``1/model.package``, whose pickled model holds meta tensors of the same
shapes in their place. The runtime maps the file (``torch.load(mmap=True)``) and assigns its
tensors to the model, so every Python-backend instance of the model on a machine reads the same
page-cache pages: one copy of the weights in memory, not one (or two) per instance. The archive
stays hermetic (its code, no weights) and the weights file is SHA-256-checked like it. When the
build chooses the channels_last layout for the forward pass, the file stores the 4-D weights in
that layout, so the runtime's conversion changes nothing and the pages stay shared.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

WEIGHTS = "weights.pt"


@contextlib.contextmanager
def weights_on_meta(model):
    """Within the block, ``model``'s parameters and persistent buffers are meta tensors of the
    same shapes and dtypes (a tensor shared by two modules stays shared); the real ones are
    back after it."""
    import torch

    swapped, metas = [], {}
    for module in model.modules():
        for table, skip in ((module._parameters, set()),
                            (module._buffers, module._non_persistent_buffers_set)):
            for name, tensor in list(table.items()):
                if tensor is None or name in skip:
                    continue
                meta = metas.get(id(tensor))
                if meta is None:
                    meta = torch.empty_like(tensor, device="meta")
                    if isinstance(tensor, torch.nn.Parameter):
                        meta = torch.nn.Parameter(meta, requires_grad=tensor.requires_grad)
                    metas[id(tensor)] = meta
                swapped.append((table, name, tensor))
                table[name] = meta
    try:
        yield
    finally:
        for table, name, tensor in reversed(swapped):
            table[name] = tensor


def save_weights(model, path: Path) -> None:
    """torch.save of ``model``'s state dict (parameters and persistent buffers), readable by a
    mapped, weights-only load; raises what that load raises when it is not."""
    import torch

    torch.save(_same_metadata(model.state_dict(), lambda v: v.detach().contiguous()), str(path))
    torch.load(str(path), mmap=True, weights_only=True, map_location="cpu")


def _same_metadata(state, convert):
    """``state`` with ``convert`` applied to every tensor, keeping its ``_metadata`` (the
    per-module versions that a module's own _load_from_state_dict may require, e.g. MNASNet's)."""
    from collections import OrderedDict

    out = OrderedDict((k, convert(v)) for k, v in state.items())
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata
    return out


def store_layout(version_dir: Path, load_params: dict, chosen: dict) -> dict:
    """Store the weights file in the memory layout ``chosen`` (the config parameters of the
    forward pass the build measured); the load parameters that change ({} when none)."""
    import torch

    from ..runtime.model import CHANNELS_LAST, MEMORY_FORMAT, sha256_of

    if chosen.get(MEMORY_FORMAT) != CHANNELS_LAST:
        return {}
    path = version_dir / load_params["weights"]
    state = torch.load(str(path), weights_only=True, map_location="cpu")
    torch.save(_same_metadata(state, lambda v: v.contiguous(memory_format=torch.channels_last)
                              if v.dim() == 4 else v), str(path))
    return {"weights_sha256": sha256_of(path)}
