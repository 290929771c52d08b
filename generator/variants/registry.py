"""The variant registry: name -> class, and what other stages ask about the variants by name.
Adding a variant = one module + one line here, and its name in ``spec.VARIANT_NAMES`` (the spec
validates names against that list; this module refuses to import while the two disagree).

Importing it loads every variant's code, torch with it (seconds, hundreds of MB), so bench
imports it inside the functions that need it, not at its own import."""

from __future__ import annotations

from ..spec import VARIANT_NAMES
from .aoti import AotiVariant
from .libtorch import LibtorchVariant
from .python_aoti import PythonAotiVariant
from .python_compile import PythonCompileVariant
from .python_package import PythonPackageVariant
from .python_ts import PythonTorchScriptVariant

VARIANTS = {v.name: v for v in (LibtorchVariant, PythonPackageVariant, PythonTorchScriptVariant,
                                PythonAotiVariant, PythonCompileVariant, AotiVariant)}
if tuple(VARIANTS) != VARIANT_NAMES:  # a programming error, caught by any import
    raise ImportError(f"spec.VARIANT_NAMES {VARIANT_NAMES} and the registered variants"
                      f" {tuple(VARIANTS)} disagree")


def get(name: str):
    return VARIANTS[name]()


def by_artifact(artifact: str) -> tuple[str, ...]:
    """The variants whose artifact is ``artifact`` (base.EAGER, base.TORCHSCRIPT), in registry
    order: the PyTorch backend's first."""
    return tuple(name for name, v in VARIANTS.items() if v.artifact == artifact)


def exported() -> tuple[str, ...]:
    """The variants whose artifact torch.export makes, in registry order."""
    return tuple(name for name, v in VARIANTS.items() if v.exported)


def artifact_of(name: str) -> str | None:
    """The variant's ``artifact`` (None also for a name that is no registered variant)."""
    v = VARIANTS.get(name)
    return v.artifact if v else None


def words(name: str) -> str:
    """How a sentence names the variant: its ``words``, else "the <name> variant"."""
    v = VARIANTS.get(name)
    return (v.words if v else None) or f"the {name} variant"
