"""The variant registry: name -> class. Adding a variant = one module + one line here, and its
name in ``spec.VARIANT_NAMES`` (the spec validates names against that list; this module refuses
to import while the two disagree)."""

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
