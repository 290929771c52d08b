"""The Triton releases gen-repo writes configs for, and what each release allows.

A build targets one release (``--triton-release YY.MM``, default: the release of the embedded
server). The features below are the differences between releases that a written config can
depend on, each with the first release that has it; the variants decide from this table what
they write, the config writer checks a config against it, and serve compares a model's features
with the release of the server that loads it. docs/triton-releases.md gives the sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SpecError

# The tritonserver of nvidia-pytriton 0.7.0: the embedded server, and the default target.
EMBEDDED_RELEASE = "24.10"
# tritonserver (and tritonclient) version of each release named here: the server repository's
# TRITON_VERSION on each release branch. There was no 25.07 container; the numbers are not
# monthly across it.
SERVER_VERSIONS = {"24.10": "2.51.0", "26.03": "2.67.0", "26.04": "2.68.0",
                   "26.05": "2.69.0", "26.06": "2.70.0", "26.07": "2.71.0", "26.08": "2.72.0"}


@dataclass(frozen=True)
class Feature:
    """Something a config may use from release ``since`` on; ``what`` names it in a sentence."""

    key: str
    since: str
    what: str


TORCH_AOTI = Feature("torch_aoti", "26.03",
                     'platform "torch_aoti" (an AOTInductor .pt2 on the PyTorch backend, beta)')
AOTI_CALL_SPEC_NAMES = Feature("aoti_call_spec_names", "26.05",
                               "torch_aoti tensors named by the package's call spec"
                               " (KWARGS[<input>], RESULT[<i>]) instead of INPUT__i/OUTPUT__i")
AOTI_BATCHING = Feature("aoti_batching", "26.06",
                        "batching on torch_aoti (max_batch_size > 0, a dynamic batch dim)")
PYTORCH_BF16 = Feature("pytorch_bf16", "26.11", "BF16 tensors on the PyTorch backend")
FEATURES = (TORCH_AOTI, AOTI_CALL_SPEC_NAMES, AOTI_BATCHING, PYTORCH_BF16)

_RELEASE = re.compile(r"(\d\d)\.(\d\d)")


def parse(text: str, where: str = "--triton-release") -> str:
    """``text`` as a release "YY.MM"; a SpecError naming ``where`` when it is not one."""
    m = _RELEASE.fullmatch(str(text).strip())
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise SpecError(f"{where} {text!r} is not a Triton release (YY.MM).",
                        f"Name the release of the server you run, as its NGC image tag does"
                        f" (nvcr.io/nvidia/tritonserver:26.06-py3 -> 26.06); the default is"
                        f" {EMBEDDED_RELEASE}, the embedded server's.")
    return m.group(0)


def has(release: str, feature: Feature) -> bool:
    """Whether ``release`` has ``feature``."""
    return release >= feature.since  # YY.MM strings order as the releases do


def missing(release: str, features) -> list[Feature]:
    """The ``features`` that ``release`` lacks."""
    return [f for f in features if not has(release, f)]


def image(release: str) -> str:
    """The NGC tritonserver image of ``release``."""
    return f"nvcr.io/nvidia/tritonserver:{release}-py3"
