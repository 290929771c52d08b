"""The variant registry: name -> class. Adding a variant = one module + one line here."""

from __future__ import annotations

from .aoti import AotiVariant
from .libtorch import LibtorchVariant
from .python_aoti import PythonAotiVariant
from .python_compile import PythonCompileVariant
from .python_package import PythonPackageVariant
from .python_ts import PythonTorchScriptVariant

VARIANTS = {v.name: v for v in (LibtorchVariant, PythonPackageVariant, PythonTorchScriptVariant,
                                PythonAotiVariant, PythonCompileVariant, AotiVariant)}


def get(name: str):
    return VARIANTS[name]()
