"""torch.package policy for the eager variant.

- intern: the user's own code (the factory's top-level module, its helper modules, anything not
  installed as a distribution) and the generated wrapper — the archive carries their source;
- extern: torch (implicit), the standard library (implicit, plus ``sys`` and ``io`` which
  torch.package wants named), torchvision, numpy, and every other installed distribution the code
  imports. Externs other than torch/torchvision/numpy must be installed where the server runs:
  the build says which, with the version to install.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

from ..errors import ExportError
from ..runtime.model import PACKAGE_RESOURCE
from .base import ExportContext

SERVER_PROVIDES = ("torch", "torchvision", "numpy")


def _installed_top_levels() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def export_package(ctx: ExportContext, path: Path) -> list[str]:
    """Write the archive; return notes (what the server image must add)."""
    from torch.package import PackageExporter
    from torch.package.package_exporter import PackagingError

    own = set(ctx.user_modules) | {ctx.wrapper_module}
    installed = _installed_top_levels()
    extern_tops = sorted((set(installed) | {"sys", "io", *SERVER_PROVIDES}) - own)
    try:
        with warnings.catch_warnings(), PackageExporter(str(path)) as exp:
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            for mod in sorted(own):
                exp.intern([mod, f"{mod}.**"], allow_empty=True)
            exp.extern([p for top in extern_tops for p in (top, f"{top}.**")], allow_empty=True)
            exp.intern("**", allow_empty=True)  # everything else is the user's code, found beside it
            exp.save_pickle(*PACKAGE_RESOURCE, ctx.model)
            externed = exp.externed_modules()
    except PackagingError as e:
        raise ExportError(
            f"torch.package could not take the model's code:{_indent(str(e))}",
            "C extensions and modules without source cannot be interned: install them on the"
            " server and they are externed automatically, or move the model code into plain"
            " Python modules. Run with -v for details.") from e
    except Exception as e:
        raise ExportError(f"torch.package failed to pickle the model: {type(e).__name__}: {e}.",
                          "The model (or an attribute of it) cannot be pickled: keep lambdas, open"
                          " files and locks out of the module's attributes.") from e
    needs = sorted({m.split(".")[0] for m in externed} & set(installed) - set(SERVER_PROVIDES))
    if not needs:
        return []
    pins = []
    for top in needs:
        dist = installed[top][0]
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(dist)
    return [f"the server's Python must provide {', '.join(needs)}: add `pip install"
            f" {' '.join(pins)}` to the server image (docker/Dockerfile EXTRA_PIP)"]


def _indent(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and "debug=True" not in ln]
    return " " + " ".join(ln.strip() for ln in lines[:12])
