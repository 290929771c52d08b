"""How the inputs reach the model's ``forward()``: by parameter name, as Python would bind them.

``--input token_type_ids:…`` must land in ``forward(..., token_type_ids=None)`` and not in the
second parameter. The binding is read from the signature once per build and used both by the
eager reference run and by the generated serving wrapper (which every variant serves), so the
references and every artifact call the model the same way:

- every input is passed by keyword when ``forward()`` has named parameters; an input name that is
  not one of them is refused (unless ``forward`` takes ``**kwargs``), and so is a required
  parameter that no input feeds;
- a TorchScript module (``torch.jit.load``/``script``) has no Python signature: its names come
  from its schema (``forward.schema``);
- a ``forward`` whose one parameter is typed as a dict of tensors (``Dict[str, Tensor]``) gets
  one dict, keyed by the input names;
- by position only where nothing can be misrouted -- a ``forward`` fed by exactly one input
  (torchvision's ``forward(self, x)`` served as ``input``) -- or where the user says the
  ``--input`` order is forward()'s (``--inputs-by-position``). Several inputs to a forward()
  whose names cannot be read (``forward(self, *args)``, positional-only parameters, a C++
  extension) are refused otherwise: the build's references would be made with the same guess,
  so no check could see two same-shaped inputs exchanged.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import typing
from dataclasses import dataclass

from ..errors import SpecError, did_you_mean

_P = inspect.Parameter


@dataclass(frozen=True)
class InputBinding:
    """keywords[i]: the forward() parameter input i is passed as, or None (by position); with
    ``packed``, the key of input i in the one dict passed as forward()'s parameter ``packed``."""

    keywords: tuple[str | None, ...]
    reason: str  # one line: why this binding (shown with -v and recorded)
    packed: str | None = None

    @property
    def by_name(self) -> bool:
        return any(k is not None for k in self.keywords)

    def split(self, values: list) -> tuple[list, dict]:
        """(positional args, keyword args) for ``values`` in spec input order."""
        if self.packed:
            return [dict(zip(self.keywords, values))], {}
        args = [v for v, k in zip(values, self.keywords) if k is None]
        kwargs = {k: v for v, k in zip(values, self.keywords) if k is not None}
        return args, kwargs

    def call(self, fn, values: list):
        args, kwargs = self.split(values)
        return fn(*args, **kwargs)

    def call_source(self, exprs: list[str]) -> str:
        """The argument list of the call, as Python source (positional ones first)."""
        if self.packed:
            return "{" + ", ".join(f"{k!r}: {v}" for k, v in zip(self.keywords, exprs)) + "}"
        args, kwargs = self.split(exprs)
        return ", ".join([*args, *(f"{k}={v}" for k, v in kwargs.items())])


def describe(sig: inspect.Signature) -> str:
    """forward(input_ids, attention_mask=None, *, flag=False, **kwargs), defaults kept short."""
    parts, star_done = [], False
    for p in sig.parameters.values():
        if p.kind is _P.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star_done = True
        elif p.kind is _P.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        else:
            if p.kind is _P.KEYWORD_ONLY and not star_done:
                parts.append("*")
                star_done = True
            default = "" if p.default is _P.empty else "=" + _short(repr(p.default))
            parts.append(p.name + default)
    return f"forward({', '.join(parts)})"


def _short(text: str) -> str:
    return text if len(text) <= 16 else text[:13] + "..."


def signature(model) -> inspect.Signature | None:
    """forward()'s signature: Python's, or one made from a TorchScript schema (None: neither
    can be read)."""
    try:
        return inspect.signature(model.forward)
    except (TypeError, ValueError):
        pass
    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is None:
        return None
    params = [_P(a.name, _P.POSITIONAL_OR_KEYWORD, annotation=a.type.annotation_str,
                 default=None if a.has_default_value() else _P.empty)
              for a in schema.arguments[1:]]  # the first is self
    return inspect.Signature(sorted(params, key=lambda p: p.default is not _P.empty))


_DICT_OF_TENSORS = re.compile(r"(typing\.)?(Dict|dict|Mapping)\[str,(torch\.)?Tensor\]")


def _dict_of_tensors(model, param: inspect.Parameter) -> bool:
    """True when ``param`` is annotated as a dict of tensors keyed by strings (Dict[str, Tensor],
    dict[str, Tensor], Mapping[str, Tensor]; an annotation kept as text is read as text)."""
    import torch

    hint = param.annotation
    if isinstance(hint, str):
        try:
            hint = typing.get_type_hints(model.forward).get(param.name, hint)
        except Exception:  # names the annotation uses that cannot be resolved
            pass
    if isinstance(hint, str):
        return bool(_DICT_OF_TENSORS.fullmatch(hint.replace(" ", "")))
    return (typing.get_origin(hint) in (dict, collections.abc.Mapping)
            and typing.get_args(hint) == (str, torch.Tensor))


def bind_inputs(model, inputs, by_position: bool = False) -> InputBinding:
    """The binding of ``inputs`` (TensorSpecs) to ``model.forward``; SpecError when a name fits no
    parameter, or when several inputs would go by position without ``by_position`` (the user's
    word that --input order is forward()'s)."""
    names = [t.name for t in inputs]
    positional = InputBinding((None,) * len(names), "")
    sig = signature(model)

    def by_order(why: str) -> InputBinding:
        if len(names) > 1 and not by_position:
            raise SpecError(
                f"{why}, so gen-repo cannot tell which of the {len(names)} inputs"
                f" ({', '.join(names)}) goes where; passed in --input order, a wrong order would"
                " be checked against references made the same way, and two inputs of the same"
                " shape would be served exchanged without any check failing.",
                "If the --input order is forward()'s parameter order, say so with"
                " --inputs-by-position; or wrap the model in a module whose forward() names"
                " its parameters (def forward(self, ids, mask): return self.model(ids, mask)).")
        return InputBinding(positional.keywords, f"{why}: by position"
                            + (", in --input order as --inputs-by-position says"
                               if len(names) > 1 else ""))

    if sig is None:
        return by_order("forward()'s signature cannot be read")
    params = list(sig.parameters.values())
    named = [p for p in params if p.kind in (_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY)]
    var_kw = any(p.kind is _P.VAR_KEYWORD for p in params)
    if len(params) == 1 and params[0].kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD) \
            and _dict_of_tensors(model, params[0]):
        return InputBinding(tuple(names), f"{describe(sig)} takes a dict of tensors: the inputs"
                            " are its keys", packed=params[0].name)
    if any(p.kind is _P.POSITIONAL_ONLY for p in params) or (not named and not var_kw):
        return by_order(f"the model's {describe(sig)} cannot take its inputs by name")
    if (len(names) == 1 and len(params) == 1 and named
            and named[0].kind is _P.POSITIONAL_OR_KEYWORD):
        return InputBinding(positional.keywords,
                            f"{describe(sig)} has one parameter: the one input goes to it")
    by_name = {p.name for p in named}
    unknown = [n for n in names if n not in by_name]
    if unknown and not var_kw:
        shown = ", ".join(f"'{n}'{did_you_mean(n, sorted(by_name - set(names)))}" for n in unknown)
        which = "no parameter of that name" if len(unknown) == 1 else "no parameters of those names"
        raise SpecError(
            f"--input {shown}: the model's {describe(sig)} has {which} (inputs are passed to"
            " forward() by name, so each lands in the parameter it names).",
            _one_parameter_tip(named[0].name, names) if len(named) == 1 < len(names) else
            "Name each --input after the forward() parameter it feeds (the input names are also"
            " the names the server exposes).")
    missing = [p.name for p in named if p.default is _P.empty and p.name not in names]
    if missing:
        raise SpecError(
            f"the model's {describe(sig)} needs {', '.join(repr(m) for m in missing)}, which no"
            " --input names.",
            f"Add --input {missing[0]}:DTYPE:DIMS (one --input per required parameter).")
    return InputBinding(tuple(names), f"{describe(sig)}: inputs passed by name")


def _one_parameter_tip(param: str, names: list[str]) -> str:
    """The routes for several inputs to a forward() of one parameter: a dict of tensors typed as
    one, or a wrapper with a parameter per input."""
    args = ", ".join(names)
    return (f"forward() takes one parameter for {len(names)} inputs. If {param} is a dict of"
            f" tensors, annotate it (def forward(self, {param}: Dict[str, Tensor]), with"
            " `from typing import Dict` and `from torch import Tensor`) and each --input name"
            " becomes one of its keys; otherwise wrap the model in a module with a"
            f" parameter per input (def forward(self, {args}): return self.model(...), passing"
            " them as the model takes them).")
