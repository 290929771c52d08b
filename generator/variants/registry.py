"""The variant registry: name -> class. Adding a variant = one module + one line here."""

from __future__ import annotations

from .libtorch import LibtorchVariant
from .python_package import PythonPackageVariant
from .python_ts import PythonTorchScriptVariant

VARIANTS = {v.name: v for v in (LibtorchVariant, PythonPackageVariant, PythonTorchScriptVariant)}


def get(name: str):
    return VARIANTS[name]()
