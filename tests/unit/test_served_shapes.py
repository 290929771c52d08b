"""How tensors are served (per-row scalars, scalars without batching) and the build's checks of
what the batch means to a model, without a server."""

import numpy as np
import pytest
import torch

from generator.build import rows
from generator.build.arguments import bind_inputs
from generator.repository.config import Engine, config_text, model_config, parse_config
from generator.build.outputs import output_paths
from generator.build.samples import Case
from generator.build.wrapper import make_wrapper
from generator.errors import ExportError
from generator.runtime.model import as_model_receives, c_order, declared_dims, shape_contradiction
from generator.serve.verify import _fits, api_shape
from generator.spec import ModelSpec, TensorSpec
from generator.variants import registry

SCALAR = TensorSpec("t", "float32", ())
VECTOR = TensorSpec("x", "float32", (8,))
DYNAMIC = TensorSpec("ids", "int64", (-1,))


def _spec(**kw):
    base = dict(name="m", inputs=(VECTOR, SCALAR),
                outputs=(TensorSpec("logits", "float32", (5,)), TensorSpec("label", "int64", ())))
    base.update(kw)
    return ModelSpec(**base)


def test_one_rule_for_the_dims_a_client_sees_and_the_reshape():
    assert SCALAR.api_dims == (1,) and VECTOR.api_dims == (8,) and DYNAMIC.api_dims == (-1,)
    assert SCALAR.reshape(batching=True) == () and SCALAR.reshape(batching=False) is None
    assert VECTOR.reshape(True) is None and DYNAMIC.reshape(True) is None
    assert SCALAR.artifact_dims(True) == () and SCALAR.artifact_dims(False) == (1,)
    assert VECTOR.artifact_dims(True) == (8,)
    assert api_shape(SCALAR, True) == [-1, 1] and api_shape(SCALAR, False) == [1]
    assert api_shape(DYNAMIC, True) == [-1, -1]


def test_config_serves_a_per_row_scalar_with_an_empty_reshape():
    cfg = model_config(_spec(), "m_python", Engine("backend", "python"), {})
    x, t = cfg.input
    assert list(x.dims) == [8] and not x.HasField("reshape")
    assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == []
    logits, label = cfg.output
    assert not logits.HasField("reshape")
    assert list(label.dims) == [1] and label.HasField("reshape")
    again = parse_config(config_text(cfg, "written"))  # the empty reshape is kept in the text
    assert again.output[1].HasField("reshape") and again.input[1].HasField("reshape")


def test_without_batching_triton_gets_no_empty_reshape():
    # Triton 24.10 refuses to load "empty reshape for non-batching model"
    cfg = model_config(_spec(max_batch_size=0), "m_libtorch",
                       Engine("platform", "pytorch_libtorch"), {})
    assert [list(i.dims) for i in cfg.input] == [[8], [1]]
    assert not any(i.HasField("reshape") for i in [*cfg.input, *cfg.output])


def test_the_runtime_reshapes_as_triton_does():
    scalar = {"name": "t", "dims": [1], "reshape": {"shape": []}}
    assert as_model_receives(np.zeros((4, 1)), scalar, True).shape == (4,)
    # Triton's rule in general: each -1 of the reshape takes the size of the next -1 axis
    general = {"name": "x", "dims": ["-1", "6"], "reshape": {"shape": ["2", "-1", "3"]}}
    assert as_model_receives(np.zeros((5, 7, 6)), general, True).shape == (5, 2, 7, 3)
    assert as_model_receives(np.zeros((3, 8)), {"name": "x", "dims": [8]}, True).shape == (3, 8)


def test_stored_arrays_are_shaped_as_clients_send_and_receive_them():
    spec = _spec()
    arrays = {"x": np.zeros((4, 8), np.float32), "t": np.arange(4, dtype=np.float32)}
    python = registry.get("python").served_arrays(spec, arrays, spec.inputs)
    assert python["x"].shape == (4, 8) and python["t"].shape == (4, 1)
    assert python["t"][:, 0].tolist() == [0, 1, 2, 3]
    aoti = registry.get("aoti").served_arrays(spec, arrays, spec.inputs)  # batch 1, no batch dim
    assert aoti["INPUT__1"].shape == (1,) and aoti["INPUT__0"].shape == (1, 8)


def test_served_shapes_fit_the_declared_ones():
    assert _fits((3, 1), [-1, 1]) and _fits((1,), [1])
    assert not _fits((3,), [-1, 1]) and not _fits((3, 2), [-1, 1])


class _Scalars(torch.nn.Module):
    def forward(self, x, t):
        assert t.dim() == 0, "the model must get its 0-d value"
        return {"total": x.sum() * t, "scaled": x * t}


def test_without_batching_the_wrapper_turns_one_element_into_the_models_0d_value_and_back():
    model = _Scalars()
    out = model(torch.ones(3), torch.tensor(2.0))
    paths = output_paths(out)
    outputs = (TensorSpec("total", "float32", (1,)), TensorSpec("scaled", "float32", (3,)))
    inputs = (TensorSpec("x", "float32", (3,)), SCALAR)
    binding = bind_inputs(model, inputs)
    spec = ModelSpec(name="m", inputs=inputs, outputs=outputs, max_batch_size=0)
    wrapped, _ = make_wrapper(model, spec, binding, paths, scalar_outputs=(0,))
    total, scaled = wrapped(torch.ones(3), torch.tensor([2.0]))  # t as a client sends it: [1]
    assert total.shape == (1,) and total.item() == 6.0
    assert scaled.tolist() == [2.0, 2.0, 2.0]
    traced = torch.jit.trace(wrapped, (torch.ones(3), torch.tensor([2.0])))
    assert traced(torch.ones(3), torch.tensor([3.0]))[0].tolist() == [9.0]


def _case(name, batch, x):
    return Case(name, batch, {"x": x})


def test_a_list_as_long_as_the_batch_is_one_result_per_image():
    spec = ModelSpec(name="m", inputs=(VECTOR,))
    cases = [_case("a", 4, None), _case("b", 3, None)]
    per_image = {"a": [{"boxes": 1}] * 4, "b": [{"boxes": 1}] * 3}
    with pytest.raises(ExportError, match="one result per image .* a list of 4 for a batch of 4"
                                          " and 3 for a batch of 3, each a dict of boxes"):
        rows.check_per_item(per_image, cases, spec)
    rows.check_per_item({"a": (1, 2), "b": (1, 2)}, cases, spec)  # a tuple of two outputs
    rows.check_per_item(per_image, cases, spec.with_(max_batch_size=0))  # no batch to split


def _rows_check(forward, spec, atol=1e-4):
    spec = spec.with_(atol=atol, rtol=atol)
    rng = np.random.default_rng(0)
    cases = [_case("a", 4, rng.standard_normal((4, 8)).astype(np.float32)),
             _case("b", 3, rng.standard_normal((3, 8)).astype(np.float32))]

    def run(case):
        return [forward(torch.from_numpy(case.inputs["x"]))]

    batched = {c.name: run(c) for c in cases}
    rows.check_rows_independent(run, batched, cases, ["y"], spec)


def test_rows_that_mix_the_batch_are_refused_and_independent_rows_pass():
    spec = ModelSpec(name="m", inputs=(VECTOR,))
    _rows_check(lambda x: x * 2, spec)
    _rows_check(lambda x: x + 1e-6 * x.shape[0], spec)  # rounding-sized differences: fine
    for mixing in (lambda x: x - x.mean(0), lambda x: x.softmax(0), lambda x: x.cumsum(0)):
        with pytest.raises(ExportError, match="rows of a batch depend on each other: row [0-9]+"
                                              " of sample case b"):
            _rows_check(mixing, spec)
    with pytest.raises(ExportError) as tight:  # the same, with tolerances below the rounding
        _rows_check(lambda x: x + 1e-6 * x.shape[0], spec, atol=1e-8)
    assert "changes with the batch size, not with the other rows" in tight.value.message
    assert tight.value.tip.startswith("It is the size of float rounding")
    assert "--input x:float32:-1x8 for x:float32:8" in tight.value.tip
    _rows_check(lambda x: x - x.mean(0), spec.with_(max_batch_size=0))  # no batching: no check


def test_a_model_that_fails_on_one_row_is_refused_with_the_reason():
    def forward(x):
        if x.shape[0] < 2:
            try:
                raise ValueError("expected at least two rows")
            except ValueError as e:  # as the build's eager run reports a failing forward()
                raise ExportError("the model fails on sample inputs (x[1, 8]:float32): ...") from e
        return x * 2

    with pytest.raises(ExportError) as refused:
        _rows_check(forward, ModelSpec(name="m", inputs=(VECTOR,)))
    assert refused.value.message.startswith(
        "the model fails on a batch of one row (row 0 of sample case b alone): ValueError:"
        " expected at least two rows. Triton hands the model batches of any size from 1 to"
        " max_batch_size (8).")


def test_the_runtime_answers_only_shapes_its_config_declares():
    """The model's output as it returns it against its config entry (after the batch axis, the
    reshape's shape when there is one): -1 takes any size, a fixed size only itself."""
    per_row = {"name": "score", "dims": ["1"], "reshape": {"shape": []}}
    assert declared_dims(per_row) == []
    assert shape_contradiction("score", declared_dims(per_row), (4,), batching=True) is None
    boxes = declared_dims({"name": "boxes", "dims": ["-1", "4"]})
    assert shape_contradiction("boxes", boxes, (2, 7, 4), batching=True) is None
    assert shape_contradiction("boxes", boxes, (7, 4), batching=False) is None
    wrong = shape_contradiction("boxes", [100, 4], (57, 4), batching=False)
    assert wrong.startswith("output 'boxes' has shape [57, 4] here, and this model's config"
                            " declares [100, 4]")
    assert shape_contradiction("boxes", boxes, (2, 7), batching=True)  # rank


@pytest.mark.parametrize("make", [
    lambda: torch.zeros(0).unsqueeze(-1).expand(-1, 3),  # no rows, an expanded view: (1, 0)
    lambda: torch.zeros(2, 3, 0),  # an empty last axis: torch strides (3, 1, 1)
    lambda: torch.zeros(3, 0, 4).permute(1, 0, 2),
    lambda: torch.ones(4, 1).expand(4, 5),
    lambda: torch.arange(6.0).view(2, 3).t(),
    lambda: torch.ones(2, 3),
])
def test_outputs_get_the_strides_the_python_backend_requires_of_dlpack(make):
    """Each stride the product of the sizes after it (the backend checks every axis but the
    first); torch calls a tensor contiguous whatever its size-1 and empty axes' strides."""
    t = make()
    got = c_order(t)
    want, step = [], 1
    for size in reversed(t.shape):
        want.append(step)
        step *= size
    assert got.stride() == tuple(reversed(want)) and torch.equal(got, t)
    if t.stride() == got.stride():
        assert got is t  # nothing copied when nothing is to change
