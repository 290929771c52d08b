"""TracerWarnings: which ones mean "this trace may be wrong", and where in the model's code.

``torch.jit.trace`` records the tensor operations one sample input went through. It warns when
``forward()`` takes a Python value out of a traced tensor (a bool for an ``if``, a number, a list,
a NumPy array), iterates over one, or makes one into a constant: the trace keeps whatever that
value was for the sample, so another input may get a wrong answer without any error. Two random
samples that happen to take the same branch prove nothing, so such a trace is not shipped as it
is (generator.variants.torchscript decides what is).

Two kinds are known to be benign and do not count (they are still listed in a note):

- raised inside PyTorch's own library code (``torch/``, not ``torch/jit``): ``torch.jit.trace``
  hides exactly these by default, because "all our shape checks in nn will trigger them"
  (``TracerWarning.ignore_lib_warnings`` in torch/jit/_trace.py); e.g. nn.GRU's and
  nn.MultiheadAttention's input checks, ``torch._assert``;
- raised by a check that can only raise: the line is the condition of an ``if`` whose body is a
  single ``raise`` (no ``else``), or an ``assert``. The trace keeps the no-error path, which is the
  path of every input the eager model accepts.

A warning raised in an installed library (torchvision, transformers) counts; it names the
library, and the line of the user's code the call came from when the model's own code made the
call (not for a library's model called by the serving wrapper). The fix is then no rewrite of the
user's code but a variant that does not trace. ``Tensor`` methods written in Python
(``torch/_tensor.py``: e.g. ``__array__`` behind ``np.sum(tensor)``) are not "PyTorch's code"
here: the warning is put on the line that called them.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.metadata
import itertools
import linecache
import os
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

from .packaging import installed_top_levels

_GENERATOR = os.path.realpath(Path(__file__).parent.parent)
# (phrase in the message, kind): what the tracer saw forward() do with a tensor
_KINDS = (("NumPy array", "numpy"), ("Python boolean", "bool"), ("Python number", "number"),
          ("Python integer", "number"), ("Python float", "number"), ("Python index", "number"),
          ("Python list", "number"), ("Iterating over a tensor", "iterate"),
          ("Using len", "iterate"), ("registered as constants", "constant"))


@dataclass(frozen=True)
class Warned:
    """One TracerWarning, located."""

    message: str  # its first sentence
    kind: str  # numpy | bool | number | iterate | constant | other
    site: str  # file:line it points at (maybe in a library)
    code: str  # the source text of that line
    caller: str | None  # file:line in the user's code the call came from, when site is a library's
    benign: str | None  # why it does not count, or None
    library: str | None = None  # the installed library ("transformers 5.25.0") site is in

    def describe(self) -> str:
        where = f"{self.site} `{self.code}`" if self.code else self.site
        context = [f"in {self.library}" if self.library else "",
                   f"called from {self.caller}" if self.caller else ""]
        if any(context):
            where += f" ({', '.join(filter(None, context))})"
        return f"{where}: {self.message}"


def _real(path: str) -> str:
    return os.path.realpath(path)


@functools.lru_cache(maxsize=1)
def _torch_dir() -> str:
    import torch

    return _real(os.path.dirname(torch.__file__))


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {_torch_dir(), _GENERATOR, *(paths.get(k) for k in ("stdlib", "platstdlib",
                                                                 "purelib", "platlib"))}
    return tuple(sorted({_real(r) for r in roots if r}))


def _in(path: str, root: str) -> bool:
    return _real(path).startswith(root + os.sep)


def _is_tensor_method(path: str) -> bool:
    return _real(path) in (os.path.join(_torch_dir(), "_tensor.py"),
                           os.path.join(_torch_dir(), "overrides.py"))


@functools.lru_cache(maxsize=1)
def _site_roots() -> tuple[str, ...]:
    """The folders installed libraries live in (site-packages)."""
    paths = sysconfig.get_paths()
    return tuple(sorted({_real(paths[k]) for k in ("purelib", "platlib") if paths.get(k)}))


def _library(path: str) -> str | None:
    """The installed library ``path`` belongs to, as "name version" (the version when its
    distribution is known); None for a file in no site-packages folder, or in torch's."""
    root = next((r for r in _site_roots() if _in(path, r)), None)
    if root is None or _in(path, _torch_dir()):
        return None
    return _named(os.path.relpath(_real(path), root).split(os.sep)[0].removesuffix(".py"))


@functools.lru_cache(maxsize=16)
def _named(top: str) -> str:
    """The installed library whose top-level module is ``top``, as "name version"."""
    dist = (installed_top_levels().get(top) or [None])[0]
    try:
        return f"{top} {importlib.metadata.version(dist)}" if dist else top
    except importlib.metadata.PackageNotFoundError:
        return top


def _is_model_call(path: str) -> bool:
    """Whether a frame at ``path`` is inside the model's call: the serving wrapper and gen-repo
    itself call the model, so frames from them outwards are not the model's."""
    return not (os.path.basename(path).startswith("gen_repo_wrapper_") or _in(path, _GENERATOR))


def _is_user_code(path: str) -> bool:
    """The user's own code: not an installed library, the stdlib, torch or gen-repo, nor the
    generated serving wrapper."""
    if path.startswith("<") or os.path.basename(path).startswith("gen_repo_wrapper_"):
        return False
    return not any(_in(path, root) for root in _library_roots())


def _show(path: str) -> str:
    """A short path: relative to its library's root, or to the working directory."""
    roots = [r for r in _library_roots() if _in(path, r)]
    if roots:
        root = max(roots, key=len)  # site-packages, not the lib/python3.X above it
        return os.path.relpath(_real(path), os.path.dirname(root) if root in (
            _GENERATOR, _torch_dir()) else root)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


@functools.lru_cache(maxsize=64)
def _tree(path: str) -> ast.AST | None:
    try:
        return ast.parse("".join(linecache.getlines(path)) or Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return None


def _only_raises(path: str, line: int) -> bool:
    """True when ``line`` is (in) an ``assert``, or the condition of an ``if`` that only raises."""
    tree = _tree(path)
    if tree is None:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and node.lineno <= line <= (node.end_lineno or line):
            return True
        if isinstance(node, ast.If) and node.test.lineno <= line <= (node.test.end_lineno or line):
            if not node.orelse and len(node.body) == 1 and isinstance(node.body[0], ast.Raise):
                return True
    return False


def _kind(message: str) -> str:
    return next((k for phrase, k in _KINDS if phrase in message), "other")


def _locate(message, filename: str, lineno: int, frame) -> Warned:
    """``frame``: the innermost Python frame when the warning was shown."""
    stack = []
    while frame is not None:
        stack.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    # The frame the warning points at; Tensor methods written in Python (``__array__``) pass it
    # on to the line that called them.
    at = next((i for i, (f, n) in enumerate(stack) if (f, n) == (filename, lineno)), None)
    if at is not None:
        while at + 1 < len(stack) and _is_tensor_method(stack[at][0]):
            at += 1
        filename, lineno = stack[at]
    text = str(message).strip()
    first = text.split(". ")[0].rstrip(".")[:200]
    caller = None
    if not _is_user_code(filename):
        inside = itertools.takewhile(lambda fn: _is_model_call(fn[0]), stack)
        user = next(((f, n) for f, n in inside if _is_user_code(f)), None)
        caller = f"{_show(user[0])}:{user[1]}" if user else None
    benign = None
    if _in(filename, _torch_dir()) and not _in(filename, os.path.join(_torch_dir(), "jit")):
        benign = "in PyTorch's own code, which torch.jit.trace hides by default"
    elif _only_raises(filename, lineno):
        benign = "by checks that only raise (the trace keeps the no-error path)"
    code = linecache.getline(filename, lineno).strip()
    return Warned(first, _kind(first), f"{_show(filename)}:{lineno}", code[:120], caller, benign,
                  _library(filename))


@contextlib.contextmanager
def recorded():
    """Collect the TracerWarnings raised inside the block, located, one per (site, message)."""
    import torch

    found: dict[tuple[str, str], Warned] = {}

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, torch.jit.TracerWarning):
            return
        w = _locate(message, filename, lineno, sys._getframe(1))
        found.setdefault((w.site, w.message), w)

    with warnings.catch_warnings():
        # "always": PyTorch's own filter hides its library's warnings and the per-module
        # registries would hide a repeat in a later build of the same process; we classify.
        warnings.simplefilter("ignore")  # every other warning of tracing is noise here
        warnings.simplefilter("always", torch.jit.TracerWarning)
        warnings.showwarning = show
        out: list[Warned] = []
        try:
            yield out
        finally:
            out.extend(found.values())


_SEVERITY = ("bool", "numpy", "number", "iterate", "other", "constant")


def suspects(warned: list[Warned]) -> list[Warned]:
    """The warnings that count, the likeliest causes of a wrong answer first."""
    return sorted((w for w in warned if w.benign is None), key=lambda w: _SEVERITY.index(w.kind))


def listing(warned: list[Warned], limit: int = 3) -> str:
    shown = "; ".join(w.describe() for w in warned[:limit])
    more = len(warned) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


def how_to_fix(warned: list[Warned]) -> str:
    """What to change in forward(), for the warnings that count (first one of each kind); when
    every one is in an installed library's code, the variants that do not trace."""
    if all(w.library for w in warned):
        return _in_libraries(warned)
    warned = [w for w in warned if not w.library]
    first = {}
    for w in warned:
        first.setdefault(w.kind, w)
    at = {k: (w.caller or w.site) for k, w in first.items()}
    if "numpy" in first:
        return (f"forward() converts a tensor to a NumPy array ({at['numpy']}): the trace"
                " keeps the value it saw, and torch.jit.script cannot compile NumPy. Compute it"
                " with torch operations instead (e.g. x.sum() for np.sum(x.numpy())).")
    if "bool" in first:
        return (f"forward() branches in Python on a tensor's value ({at['bool']}): the trace keeps"
                " only the branch the samples took. Write it as torch.where(cond, a, b) instead"
                " of a Python `if` on a tensor, or make forward() scriptable (type annotations,"
                " no unsupported Python) so torch.jit.script keeps the branch.")
    if "iterate" in first:
        return (f"forward() loops over a tensor ({at['iterate']}): the trace repeats the loop as"
                " many times as the sample had rows. Use tensor operations over the whole axis,"
                " or make forward() scriptable.")
    w = warned[0]
    return (f"forward() takes a Python value out of a tensor ({w.caller or w.site}): the trace"
            " keeps the value it saw. Keep it a tensor (torch operations), or make forward()"
            " scriptable.")


def _in_libraries(warned: list[Warned]) -> str:
    """The route for TracerWarnings raised in installed libraries' code: not a rewrite of it, but
    the variants that do not trace."""
    libraries = " and ".join(dict.fromkeys(w.library for w in warned))
    w = warned[0]
    called = f", called from your {w.caller}" if w.caller else ""
    return (f"The TracerWarnings come from {libraries}'s own code ({w.site}{called}), not from"
            " yours: it takes a Python value out of a tensor there, so the trace keeps the value"
            " the samples gave, and that code is not yours to rewrite. Serve a variant that does"
            " not trace: python-compile (torch.compile of the eager model) or python-aoti"
            " (torch.export, which refuses such code instead of baking it in) where torch.export"
            " takes the model.")
