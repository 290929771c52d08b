"""A model given as a Python object (gen_repo.build(model, inputs)): the model and its example
tensors turned into what a source string gives the build.

The model is deep-copied (the build puts its copy in eval mode, on the CPU; the caller's object
is left as it was). Classes defined in the caller's ``__main__`` -- a training script -- cannot be
interned by torch.package (``__main__`` is no module it can name), so what they need of the
script is written into a module of their own (``gen_repo_main_<script>``: the top-level
functions, classes and constants they use, directly or through each other, and the imports of
the names those use; nothing else of the script runs again) and the copy's objects take their
classes from it. A notebook has no script file to read them from: refused, with the
route.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import SourceError, SpecError
from ..spec import TensorSpec
from .arguments import signature
from .generated import import_source
from ..variants.packaging import installed_top_levels
from .sources import LoadedModel

MAIN = "__main__"
NOTEBOOK_TIP = ("Define the model class in a .py file beside the notebook and import it from"
                " there (from mymodel import Net), then call gen_repo.build again; or pass"
                " 'mymodel.py:make_model' as the model.")


def source_name(model) -> str:
    """What gen_repo.json records as the source of a model given as an object."""
    cls = type(model)
    return f"python:{cls.__module__}.{cls.__qualname__}"


def from_object(model) -> LoadedModel:
    """The build's LoadedModel for an nn.Module object."""
    import torch

    if not isinstance(model, torch.nn.Module):
        raise SourceError(f"the model is a {type(model).__name__}, not a torch.nn.Module.",
                          "Pass the nn.Module instance (or a 'module:factory' source string).")
    try:
        twin = copy.deepcopy(model)
    except Exception as e:
        raise SourceError(f"the model could not be copied ({type(e).__name__}: {e}); gen-repo"
                          " builds from a copy, so that your object stays as it is.",
                          "Make the model deep-copyable (no open files, locks or generators"
                          " as attributes), or pass a 'module:factory' source.") from e
    twin = twin.cpu()
    if any(type(m).__module__ == MAIN for m in twin.modules()):
        _main_classes_to_module(twin)
    tops = {type(m).__module__.split(".")[0] for m in twin.modules()}
    installed = installed_top_levels()
    own = tuple(sorted(t for t in tops if t not in installed
                       and t not in sys.stdlib_module_names and t != "torch"))
    return LoadedModel(twin, "object", own, ())


def _main_module_source(roots: set[str]) -> tuple[str, str]:
    """(module name, source) of what the model's classes ``roots`` need of the running script:
    the top-level definitions and constants they use, directly or through each other, and the
    imports of the names those use."""
    main = sys.modules[MAIN]
    path = getattr(main, "__file__", None)
    if not path or not Path(path).is_file():
        raise SourceError("the model's class is defined in an interactive session (a notebook or"
                          " the Python prompt): torch.package needs the class's source in a"
                          " module file, and this session has none.", NOTEBOOK_TIP)
    text = Path(path).read_text()
    kept = _needed(ast.parse(text).body, roots)
    name = "gen_repo_main_" + re.sub(r"\W", "_", Path(path).stem)
    body = "\n\n".join(ast.get_source_segment(text, node, padded=False) for node in kept)
    header = (f'"""What the model\'s classes need of {Path(path).name}: its definitions, as'
              ' gen-repo took them (the script\'s other statements left out)."""\n')
    return name, header + body + "\n"


def _defined(node: ast.stmt) -> list[str]:
    """The top-level names a definition or a constant assignment binds ([] for anything else:
    statements that do work -- training, data loading -- are never taken)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        try:
            ast.literal_eval(node.value)
        except ValueError:
            return []
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)]
    return []


def _imported(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module != "__future__":
        return [a.asname or a.name for a in node.names]
    return []


def _needed(body: list[ast.stmt], roots: set[str]) -> list[ast.stmt]:
    definitions = {name: node for node in body for name in _defined(node)}
    need, todo, kept = set(roots), list(roots), set()
    while todo:
        node = definitions.get(todo.pop())
        if node is None or id(node) in kept:
            continue
        kept.add(id(node))
        for used in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} - need:
            need.add(used)
            todo.append(used)
    return [node for node in body
            if id(node) in kept or set(_imported(node)) & need
            or (isinstance(node, ast.ImportFrom) and node.module == "__future__")]


def _main_classes_to_module(model) -> None:
    roots = {type(m).__qualname__.split(".")[0] for m in model.modules()
             if type(m).__module__ == MAIN}
    name, source = _main_module_source(roots)
    try:
        module = import_source(name, source)
    except Exception as e:
        raise SourceError(f"the definitions of the script ({name}.py, made from it) failed to"
                          f" import: {type(e).__name__}: {e}.",
                          "Keep what the model's classes need at the script's top level:"
                          " imports, functions, classes and constants.") from e
    for sub in model.modules():
        cls = type(sub)
        if cls.__module__ != MAIN:
            continue
        twin = module
        for part in cls.__qualname__.split("."):
            twin = getattr(twin, part, None)
        if not isinstance(twin, type):
            raise SourceError(f"class {cls.__qualname__} is not defined at the top level of the"
                              " script (gen-repo reads the script's top-level definitions).",
                              "Define it at the top level of the script, or in a module the"
                              " script imports.")
        sub.__class__ = twin


# -- example inputs ---------------------------------------------------------------------------


def _forward_names(model, count: int) -> list[str]:
    sig = signature(model)
    params = [] if sig is None else [p for p in sig.parameters.values()
                                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) < count:
        raise SpecError(f"{count} example inputs were given as a tuple, but"
                        f" {type(model).__name__}.forward() names {len(params)} parameter(s).",
                        "Pass the inputs as a dict by forward() parameter name (for a forward()"
                        " whose names cannot be read, a dict of names of your choice in its"
                        " order, with inputs_by_position=True).")
    return [p.name for p in params[:count]]


def _as_dict(model, inputs) -> dict:
    import torch

    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if isinstance(inputs, (tuple, list)):
        inputs = dict(zip(_forward_names(model, len(inputs)), inputs))
    if not isinstance(inputs, dict) or not inputs:
        raise SpecError(f"inputs must be a tensor, a tuple of tensors or a dict of them by"
                        f" forward() parameter name, not {type(inputs).__name__}.",
                        "Example: gen_repo.build(model, {'tokens': tokens, 'mask': mask})")
    bad = [k for k, v in inputs.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise SpecError(f"input(s) {bad} are not tensors.", "Pass torch tensors.")
    return inputs


def example_inputs(model, inputs, batching: bool, dynamic_axes: dict | None,
                   value_ranges: dict | None) -> tuple[tuple[TensorSpec, ...],
                                                        dict[str, np.ndarray]]:
    """(the inputs' TensorSpecs, the example arrays by name) from example tensors, batch first
    when ``batching``. ``dynamic_axes``: {name: axes of the example tensor that vary}; the batch
    axis always does. ``value_ranges``: {name: (low, high)} for integer inputs (default: the
    example's smallest value to its largest + 1)."""
    tensors = _as_dict(model, inputs)
    dynamic_axes, value_ranges = dict(dynamic_axes or {}), dict(value_ranges or {})
    for what, given in (("dynamic_axes", dynamic_axes), ("value_ranges", value_ranges)):
        unknown = sorted(set(given) - set(tensors))
        if unknown:
            raise SpecError(f"{what} names {unknown}, which are not inputs ({sorted(tensors)}).",
                            f"Key {what} by input name.")
    specs, arrays = [], {}
    for name, t in tensors.items():
        shape = list(t.shape)
        lead = 1 if batching else 0
        if batching and not shape:
            raise SpecError(f"input '{name}' is a 0-d tensor, but batching is on (the first"
                            " dimension of each example is its batch).",
                            "Give a batch of examples ([B, ...]), or pass max_batch_size=0.")
        dims = shape[lead:]
        for axis in dynamic_axes.get(name, ()):
            if not lead <= axis < len(shape):
                raise SpecError(f"dynamic_axes['{name}'] has axis {axis}; the example is"
                                f" {shape}{' (axis 0: the batch, always dynamic)' if lead else ''}.",
                                f"Use axes {lead}..{len(shape) - 1}.")
            dims[axis - lead] = -1
        dtype = str(t.dtype).removeprefix("torch.")
        array = t.detach().cpu().numpy()
        low, high = 0, 10
        if dtype.startswith(("int", "uint")) and array.size:
            low, high = int(array.min()), int(array.max()) + 1
        if name in value_ranges:
            low, high = (int(v) for v in value_ranges[name])
        specs.append(TensorSpec(name, dtype, tuple(dims), low, high))
        arrays[name] = array
    return tuple(specs), arrays
