"""The coverage corpus: real architectures from torchvision, timm and HuggingFace transformers,
random weights, nothing downloaded, and the project's own fixtures of each kind of model that
once fooled the checks ("cases"). Each entry says how ``gen-repo build`` is asked for the model
(its source and ``--input`` specs, named after forward()'s parameters) and how to make the same
model again, with the same weights, for references computed apart from the build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

CORPORA = ("torchvision", "timm", "hf", "cases")


@dataclass(frozen=True)
class Entry:
    corpus: str  # one of CORPORA
    name: str  # unique in the corpus; the model's name in the repository is corpus_name
    family: str
    source: str  # as `gen-repo build` takes it
    inputs: tuple[str, ...]  # --input specs; several: each named after a forward() parameter
    make: Callable[[], object] = field(compare=False)  # the eager model, the build's weights
    options: dict = field(default_factory=dict, compare=False)  # other build options, spec keys
    params: int = 0  # parameter count (0: not known before it is made)

    @property
    def key(self) -> str:
        return f"{self.corpus}/{self.name}"

    @property
    def model_name(self) -> str:
        return f"{self.corpus}_{self.name}".replace("-", "_").replace(".", "_")


def entries(corpora=CORPORA) -> list[Entry]:
    """Every entry of the named corpora, in the order they run."""
    from . import fixture_models, hf_models, timm_models, torchvision_models

    found = {"torchvision": torchvision_models.entries, "timm": timm_models.entries,
             "hf": hf_models.entries, "cases": fixture_models.entries}
    return [e for c in corpora for e in found[c]()]
