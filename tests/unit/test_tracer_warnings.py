"""TracerWarnings, located and sorted: which say the trace may be wrong (and where in the model's
code), which are known to be benign. Real torch.jit.trace runs of tiny modules."""

import inspect
import os

import numpy as np
import torch
from torch import nn

from generator.variants import tracer_warnings as tw
from tests.fixtures import models


def _traced(model, *shape):
    with tw.recorded() as warned:
        torch.jit.trace(model, (torch.rand(*shape),), check_trace=False)
    return warned


def _line(obj, text: str) -> str:
    """'path:line' of the first line of ``obj``'s source holding ``text``, as the warnings show
    it (the path relative to the working directory: the repository root under pytest)."""
    lines, start = inspect.getsourcelines(obj)
    offset = next(i for i, ln in enumerate(lines) if text in ln)
    return f"{os.path.relpath(inspect.getsourcefile(obj))}:{start + offset}"


def test_a_value_dependent_if_counts_and_names_its_line():
    warned = _traced(models.value_branch(), 3, 4)
    [w] = tw.suspects(warned)
    assert w.kind == "bool" and "Python boolean" in w.message
    assert w.site == _line(models.ValueBranch.forward, "if x.abs().max()")
    assert w.code == "if x.abs().max() > self.threshold:" and w.caller is None
    assert "torch.where" in tw.how_to_fix([w]) and w.site in tw.how_to_fix([w])


def test_a_numpy_conversion_is_named_as_such():
    warned = _traced(models.numpy_scale(), 3, 4)
    first = tw.suspects(warned)[0]
    assert first.kind == "numpy"
    assert first.site == _line(models.NumpyScale.forward, "np.abs(x.detach().numpy())")
    fix = tw.how_to_fix(tw.suspects(warned))
    assert "NumPy" in fix and first.site in fix and "control flow" not in fix


class _ArrayProtocol(nn.Module):
    def forward(self, x):
        return x * float(np.asarray(x).sum())  # Tensor.__array__, written in torch/_tensor.py


def test_a_conversion_through_a_tensor_method_is_put_on_the_callers_line():
    [w] = tw.suspects(_traced(_ArrayProtocol(), 2, 3))
    assert w.kind == "numpy" and w.site == _line(_ArrayProtocol.forward, "np.asarray")


class _Checks(nn.Module):
    def forward(self, x):
        if x.shape[-1] != 4:
            raise ValueError("want 4 features")
        assert bool(x.shape[0] > 0), "empty batch"
        return x * 2


class _GRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 3)

    def forward(self, x):
        return self.gru(x)[0]


def test_checks_that_only_raise_and_pytorchs_own_layers_do_not_count():
    checks = _traced(_Checks(), 2, 4)
    assert checks and not tw.suspects(checks)
    assert all("only raise" in w.benign for w in checks)
    gru = _traced(_GRU(), 5, 2, 4)  # nn.GRU checks its input's shape in Python
    assert gru and not tw.suspects(gru)
    assert all(w.site.startswith("torch/nn/") and "PyTorch's own code" in w.benign for w in gru)


class _LibraryCall(nn.Module):
    def forward(self, x):
        from torchvision.models.detection._utils import BoxCoder

        return BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(x, [x.abs()])


def test_a_warning_inside_a_library_names_the_users_line_that_called_it():
    import torchvision  # noqa: F401  (imported before tracing: its import runs ops)

    warned = tw.suspects(_traced(_LibraryCall(), 2, 4))
    bools = [w for w in warned if w.kind == "bool"]
    assert bools and bools[0].site.startswith("torchvision/models/detection/_utils.py:")
    assert bools[0].caller == _line(_LibraryCall.forward, "BoxCoder((1.0")
    assert bools[0].caller in tw.how_to_fix(warned)
    assert warned[0].kind == "bool"  # the likeliest cause of a wrong answer is listed first


def test_models_without_warnings_record_none():
    assert _traced(models.tiny_mlp(), 2, 16) == []
