"""Every ``torchvision.models.list_models()`` entry that fits this machine (at most MAX_PARAMS
parameters), built as a user would: ``gen-repo build torchvision:<name>``, random weights.

Images are 224x224 (segmentation too: 520x520 is torchvision's reference size, and only costs
time here), video clips 16 frames of 112x112 (224x224 for MViT and S3D, which need it) in batches
of at most 2 (a clip is 10-40 images' work: the checks of batches of 8 take many minutes on 2
cores), optical flow two 128x128 frames. A detector is built as its refusal's TIP says: one image per request
(``--max-batch-size 0`` and a batch of exactly one image in the input dims, which torchvision's
detectors take as one tensor); batched, it returns one dict per image, which the build refuses
(tests/integration/test_row_shapes.py).
"""

from __future__ import annotations

import functools
import itertools

from . import Entry

MAX_PARAMS = 100_000_000
SEED = 0  # gen-repo build's default --seed: the build seeds torch with it before the builder


def _kind(name: str) -> str:
    import torchvision.models as tvm

    module = tvm.get_model_builder(name).__module__.split(".")
    return module[2] if len(module) > 3 else "classification"


def _inputs(name: str, kind: str) -> tuple[str, ...]:
    if kind == "video":
        side = 224 if name.startswith(("mvit", "s3d")) else 112  # their last pool needs 224
        return (f"x:float32:3,16,{side},{side}",)
    if kind == "optical_flow":
        return ("image1:float32:3,128,128", "image2:float32:3,128,128")
    if kind == "detection":
        return ("images:float32:1,3,224,224",)
    return ("x:float32:3,224,224",)


def _options(kind: str) -> dict:
    return {"detection": {"max_batch_size": 0}, "video": {"max_batch_size": 2}}.get(kind, {})


def make(name: str):
    """The model ``gen-repo build torchvision:<name>`` builds, with the same weights."""
    import torch
    import torchvision.models as tvm

    torch.manual_seed(SEED)
    try:
        return tvm.get_model(name, weights=None, weights_backbone=None)
    except TypeError:  # builders without a backbone argument
        return tvm.get_model(name, weights=None)


@functools.cache
def _params(name: str) -> int:
    """Made on the meta device (no memory, no time), or for real where a builder computes with
    tensors (RegNet's widths)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)  # GoogLeNet's init notice
    try:
        with torch.device("meta"):
            model = make(name)
    except NotImplementedError:
        model = make(name)
    return sum(p.numel() for p in model.parameters())


def entries() -> list[Entry]:
    """One model of each kind in turn (classification, detection, ...), the smallest first in
    each kind, so that a time budget or --limit keeps every kind."""
    import torchvision.models as tvm

    by_kind: dict[str, list[Entry]] = {}
    for name in tvm.list_models():
        params = _params(name)
        if params > MAX_PARAMS:
            continue
        kind = _kind(name)
        by_kind.setdefault(kind, []).append(
            Entry("torchvision", name, kind, f"torchvision:{name}", _inputs(name, kind),
                  functools.partial(make, name), _options(kind), params=params))
    rounds = itertools.zip_longest(*(sorted(k, key=lambda e: e.params) for k in by_kind.values()))
    return [e for row in rounds for e in row if e is not None]


def too_large() -> list[tuple[str, int]]:
    """(name, parameters) of the models left out for their size."""
    import torchvision.models as tvm

    return [(n, p) for n in tvm.list_models() if (p := _params(n)) > MAX_PARAMS]
