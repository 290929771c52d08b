"""Model sources: ``torchvision:<name>``, ``package.module:factory``, ``path/to/file.py:factory``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..errors import SourceError, did_you_mean
from ..spec import IMAGE_INPUT, TensorSpec


@dataclass
class LoadedModel:
    module: "object"  # torch.nn.Module
    kind: str  # torchvision | module | file
    user_modules: tuple[str, ...]  # top-level module names holding the user's own code
    default_inputs: tuple[TensorSpec, ...]  # used when the spec gives none


def _torchvision(name: str):
    import torchvision.models as tvm

    available = tvm.list_models()
    if name not in available:
        raise SourceError(f"torchvision has no model '{name}'{did_you_mean(name, available)}.",
                          "List them with: python -c 'import torchvision;"
                          " print(torchvision.models.list_models())'.")
    try:
        # weights=None: random init, nothing is downloaded (nor the backbone's weights).
        try:
            model = tvm.get_model(name, weights=None, weights_backbone=None)
        except TypeError:  # builders without a backbone argument
            model = tvm.get_model(name, weights=None)
    except Exception as e:  # a torchvision builder that needs arguments
        raise SourceError(f"torchvision model '{name}' could not be built: {e}.",
                          "Wrap it in your own factory: my_file.py:make_model.") from e
    module_path = tvm.get_model_builder(name).__module__
    is_image = ".detection" not in module_path and ".video" not in module_path \
        and ".optical_flow" not in module_path
    size = 520 if ".segmentation" in module_path else 224
    inputs = (TensorSpec(IMAGE_INPUT, "float32", (3, size, size)),) if is_image else ()
    return model, inputs


def _import_file(path: Path, source: str):
    if not path.is_file():
        raise SourceError(f"model file '{path}' does not exist.",
                          "Give a path to a .py file, e.g. my_models/net.py:make_model.")
    mod_name = path.stem
    if not mod_name.isidentifier():
        raise SourceError(f"model file name '{path.name}' is not a valid Python module name.",
                          "Rename the file to letters, digits and underscores.")
    # The file's folder goes on sys.path so that sibling helper modules import as the file does
    # when run; torch.package then interns them by their module names.
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    existing = sys.modules.get(mod_name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() != path.resolve():
        raise SourceError(f"model file '{path}' is named like the installed module '{mod_name}'.",
                          "Rename the file so its name does not shadow another module.")
    try:
        return importlib.import_module(mod_name)
    except (Exception, SystemExit) as e:
        raise _import_failed(e, source, file_form=path) from e


def _import_module(mod_name: str, source: str):
    # Like `python -m`: modules in the current folder are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and (mod_name == e.name or mod_name.startswith(e.name + ".")):
            raise SourceError(f"cannot import module '{mod_name}': {e}.",
                              "Install the package or run from the folder that holds it; for a"
                              " file use path/to/file.py:factory.") from e
        raise _import_failed(e, source) from e  # the module exists; an import inside it failed
    except (Exception, SystemExit) as e:
        raise _import_failed(e, source) from e


# ---------------------------------------------------------------------------------------------
# the user's code failed while it was imported or called: say where, and what to do

_LIBRARY_ROOTS = tuple(str(Path(p).resolve()) + os.sep for p in {
    sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})


def _user_frame(tb) -> traceback.FrameSummary | None:
    """The innermost frame in the user's own code (not the standard library, not an installed
    library, not the import machinery); else the innermost frame outside the import machinery."""
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith("<frozen")]
    own = [f for f in frames if not str(Path(f.filename).resolve()).startswith(_LIBRARY_ROOTS)
           and Path(f.filename).resolve() != Path(__file__).resolve()]
    return (own or frames or [None])[-1]


def _where(frame) -> str:
    """' at file.py:12: `the line`' for a frame, '' for none."""
    if frame is None:
        return ""
    return f" at {_location(frame)}{_code(frame)}"


def _location(frame) -> str:
    return f"{_shown(frame.filename)}:{frame.lineno}" if frame else "its code"


def _code(frame) -> str:
    line = (frame.line or "").strip() if frame else ""
    return f": `{line}`" if line else ""


def _shown(filename: str) -> str:
    """A path relative to the current folder when it is inside it."""
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        return filename


def _import_failed(e: BaseException, source: str, file_form: Path | None = None) -> SourceError:
    """The error for a model module that fails while it is imported (its own code, or an import
    in it), naming the file, the line and the fix."""
    what = f"importing the model source '{source}' failed"
    rerun = "run with -v for the full traceback"
    if isinstance(e, SyntaxError):
        line = f": `{e.text.strip()}`" if e.text and e.text.strip() else ""
        return SourceError(f"{what}: {type(e).__name__} at {_shown(e.filename or '?')}:"
                           f"{e.lineno}{line}: {e.msg}.", "Fix the syntax error in that file.")
    frame = _user_frame(e.__traceback__)
    at, code = _location(frame), _code(frame)
    if isinstance(e, ModuleNotFoundError):
        missing = e.name or str(e)
        top = missing.split(".")[0]
        return SourceError(
            f"{what}: {at} imports the module '{missing}', which is not installed{code}.",
            f"Install the package that provides '{top}' in this Python environment (e.g."
            f" `{os.path.abspath(sys.executable)} -m pip install {top}`; the server's Python"
            " needs it too), or remove the import.")
    if isinstance(e, ImportError) and "relative import" in str(e) and file_form is not None:
        return SourceError(f"{what}: {at} uses a package-relative import{code}, and a file given"
                           f" as path/file.py:factory has no package (ImportError: {e}).",
                           _relative_import_tip(file_form, source))
    if isinstance(e, ImportError):
        return SourceError(f"{what}: ImportError at {at}{code}: {e}.",
                           "Fix that import (is the installed version of the library the one the"
                           f" code expects?); {rerun}.")
    if isinstance(e, SystemExit):
        return SourceError(f"{what}: the module called sys.exit({e.code!r}) at {at}{code}.",
                           "Importing a model module must not exit: move that code under"
                           f" `if __name__ == \"__main__\":`; {rerun}.")
    return SourceError(f"{what}: {type(e).__name__}: {e} at {at}{code}.",
                       "That code runs when the module is imported: fix it so the module imports"
                       f" without error; {rerun}.")


def _relative_import_tip(path: Path, source: str) -> str:
    """Package-relative imports need the module form: which module name, run from which folder."""
    folder = path.resolve().parent
    parts = [path.stem]
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    factory = source.rsplit(":", 1)[1]
    if len(parts) == 1:
        return (f"'{path.name}' uses a package-relative import (from .x import y) but its folder"
                " is no package: use absolute imports (from x import y), or add an __init__.py"
                " and build it as package.module:factory.")
    return (f"Use the module form from the folder that holds the package: cd"
            f" {_shown(str(folder))} && gen-repo build {'.'.join(parts)}:{factory} (a file is"
            " imported as a top-level module, without its package).")


def _call_factory(module, factory: str, source: str):
    fn = getattr(module, factory, None)
    if fn is None:
        public = [n for n in dir(module) if not n.startswith("_")]
        raise SourceError(f"'{source}': module has no attribute '{factory}'"
                          f"{did_you_mean(factory, public)}.",
                          "The part after ':' names a function (or class) that returns the model.")
    try:
        return fn()
    except Exception as e:
        raise SourceError(f"factory '{source}' raised {type(e).__name__}: {e}"
                          f"{_where(_user_frame(e.__traceback__))}.",
                          "Fix the factory so it builds the model without arguments;"
                          " run with -v for the full traceback.") from e


def load_model(source: str, weights: str | None = None) -> LoadedModel:
    import torch

    if ":" not in source:
        raise SourceError(f"model source '{source}' has no ':'.",
                          "Use torchvision:<name>, package.module:factory or"
                          " path/to/file.py:factory.")
    head, tail = source.rsplit(":", 1)
    if head == "python":  # what gen_repo.json records for a model given to gen_repo.build()
        raise SourceError(f"'{source}' names a model object given to gen_repo.build() from"
                          " Python; it cannot be loaded again from its name.",
                          "Build it again from Python, or give a source gen-repo can load:"
                          " path/to/file.py:factory or package.module:factory.")
    if head == "torchvision":
        model, inputs = _torchvision(tail)
        loaded = LoadedModel(model, "torchvision", (), inputs)
    else:
        if head.endswith(".py"):
            module = _import_file(Path(head), source)
            kind = "file"
        else:
            module = _import_module(head, source)
            kind = "module"
        model = _call_factory(module, tail, source)
        top = module.__name__.split(".")[0]
        # The class may live in another user module (helpers); torch.package finds those itself.
        loaded = LoadedModel(model, kind, (top,), ())
    if not isinstance(loaded.module, torch.nn.Module):
        raise SourceError(f"'{source}' returned {type(loaded.module).__name__}, not a"
                          " torch.nn.Module.", "Return the nn.Module instance from the factory.")
    if weights:
        load_weights(loaded.module, weights)
    return loaded


def load_weights(model, weights: str) -> None:
    """Load a state_dict into ``model``. Only plain tensors and containers are read
    (``weights_only=True``): a pickled Python object would run code from the file when loaded."""
    import torch

    path = Path(weights)
    if not path.is_file():
        raise SourceError(f"weights file '{weights}' does not exist.", "Check the --weights path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _unreadable_weights(weights, e) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SourceError(f"weights file '{weights}' holds a {type(state).__name__}, not a"
                          " state_dict.", "Save it with torch.save(model.state_dict(), path).")
    mismatch = _state_mismatch(model, state)
    if mismatch:
        raise SourceError(f"weights file '{weights}' does not fit the model"
                          f" {type(model).__name__}: {mismatch}.", _mismatch_tip(model, state))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # what the key and shape comparison above does not cover
        raise SourceError(f"weights file '{weights}' does not fit the model"
                          f" {type(model).__name__}: {one_paragraph(str(e))}.",
                          "Pass the state_dict saved from this architecture:"
                          " torch.save(model.state_dict(), path).") from e


SHOWN_KEYS = 3  # keys quoted per kind of mismatch


def _state_mismatch(model, state: dict) -> str:
    """'' when every key and shape fits; else counts and the first keys of each kind."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    sizes = [f"{k}: file {_shape(state[k])}, model {_shape(v)}" for k, v in own.items()
             if k in state and hasattr(state[k], "shape")
             and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    for items, one, many in ((missing, "key missing from the file", "keys missing from the file"),
                             (unexpected, "unexpected key", "unexpected keys"),
                             (sizes, "size mismatch", "size mismatches")):
        if items:
            more = f", … and {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else ""
            parts.append(f"{len(items)} {one if len(items) == 1 else many}"
                         f" ({', '.join(items[:SHOWN_KEYS])}{more})")
    return "; ".join(parts)


def _shape(t) -> str:
    return "x".join(str(d) for d in t.shape) or "scalar"


def _mismatch_tip(model, state: dict) -> str:
    own = set(model.state_dict())
    extra = [k for k in state if k not in own]
    prefix = next((u[: len(u) - len(m)] for u in extra[:1] for m in own if u.endswith("." + m)),
                  None)
    if prefix and {prefix + k for k in own} == set(state):
        return (f"Every key of the file has the prefix '{prefix}' (saved from a wrapper such as"
                f" DataParallel): save the inner module's state_dict, or strip the prefix:"
                f" {{k.removeprefix('{prefix}'): v for k, v in state.items()}}.")
    return ("These weights belong to another architecture (or another configuration of it): pass"
            " the state_dict saved from the model this factory builds"
            " (torch.save(model.state_dict(), path)).")


def _unreadable_weights(weights: str, e: Exception) -> SourceError:
    """torch.load refused the file: a pickled whole model (or other Python objects), or no
    checkpoint at all."""
    import torch

    try:
        objects = torch.serialization.get_unsafe_globals_in_checkpoint(weights)
    except Exception:  # not a torch.save zip archive
        objects = []
    if objects:
        objects = sorted(objects, key=lambda name: name.startswith("torch."))  # the user's first
        shown = ", ".join(objects[:SHOWN_KEYS]) + \
            (f" and {len(objects) - SHOWN_KEYS} more" if len(objects) > SHOWN_KEYS else "")
        return SourceError(
            f"weights file '{weights}' holds pickled Python objects ({shown}), e.g. a whole"
            " model saved with torch.save(model), not a state_dict. gen-repo loads weights with"
            " torch.load(weights_only=True): unpickling objects runs code from the file, so it"
            " refuses them.",
            "Save the weights alone: torch.save(model.state_dict(), path). If you trust the file,"
            " convert it once: python -c \"import torch; torch.save(torch.load('OLD',"
            " weights_only=False).state_dict(), 'NEW')\" (with the model's code importable).")
    text = str(e)
    reason = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text \
        else text
    reason = one_paragraph(reason.split("Check the documentation of torch.load")[0]) \
        or type(e).__name__
    return SourceError(f"weights file '{weights}' is not a checkpoint torch.load can read"
                       f" ({reason}).",
                       "Pass a file written by torch.save(model.state_dict(), path).")


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_paragraph(text: str, limit: int = 400) -> str:
    """A library's message as one line: escape codes dropped, whitespace collapsed, cut."""
    text = " ".join(ANSI.sub("", text).split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
