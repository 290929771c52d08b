"""Factories for ``gen-repo build benchmarks/corpus/zoo/timm_zoo.py:<timm model name>``: the timm
architecture of that name, random weights (seeded, so every call makes the same ones)."""

import torch

SEED = 0


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    import timm

    if name not in timm.list_models():
        raise AttributeError(f"timm has no model {name!r}")

    def factory():
        torch.manual_seed(SEED)
        return timm.create_model(name, pretrained=False)

    factory.__name__ = name
    return factory
