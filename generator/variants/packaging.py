"""torch.package policy for the eager variant.

- intern: the user's own code (the factory's top-level module, its helper modules, anything not
  installed as a distribution) and the generated wrapper — the archive carries their source;
- extern: torch (implicit), the standard library (implicit, plus ``sys`` and ``io`` which
  torch.package wants named), torchvision, numpy, and every other installed distribution the code
  imports. Externs other than torch/torchvision/numpy must be installed where the server runs:
  the build says which, with the version to install.

Data files beside the user's modules (a ``config.json``, a vocabulary) are packed too: every file
in the folder of an interned package goes into the archive as a resource of that package. Code in
the archive reads them through ``importlib.resources`` with the package module as the anchor
(``resources.files(mypkg).joinpath("config.json")``), which torch.package's importer serves. A
module inside an archive has no folder on disk and no importable name, so ``__file__`` paths,
``pkgutil.get_data`` and string anchors (``files(__package__)``) cannot reach them:
``load_error_tip`` turns those failures of the offline check into a tip naming the fix.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ExportError
from ..runtime.model import PACKAGE_RESOURCE
from .base import ExportContext

SERVER_PROVIDES = ("torch", "torchvision", "numpy")


def installed_top_levels() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def baked_parametrizations(model) -> tuple[object, list[str]]:
    """(a copy of ``model`` whose parametrized tensors -- torch.nn.utils.parametrize: weight_norm,
    spectral_norm, orthogonal -- are plain parameters holding the values their parametrizations
    compute, a note); ``model`` itself and no note when it has none, or when a parametrization
    computes different values twice (not a function of the parameters alone)."""
    import torch
    from torch.nn.utils import parametrize

    names = [name or "the model" for name in _parametrized(model)]
    if not names:
        return model, []
    baked = copy.deepcopy(model)
    for m in [m for m in baked.modules() if parametrize.is_parametrized(m)]:
        # The copy shares its Parametrized<class> with the model, from which removing a
        # parametrization deletes the property: the copy gets a class of its own first.
        cls = type(m)
        m.__class__ = type(cls.__name__, cls.__bases__, {
            k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")})
        for tensor in list(m.parametrizations):
            with torch.no_grad():  # three evaluations: noise may leave one pair equal
                first, *again = (getattr(m, tensor) for _ in range(3))
                if not all(torch.equal(first, value) for value in again):
                    return model, []
            parametrize.remove_parametrizations(m, tensor, leave_parametrized=True)
        _drop_parametrization_hooks(m)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return baked, [f"parametrized modules ({shown}: torch.nn.utils.parametrize, e.g."
                   " weight_norm) cannot be pickled, so the archive holds a copy in which each"
                   " parametrized tensor is the value its parametrization computes"
                   " (remove_parametrizations(module, name, leave_parametrized=True)): the"
                   " values every forward pass computes from the same parameters"]


def _parametrized(model) -> dict[str, list[str]]:
    """{module name: its parametrized tensors} for ``model``'s parametrized modules, the names
    as in the user's model, which the serving wrapper holds as .model ("" for that model)."""
    from torch.nn.utils import parametrize

    return {name.removeprefix("model").removeprefix("."): list(m.parametrizations)
            for name, m in model.named_modules() if parametrize.is_parametrized(m)}


def _drop_parametrization_hooks(module) -> None:
    """Remove ``module``'s load_state_dict pre-hooks that torch.nn.utils.parametrizations added
    (weight_norm's, which maps old weight_g/weight_v keys onto the parametrization baked away): a
    local function, which pickle cannot write."""
    hooks = module._load_state_dict_pre_hooks
    for key in [k for k, h in hooks.items()
                if getattr(getattr(h, "hook", h), "__module__", None)  # a _WrappedHook's function
                == "torch.nn.utils.parametrizations"]:
        del hooks[key]


def export_package(ctx: ExportContext, path: Path, model) -> list[str]:
    """Write the archive of ``model`` (the served wrapper, ctx.model or a copy of it); return
    notes (what the server image must add)."""
    from torch.package import PackageExporter
    from torch.package.package_exporter import PackagingError

    own = set(ctx.user_modules) | {ctx.wrapper_module}
    installed = installed_top_levels()
    extern_tops = sorted((set(installed) | {"sys", "io", *SERVER_PROVIDES}) - own)
    try:
        with warnings.catch_warnings(), PackageExporter(str(path)) as exp:
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            for mod in sorted(own):
                exp.intern([mod, f"{mod}.**"], allow_empty=True)
            exp.extern([p for top in extern_tops for p in (top, f"{top}.**")], allow_empty=True)
            exp.intern("**", allow_empty=True)  # everything else is the user's code, found beside it
            exp.save_pickle(*PACKAGE_RESOURCE, model)
            externed = exp.externed_modules()
            data = package_data(exp.interned_modules())
            for package, name, file in data.files:
                exp.save_binary(package, name, file.read_bytes())
    except PackagingError as e:
        raise ExportError(
            f"torch.package could not take the model's code:{_indent(str(e))}",
            "C extensions and modules without source cannot be interned: install them on the"
            " server and they are externed automatically, or move the model code into plain"
            " Python modules. Run with -v for details.") from e
    except Exception as e:
        said = " ".join(str(e).split())  # one paragraph (pickle's messages span lines)
        said = f"{type(e).__name__}: {said}{'' if said.endswith('.') else '.'}"
        message = f"torch.package failed to pickle the model: {said}"
        tip = ("The model (or an attribute of it) cannot be pickled: keep lambdas, open files and"
               " locks out of the module's attributes.")
        if "torch.export." in str(e):  # torch's own hooks on ExportedProgram.module()
            tip = ("A module made by torch.export (ExportedProgram.module()) carries torch's own"
                   " hooks, which pickle cannot write: build the nn.Module you exported for this"
                   " variant (it serves the eager model); the TorchScript variants (libtorch)"
                   " trace the exported one.")
        elif "parametrized modules" in str(e):  # a parametrization that could not be baked
            sites = [(f"model.{name}" if name else "model", tensor)
                     for name, tensors in _parametrized(model).items() for tensor in tensors]
            calls = "; ".join(f'remove_parametrizations({m}, "{t}")' for m, t in sites)
            tip = ("A parametrized module (torch.nn.utils.parametrize) cannot be pickled, and a"
                   " parametrization here computes different values on each call, so it was not"
                   " baked in: in the factory, bake it yourself with"
                   f" torch.nn.utils.parametrize's {calls} (leave_parametrized=True keeps the"
                   " values it computes then), or for weight norm use the older hook-based"
                   " torch.nn.utils.weight_norm, which pickles.")
        elif "ScriptModule" in str(e):  # a torch.jit.load'ed or scripted model
            message = ("the model is a TorchScript module, which the python variant cannot"
                       " carry: it packs the model's Python code, and a TorchScript module has"
                       f" none (torch.package: {said})")
            tip = ("The model is a TorchScript module: it has no Python code for the eager"
                   " variant to carry. Serve it with the TorchScript variants (--variants"
                   " libtorch,python-ts), or build the python variant from the nn.Module it"
                   " was made from.")
        raise ExportError(message, tip) from e
    notes = data.notes()
    needs = sorted({m.split(".")[0] for m in externed} & set(installed) - set(SERVER_PROVIDES))
    if not needs:
        return notes
    pins = []
    for top in needs:
        dist = installed[top][0]
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(dist)
    return notes + [f"the server's Python must provide {', '.join(needs)}: add `pip install"
                    f" {' '.join(pins)}` to the server image (docker/Dockerfile EXTRA_PIP)"]


def _indent(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and "debug=True" not in ln]
    return " " + " ".join(ln.strip() for ln in lines[:12])


# ---------------------------------------------------------------------------------------------
# data files of the user's packages

CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".so", ".pyd")


@dataclass
class PackageData:
    files: list[tuple[str, str, Path]] = field(default_factory=list)  # (package, name, path)
    skipped: list[Path] = field(default_factory=list)  # in sub-folders that are no package

    def notes(self) -> list[str]:
        notes = []
        if self.files:
            packages = sorted({p for p, _, _ in self.files})
            size = sum(f.stat().st_size for _, _, f in self.files)
            shown = ", ".join(f"{p.replace('.', '/')}/{n}" for p, n, _ in self.files[:4])
            more = f" and {len(self.files) - 4} more" if len(self.files) > 4 else ""
            notes.append(f"packed {len(self.files)} data file(s) of {', '.join(packages)} into"
                         f" the archive ({shown}{more}; {_size(size)}); code in the archive reads"
                         " them with importlib.resources.files(<package module>)")
        if self.skipped:
            shown = ", ".join(str(f) for f in self.skipped[:3])
            notes.append(f"not packed: {len(self.skipped)} file(s) in folders that are no Python"
                         f" package ({shown}); torch.package keeps data files per package: add an"
                         " __init__.py to such a folder and import it if the model reads them")
        return notes


def package_data(interned: list[str]) -> PackageData:
    """The data files in the folders of the interned packages (not in their sub-packages' own
    folders, which are interned packages of their own when the code imports them)."""
    data = PackageData()
    for name in sorted(interned):
        folder = _package_folder(name)
        if folder is None:
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            if entry.is_file() and not entry.name.endswith(CODE_SUFFIXES):
                data.files.append((name, entry.name, entry))
            elif entry.is_dir() and not (entry / "__init__.py").is_file():
                data.skipped += [f for f in sorted(entry.rglob("*")) if f.is_file()
                                 and "__pycache__" not in f.parts
                                 and not f.name.endswith(CODE_SUFFIXES)]
    return data


def _package_folder(name: str) -> Path | None:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if module is None or not hasattr(module, "__path__") or not file:
        return None  # a plain module, or a namespace package: no folder of its own
    folder = Path(file).parent
    return folder if folder.is_dir() else None


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# ---------------------------------------------------------------------------------------------
# explaining a failure of the archive's code to load

MANGLED = re.compile(r"<torch_package_\d+>\.")


def demangle(text: str) -> str:
    """torch.package's module prefix ``<torch_package_0>.`` taken out of a message."""
    return MANGLED.sub("", text)


def load_error_tip(error_type: str, message: str, frame: dict | None,
                   blocked: list[str]) -> str | None:
    """A tip for code in the archive that reads a data file (or imports a module) in a way that
    cannot work from an archive; None for other errors. ``frame`` is the innermost frame of the
    archive's own code ({"file", "line", "code"}); ``blocked`` the user's module names."""
    where = f"{frame['file']}:{frame['line']}" if frame else "your code"
    opened = re.search(r"'<torch_package_\d+>\.(?:[^']*/)?([^/']+)'", message)
    resource = opened.group(1) if opened else "config.json"
    packed = _resources_fix(frame["file"] if frame else "mypkg/__init__.py", resource)
    if opened and error_type in ("FileNotFoundError", "NotADirectoryError", "OSError",
                                 "IsADirectoryError"):
        return (f"{where} opens {resource} beside its module through __file__, but inside a"
                f" torch.package archive a module has no folder on disk. Read it with"
                f" importlib.resources and the package module as the anchor: {packed}.")
    if error_type in ("ModuleNotFoundError", "ImportError") and (
            "<torch_package_" in message
            or any(re.search(rf"\b{re.escape(b)}\b", message) for b in blocked)):
        return (f"{where} imports your code by its name at run time (importlib.import_module,"
                f" pkgutil.get_data, or importlib.resources with a string such as __package__):"
                f" that goes through the normal import system, and the server does not have your"
                f" source. Use import statements (torch.package packs what they import), and for"
                f" data files pass the package module itself: {packed}.")
    if "must be only a file name" in message:
        return (f"{where} reads a file in a sub-folder of a package; torch.package keeps data"
                f" files per package, so give the folder an __init__.py, import it, and anchor on"
                f" it: `import <package>.<folder> as d; importlib.resources.files(d)"
                f".joinpath(\"<file>\")`.")
    return None


def _resources_fix(file: str, resource: str) -> str:
    """How the module ``file`` (a path inside the archive) reads a data file that works both from
    the source tree and from the archive."""
    parts = file.removesuffix(".py").split("/")
    if len(parts) == 1:  # a top-level module (the file form), not a package
        return (f"{parts[0]} is a plain module, and data files travel with packages only: move it"
                " and its data files into a package (a folder with an __init__.py), build it as"
                " package.module:factory, and read them with `import <package>` and"
                f" `importlib.resources.files(<package>).joinpath(\"{resource}\").read_text()`")
    package = ".".join(parts[:-1])
    return (f"gen-repo packs the data files in the folders of your packages into the archive, so"
            f" `import {package}` and `importlib.resources.files({package})"
            f".joinpath(\"{resource}\").read_text()` reads them there as it does from your"
            " source tree")
