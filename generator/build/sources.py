"""Model sources: ``torchvision:<name>``, ``package.module:factory``, ``path/to/file.py:factory``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
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


def _import_file(path: Path):
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
    return importlib.import_module(mod_name)


def _import_module(mod_name: str):
    # Like `python -m`: modules in the current folder are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise SourceError(f"cannot import module '{mod_name}': {e}.",
                          "Install the package or run from the folder that holds it; for a file"
                          " use path/to/file.py:factory.") from e


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
        tb = traceback.extract_tb(e.__traceback__)[-1]
        raise SourceError(f"factory '{source}' raised {type(e).__name__}: {e}"
                          f" (at {Path(tb.filename).name}:{tb.lineno}).",
                          "Fix the factory so it builds the model without arguments;"
                          " run with -v for the full traceback.") from e


def load_model(source: str, weights: str | None = None) -> LoadedModel:
    import torch

    if ":" not in source:
        raise SourceError(f"model source '{source}' has no ':'.",
                          "Use torchvision:<name>, package.module:factory or"
                          " path/to/file.py:factory.")
    head, tail = source.rsplit(":", 1)
    if head == "torchvision":
        model, inputs = _torchvision(tail)
        loaded = LoadedModel(model, "torchvision", (), inputs)
    else:
        if head.endswith(".py"):
            module = _import_file(Path(head))
            kind = "file"
        else:
            module = _import_module(head)
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
    import torch

    path = Path(weights)
    if not path.is_file():
        raise SourceError(f"weights file '{weights}' does not exist.", "Check the --weights path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SourceError(f"weights file '{weights}' could not be read: {e}.",
                          "Save it with torch.save(model.state_dict(), path).") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SourceError(f"weights file '{weights}' holds a {type(state).__name__}, not a"
                          " state_dict.", "Save it with torch.save(model.state_dict(), path).")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise SourceError(f"weights file '{weights}' does not fit the model: {' '.join(first)}",
                          "Check that the weights belong to this architecture.") from e
