"""tests/fixtures/user_cases.py's models through the build's own functions, in-process: every
call of a model gets fresh inputs (a model changing them in place is deterministic), the sample
and probe lengths follow --check-lengths and a too short length is named, a model taking
gradients runs under torch.no_grad (and TorchScript is refused for it), and a bfloat16 output
becomes numpy float32 with bf16 tolerances. End to end on the server:
tests/integration/test_user_cases.py."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from generator.build import sizes
from generator.build.pipeline import prepare
from generator.build.samples import make_cases
from generator.errors import ExportError
from generator.runtime import model as runtime
from generator.spec import ModelSpec, build_spec, parse_input
from generator.variants.aoti_export import compiled_package
from generator.variants.torchscript import make_torchscript
from tests.conftest import ROOT
from tests.fixtures import user_cases

SOURCE = ROOT / "tests" / "fixtures" / "user_cases.py"


def _spec(factory: str, tmp_path, **values) -> ModelSpec:
    return build_spec({"source": f"{SOURCE}:{factory}", "out": str(tmp_path / "repo"),
                       "input": [parse_input(f) for f in user_cases.INPUTS[factory]], **values})


# ---------------------------------------------------------------------------------------------
# 1. in-place ops on the inputs


def test_every_eager_call_gets_fresh_inputs(tmp_path):
    spec = _spec("in_place", tmp_path)
    stored = {c.name: c.inputs["x"].copy() for c in make_cases(spec)}
    ctx, notes = prepare(spec)
    assert not any("not deterministic" in n for n in notes), notes
    model = user_cases.in_place().eval()
    for case in ctx.cases:
        assert np.array_equal(case.inputs["x"], stored[case.name])  # the case is unchanged
        with torch.inference_mode():
            want = model(torch.from_numpy(stored[case.name].copy())).numpy()
        np.testing.assert_allclose(ctx.references[case.name]["output"], want, rtol=1e-6,
                                   atol=1e-6)
    first, second = ctx.torch_inputs(ctx.cases[0]), ctx.torch_inputs(ctx.cases[0])
    assert first[0].data_ptr() != second[0].data_ptr()
    assert first[0].data_ptr() != ctx.cases[0].inputs["x"].ctypes.data


class _Tensor:
    """A served input as the Python backend hands it (pb_utils.Tensor on the CPU)."""

    def __init__(self, array):
        self.array = array

    def is_cpu(self):
        return True

    def as_numpy(self):
        return self.array


def _fake_pb_utils():
    """What runtime/model.py's execute() uses of triton_python_backend_utils."""
    return types.SimpleNamespace(
        get_input_tensor_by_name=lambda request, name: request.get(name),
        Tensor=types.SimpleNamespace(
            from_dlpack=lambda name, t: (name, torch.utils.dlpack.from_dlpack(t).clone())),
        InferenceResponse=lambda output_tensors, error=None: types.SimpleNamespace(
            outputs=dict(output_tensors), error=error),
        TritonError=str)


class _RaisesOnFlag(torch.nn.Module):
    """Normalises x in place, then refuses a request whose first value is over 100."""

    def forward(self, x):
        flagged = bool((x[..., 0] > 100).any())
        x.sub_(1.0).mul_(2.0)
        if flagged:
            raise ValueError("flagged")
        return x


@pytest.mark.parametrize("batching", [False, True])
def test_the_served_model_never_runs_a_request_twice_on_its_own_buffer(monkeypatch, batching):
    # a request that raises makes execute() answer the others one by one: each of them must
    # be run on its inputs as sent, not on what an earlier pass changed in place
    monkeypatch.setattr(runtime, "pb_utils", _fake_pb_utils())
    served = runtime.TritonPythonModel()
    served.model, served.batching = _RaisesOnFlag(), batching
    served.input_names, served.output_names, served.output_dims = ["x"], ["y"], [[4] if batching else [1, 4]]
    served.device = torch.device("cpu")
    good = np.arange(4, dtype=np.float32).reshape(1, 4)
    bad = np.full((1, 4), 200, np.float32)
    responses = served.execute([{"x": _Tensor(good.copy())}, {"x": _Tensor(bad)}])
    assert responses[0].error is None and responses[1].error == "ValueError: flagged"
    np.testing.assert_array_equal(responses[0].outputs["y"].numpy(), (good - 1) * 2)


# ---------------------------------------------------------------------------------------------
# 2. a minimum length


def test_check_lengths_set_the_sample_lengths_and_the_probes_never_go_below():
    spec = ModelSpec(inputs=(parse_input("audio:float32:-1"),), check_lengths=(16000, 12345))
    cases = make_cases(spec)
    assert [c.inputs["audio"].shape for c in cases] == [(4, 16000), (3, 12345)]
    lengths = sizes.probe_lengths(spec)
    assert len(set(lengths)) == len(lengths) == 5 and lengths[-1] == max(lengths) > 16000
    assert all(n > 12345 and math.gcd(n, 16000) == math.gcd(n, 12345) == 1 for n in lengths)
    plan = sizes._plan(spec, cases)
    assert (1, 16000) in plan and (8, 12345) in plan
    assert min(n for _, n in plan) == 12345  # the shorter given, never below
    assert sizes.probe_lengths(ModelSpec()) == sizes.LENGTHS  # the defaults' own


def test_a_length_too_short_is_named_with_the_lengths_that_run(tmp_path):
    with pytest.raises(ExportError) as e:
        prepare(_spec("spectrogram", tmp_path))
    message, tip = e.value.message, e.value.tip
    assert message.startswith("the model fails on sample inputs (audio[4, 8]:float32):"
                              " RuntimeError: Argument #4: Padding size"), message
    assert message.endswith("it runs at length 256 and 511: length 8 of the -1 axes is too short"
                            " for the model.")
    assert "the lengths 8 and 5 (the default)" in tip
    assert "--check-lengths 511,256" in tip and "--check-lengths 16000,12345" in tip
    with pytest.raises(ExportError) as e:  # lengths given, still too short: they are named
        prepare(_spec("spectrogram", tmp_path, check_lengths=(100, 150)))
    assert "length 100 of the -1 axes is too short" in e.value.message
    assert "the lengths 100 and 150 (--check-lengths)" in e.value.tip


def test_with_check_lengths_the_audio_model_prepares_without_skipped_probes(tmp_path):
    ctx, notes = prepare(_spec("spectrogram", tmp_path, check_lengths=(16000, 12345)))
    assert not any("output sizes" in n for n in notes), notes
    assert [t.dims for t in ctx.spec.outputs] == [(-1, 8)]
    assert ctx.references["a"]["output"].shape == (4, 101, 8)


# ---------------------------------------------------------------------------------------------
# 3. autograd inside forward()


def test_a_model_taking_gradients_runs_under_no_grad_and_torchscript_is_refused(tmp_path):
    ctx, notes = prepare(_spec("forces", tmp_path))
    assert ctx.spec.forward_mode == runtime.NO_GRAD
    assert any(n.startswith("forward() takes gradients") for n in notes)
    x = ctx.cases[0].inputs["x"]
    want = user_cases.forces()(torch.from_numpy(x.copy())).detach().numpy()
    np.testing.assert_allclose(ctx.references["a"]["output"], want, rtol=1e-6, atol=1e-7)
    for export in (make_torchscript, compiled_package):
        with pytest.raises(ExportError) as e:
            export(ctx)
        assert "forward() computes gradients with autograd" in e.value.message
        assert "--variants python" in e.value.tip


def test_the_runtime_keeps_the_callers_no_grad_and_otherwise_enters_inference_mode():
    seen = []

    def model(x):
        seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        return x

    x = torch.ones(1)
    runtime.run_batch(model, [x])
    with runtime.forward_context(runtime.NO_GRAD):
        runtime.run_batch(model, [x])
    with runtime.forward_context(None):
        runtime.run_batch(model, [x])
    assert seen == [(True, False), (False, False), (True, False)]
    assert ModelSpec().forward_mode == runtime.INFERENCE_MODE  # the spec's default is the runtime's


# ---------------------------------------------------------------------------------------------
# 4. bfloat16


def test_a_bfloat16_output_is_inferred_as_bf16_with_float32_references(tmp_path):
    ctx, notes = prepare(_spec("bf16_head", tmp_path))
    assert [(t.name, t.dtype) for t in ctx.spec.outputs] == [("output", "bfloat16")]
    assert ctx.spec.atol == ctx.spec.rtol == 1e-2
    assert any("output is bfloat16 (served as TYPE_BF16" in n for n in notes)
    ref = ctx.references["a"]["output"]
    assert ref.dtype == np.float32
    assert np.array_equal(torch.from_numpy(ref).to(torch.bfloat16).float().numpy(), ref)
    wide = prepare(_spec("bf16_head", tmp_path, atol=0.5, rtol=0.5))[0].spec
    assert wide.atol == wide.rtol == 0.5  # wider tolerances stay as given


def test_to_numpy_carries_bfloat16_as_float32():
    t = torch.tensor([1.5, -2.25], dtype=torch.bfloat16)
    got = runtime.to_numpy(t)
    assert got.dtype == np.float32 and got.tolist() == [1.5, -2.25]
