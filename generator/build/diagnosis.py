"""Why a model failed a step of the build, in words that name the true cause and the route that
works (the checks themselves are elsewhere; this module explains what they found).
"""

from __future__ import annotations

from ..errors import ExportError, error_line


def put_in_eval(model) -> str | None:
    """``model.eval()``; a note when the model refuses it (None when it does not). A module
    made by ``torch.export`` (``ExportedProgram.module()``) replaces its own ``train``/``eval``
    with ones that raise: its graph keeps the mode it was exported in, so it is served as it is,
    with nn.Module's eval() restored (it only sets the ``training`` flags, which its graph does
    not read). Any other eval() that raises refuses the build with its error."""
    try:
        model.eval()
        return None
    except Exception as e:
        line = error_line(type(e).__name__, str(e))
        refusing = [m for m in model.modules() if {"train", "eval"} & set(vars(m))]
        for m in refusing:
            vars(m).pop("train", None)
            vars(m).pop("eval", None)
        try:
            if refusing:
                model.eval()
                return (f"the model's eval() raises ({line}), as a module made by torch.export"
                        " does: its graph keeps the mode it was exported in (export after"
                        " model.eval() for inference), so it is built as it is")
        except Exception:
            pass
        raise ExportError(
            f"the model's eval() raises {line}.",
            "gen-repo serves a model in eval mode (dropout off, batch norm on its running"
            " statistics), so it calls eval(): make eval() work, or build the module it"
            " wraps.") from e
