"""HuggingFace transformers architectures with tiny configs (zoo/hf_zoo.py): encoders, decoders
with and without cache, encoder-decoders, vision, audio and one multimodal model."""

from __future__ import annotations

import functools
import itertools
import importlib.util
from pathlib import Path

from . import Entry

ZOO = Path(__file__).resolve().parent / "zoo" / "hf_zoo.py"
# The feature extractor of the speech models needs 400+ samples: the route the build's refusal
# names (--check-lengths), as a user would take it.
AUDIO_OPTIONS = {"check_lengths": "1600,1203"}


def zoo():
    spec = importlib.util.spec_from_file_location("hf_zoo", ZOO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make(name: str):
    """The model the build makes from ZOO:<name>, with the same weights."""
    return getattr(zoo(), name)()


def entries() -> list[Entry]:
    """One model of each kind in turn (encoder, decoder, ...), so that a time budget or --limit
    keeps every kind."""
    by_kind: dict[str, list[Entry]] = {}
    for name, (_, _, kind, inputs, _) in zoo().MODELS.items():
        by_kind.setdefault(kind, []).append(
            Entry("hf", name, kind, f"{ZOO}:{name}", inputs, functools.partial(make, name),
                  options=AUDIO_OPTIONS if kind == "audio" else {}))
    rounds = itertools.zip_longest(*by_kind.values())
    return [e for row in rounds for e in row if e is not None]
