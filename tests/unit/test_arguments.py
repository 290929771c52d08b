"""Inputs reach forward() by parameter name: the binding, its refusals, and the generated wrapper
that every variant serves (eager, TorchScript trace and script)."""

from typing import Optional

import numpy as np
import pytest
import torch
from torch import nn

from generator.build.arguments import bind_inputs
from generator.build.outputs import output_paths
from generator.build.wrapper import make_wrapper, wrapper_source
from generator.errors import SpecError
from generator.spec import ModelSpec, TensorSpec
from tests.fixtures.models import tiny_bert

IDS = TensorSpec("input_ids", "int64", (-1,), 0, 30)
TYPES = TensorSpec("token_type_ids", "int64", (-1,), 0, 2)


def _ids(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 30, (3, 7), generator=g), torch.randint(0, 2, (3, 7), generator=g)


def test_bert_like_inputs_go_by_name_not_by_position():
    model = tiny_bert().eval()
    binding = bind_inputs(model, [IDS, TYPES])
    assert binding.keywords == ("input_ids", "token_type_ids")
    ids, types = _ids()
    with torch.no_grad():
        got = binding.call(model, [ids, types])
        want = model(input_ids=ids, token_type_ids=types)
        positional = model(ids, types)  # token_type_ids in attention_mask: the old defect
    for k in want:
        assert torch.equal(got[k], want[k])
    assert (got["pooler_output"] - positional["pooler_output"]).abs().max() > 0.1


def test_a_name_that_is_no_parameter_is_refused_naming_the_parameters():
    with pytest.raises(SpecError) as e:
        bind_inputs(tiny_bert(), [IDS, TensorSpec("token_typeids", "int64", (-1,))])
    msg = e.value.message
    assert "'token_typeids'" in msg and 'did you mean "token_type_ids"' in msg
    assert "forward(input_ids, attention_mask=None, token_type_ids=None)" in msg
    assert e.value.tip and "forward() parameter" in e.value.tip


def test_a_required_parameter_no_input_feeds_is_refused():
    with pytest.raises(SpecError) as e:
        bind_inputs(tiny_bert(), [TYPES])
    assert "needs 'input_ids'" in e.value.message and "--input input_ids" in e.value.tip


class _StarArgs(nn.Module):
    def forward(self, *args):
        return args[0] - args[1]


class _PosOnly(nn.Module):
    def forward(self, a, b, /):
        return a - b


class _Kwargs(nn.Module):
    def forward(self, a, **extra):
        return a - extra["b"]


class _One(nn.Module):
    def forward(self, x):
        return x * 2


class _Builtin(nn.Module):
    forward = staticmethod(torch.sub)  # a C function: no signature to read


@pytest.mark.parametrize("model,names,keywords", [
    (_StarArgs(), ("b", "a"), (None, None)),
    (_PosOnly(), ("b", "a"), (None, None)),
    (_Builtin(), ("b", "a"), (None, None)),
    (_Kwargs(), ("b", "a"), ("b", "a")),
    (_One(), ("input",), (None,)),  # torchvision's forward(self, x), served as "input"
    (_One(), ("x",), (None,)),
])
def test_positional_only_where_the_parameters_cannot_be_named(model, names, keywords):
    """Several inputs go by position only on the user's word (--inputs-by-position)."""
    binding = bind_inputs(model, [TensorSpec(n, "float32", (2,)) for n in names],
                          by_position=True)
    assert binding.keywords == keywords
    b, a = torch.tensor([[1.0, 2.0]]), torch.tensor([[10.0, 20.0]])
    if len(names) == 2:
        want = (b - a) if keywords == (None, None) else (a - b)
        assert torch.equal(binding.call(model, [b, a]), want)


@pytest.mark.parametrize("model", [_StarArgs(), _PosOnly(), _Builtin()])
def test_several_inputs_by_position_are_refused_unless_the_user_says_the_order(model):
    with pytest.raises(SpecError) as e:
        bind_inputs(model, [TensorSpec(n, "float32", (2,)) for n in ("b", "a")])
    assert "cannot tell which of the 2 inputs (b, a) goes where" in e.value.message
    assert "--inputs-by-position" in e.value.tip


class _Minus(nn.Module):
    def forward(self, minuend, subtrahend):
        return minuend - subtrahend


@pytest.mark.parametrize("make", [torch.jit.script, lambda m: torch.jit.trace(
    m, (torch.zeros(1, 2), torch.zeros(1, 2)))], ids=["script", "trace"])
def test_a_torchscript_module_binds_by_the_names_of_its_schema(make, tmp_path):
    """A TorchScript module (torch.jit.load'ed: no Python signature) binds by its schema's
    names, so --input order cannot exchange two same-shaped inputs."""
    path = tmp_path / "m.pt"
    make(_Minus()).save(str(path))
    loaded = torch.jit.load(str(path))
    binding = bind_inputs(loaded, [TensorSpec(n, "float32", (2,))
                                   for n in ("subtrahend", "minuend")])
    assert binding.keywords == ("subtrahend", "minuend")
    s, m = torch.tensor([[1.0, 2.0]]), torch.tensor([[10.0, 20.0]])
    assert torch.equal(binding.call(loaded, [s, m]), m - s)


class _TimeMajor(nn.Module):
    """Keyword parameters, batch on axis 1, float and int inputs."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 3)

    def forward(self, ids, scale: torch.Tensor, offset: Optional[torch.Tensor] = None):
        out = self.emb(ids) * scale.unsqueeze(-1)
        return out if offset is None else out + offset.unsqueeze(-1)


def test_wrapper_applies_batch_axis_and_dtype_per_keyword_input():
    inputs = [TensorSpec("ids", "int64", (5,), 0, 10), TensorSpec("scale", "float32", (5,))]
    binding = bind_inputs(_TimeMajor(), inputs)
    out_spec = [TensorSpec("output", "float32", (5, 3))]
    spec = ModelSpec(name="m", inputs=tuple(inputs), outputs=tuple(out_spec), batch_axis=1)
    source = wrapper_source(spec.with_(dtype="float16"), binding, output_paths(torch.zeros(1)))
    assert "self.model(ids=ids.movedim(0, 1), scale=scale.movedim(0, 1).to(torch.float16))" \
        in source
    model = _TimeMajor().eval()
    wrapper, _ = make_wrapper(model, spec, binding, output_paths(torch.zeros(1)))
    ids = torch.randint(0, 10, (4, 5))  # served batch-first: 4 rows of 5 steps
    scale = torch.rand(4, 5)
    with torch.no_grad():
        want = model(ids=ids.T, scale=scale.T).movedim(1, 0)
        assert torch.equal(wrapper(ids, scale), want)
        assert torch.equal(torch.jit.script(wrapper)(ids, scale), want)


def test_torchscript_of_the_wrapper_keeps_the_names_and_the_binding():
    model = tiny_bert().eval()
    binding = bind_inputs(model, [IDS, TYPES])
    ids, types = _ids(1)
    with torch.no_grad():
        ref = model(input_ids=ids, token_type_ids=types)
    paths = output_paths(ref)
    outs = [TensorSpec(n, "float32", (-1,)) for n in ref]
    wrapper, _ = make_wrapper(model, ModelSpec(name="m", inputs=(IDS, TYPES), outputs=tuple(outs)),
                              binding, paths)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, (ids, types), check_trace=False)
        scripted = torch.jit.script(wrapper)
        other_ids, other_types = _ids(2)
        want = model(input_ids=other_ids, token_type_ids=other_types)
        for ts in (traced, scripted):
            assert [a.name for a in ts.forward.schema.arguments][1:] == ["input_ids",
                                                                         "token_type_ids"]
            got = ts(other_ids, other_types)
            assert np.array_equal(got[1].numpy(), want["pooler_output"].numpy())
