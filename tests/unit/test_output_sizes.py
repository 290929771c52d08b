"""Output dims read at batch 1, max_batch_size and lengths 1, 2, 7, 13, 32 besides the two sample
cases (pipeline.prepare on the eager model): an axis is fixed only if it has one size at every
point, an output that loses its batch axis (squeeze()) is refused with the cause, and a length
the model cannot take is a note, not a refusal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generator.build import sizes
from generator.build.outputs import output_paths
from generator.build.pipeline import prepare
from generator.build.samples import make_cases, value_ends
from generator.errors import ExportError
from generator.spec import ModelSpec, TensorSpec, build_spec, parse_input
from tests.conftest import ROOT
from tests.fixtures import batch_probes

SOURCE = ROOT / "tests" / "fixtures" / "batch_probes.py"


def _spec(factory: str, *inputs: str, **values) -> ModelSpec:
    flags = inputs or batch_probes.INPUTS[factory]
    return build_spec({"source": f"{SOURCE}:{factory}", "input": [parse_input(f) for f in flags],
                       **values})


def _fits(shape, dims, batching=True) -> bool:
    shape = shape[1:] if batching else shape
    return len(shape) == len(dims) and all(d in (-1, n) for n, d in zip(shape, dims))


@pytest.mark.parametrize("factory, dims", [("subsample_by_4", (-1, 64)), ("top_k_of_n", (-1,)),
                                           ("pool_by_3", (-1, 8))])
def test_declared_dims_hold_at_lengths_never_probed(factory, dims):
    ctx, _ = prepare(_spec(factory))
    assert ctx.spec.outputs[0].dims == dims
    model = getattr(batch_probes, factory)().eval()
    width = (16,) if factory != "top_k_of_n" else ()
    for batch in (1, 5, 8):
        for length in (3, 4, 9, 11, 64):
            with torch.inference_mode():
                out = model(torch.randn(batch, length, *width))
            assert _fits(tuple(out.shape), dims), (batch, length, tuple(out.shape))


def test_the_ceil_t_over_4_front_end_from_the_issue():
    """2 frames at lengths 8 and 5: the build declared dims [2, 64], and at T=9 the server
    answered [1, 3, 64] against its own metadata [1, 2, 64]."""
    ctx, notes = prepare(_spec("subsample_by_4"))
    assert ctx.spec.outputs[0].dims == (-1, 64) and notes == []
    ctx, _ = prepare(_spec("subsample_by_4", "x:float32:-1x-1x16", max_batch_size=0))
    assert ctx.spec.outputs[0].dims == (-1, -1, 64)


def test_an_output_that_squeezes_away_the_batch_axis_is_refused_with_the_cause():
    with pytest.raises(ExportError) as refused:
        prepare(_spec("squeezed"))
    assert refused.value.message.startswith(
        "output 'output' loses its batch axis for a batch of one row: shape [] for a batch of 1,"
        " [4] for sample case a (a batch of 4). Triton splits a merged batch's outputs by their"
        " first axis")
    assert refused.value.tip.startswith("squeeze() with no dim drops the batch axis when a batch"
                                        " has one row: use squeeze(-1)")
    ctx, _ = prepare(_spec("squeezed", max_batch_size=0))  # no batch axis to lose: built
    assert ctx.spec.outputs[0].dims == (1,)  # its 0-d answer, served as one element


def test_an_output_that_squeezes_away_a_length_of_one_is_refused_with_the_cause():
    with pytest.raises(ExportError) as refused:
        prepare(_spec("squeezed_length"))
    assert refused.value.message.startswith(
        "output 'output' loses an axis at length 1: shape [2, 2] for a batch of 2, length 1,"
        " [4, 8, 2] for sample case a (a batch of 4).")
    assert "squeeze only an axis that is 1 at every length" in refused.value.tip


def test_an_output_that_stops_following_the_batch_size_is_refused():
    with pytest.raises(ExportError, match=r"output 'output' has shape \(4, 8\) for a batch of 8"
                                          r" \(a batch of 8\): its first axis is not the batch"):
        prepare(_spec("at_most_4_rows"))
    prepare(_spec("at_most_4_rows", max_batch_size=4))  # never more than 4 rows: fine


def test_lengths_the_model_cannot_take_are_noted_not_refused():
    ctx, notes = prepare(_spec("pool_by_3"))
    assert ctx.spec.outputs[0].dims == (-1, 8)
    assert len(notes) == 1 and notes[0].startswith(
        "output sizes: the model fails on a batch of 2, length 1 (RuntimeError: ")
    assert "on a batch of 2, length 2 (RuntimeError: " in notes[0]
    assert notes[0].endswith("those points were not probed, and requests like them would fail on"
                             " the server too")


@pytest.mark.parametrize("factory", ["kept_below_50", "none_above_1e6"])
def test_a_size_the_values_decide_is_not_declared_fixed(factory):
    """8 elements kept of every random input (0 of every input for none_above_1e6): the size is
    the same at every random point, and only the ends of the input range (or the rule that an
    empty axis is never fixed) show that the values decide it."""
    ctx, notes = prepare(_spec(factory, max_batch_size=0))
    assert ctx.spec.outputs[0].dims == (-1,) and notes == []
    model = getattr(batch_probes, factory)().eval()
    for x in (torch.randn(8), torch.full((8,), 400.0), torch.tensor([1e7] * 3 + [0.0] * 5)):
        assert _fits(tuple(model(x).shape), (-1,), batching=False)


def test_the_ends_of_each_input_range():
    spec = ModelSpec(name="m", inputs=(TensorSpec("x", "float32", (3,)),
                                       TensorSpec("ids", "int64", (2,), 5, 9),
                                       TensorSpec("flag", "bool", ())), max_batch_size=4)
    base = make_cases(spec)[0]
    low, high = value_ends(spec, base)
    assert low.batch == high.batch == 1
    assert (low.inputs["x"] == 0).all() and (low.inputs["ids"] == 5).all() \
        and not low.inputs["flag"].any()
    top = 100 * max(float(abs(base.inputs["x"]).max()), 1.0)
    assert np.allclose(high.inputs["x"], top) and (high.inputs["ids"] == 8).all() \
        and high.inputs["flag"].all()
    assert low.inputs["x"].shape == (1, 3) and high.inputs["ids"].dtype == base.inputs["ids"].dtype
    half = value_ends(spec.with_(inputs=(TensorSpec("x", "float16", (3,)),)),
                      make_cases(spec.with_(inputs=(TensorSpec("x", "float16", (3,)),)))[0])[1]
    assert np.isfinite(half.inputs["x"]).all()


def test_the_points_probed():
    dynamic = _spec("subsample_by_4")
    cases = make_cases(dynamic)
    assert sizes._plan(dynamic, cases) == [(1, 8), (2, 1), (2, 7), (2, 13), (2, 2), (8, 5),
                                           (2, 32)]
    unbatched = dynamic.with_(max_batch_size=0)
    assert sizes._plan(unbatched, make_cases(unbatched)) == [(0, 1), (0, 7), (0, 13), (0, 2),
                                                             (0, 32)]
    fixed = _spec("squeezed")
    assert sizes._plan(fixed, make_cases(fixed)) == [(1, None), (8, None)]
    small = fixed.with_(max_batch_size=4)  # sample batches 4 and 3
    assert sizes._plan(small, make_cases(small)) == [(1, None)]


def test_past_the_budget_points_are_skipped_with_a_note():
    spec = _spec("top_k_of_n")
    model = batch_probes.top_k_of_n().eval()
    cases = make_cases(spec)

    def run(case):
        with torch.inference_mode():
            return [model(torch.from_numpy(case.inputs["x"]))]

    raw = {c.name: run(c)[0] for c in cases}
    paths = output_paths(raw["a"])
    outputs, notes = sizes.output_specs(run, lambda f: f, spec, cases, raw, paths, budget_s=0.0)
    assert outputs[0].dims == (-1,)  # batch 1, lengths 1 and 7 are always probed
    assert notes == ["output sizes were not probed at a batch of 2, length 13; a batch of 2,"
                     " length 2; a batch of 8, length 5; a batch of 2, length 32 (the forward"
                     " passes would take more than 0 s): an axis whose size was the same at every"
                     " point probed is declared fixed"]


def test_fixed_sizes_stay_fixed():
    spec = ModelSpec(name="m", inputs=(TensorSpec("x", "float32", (-1, 3)),))
    cases = make_cases(spec)

    def forward(x):  # [B, T, 3] -> [B, 5] and [B, T, 2]
        return {"pooled": x.mean(1) @ torch.ones(3, 5), "seq": x[..., :2]}

    def run(case):
        out = forward(torch.from_numpy(case.inputs["x"]))
        return [out["pooled"], out["seq"]]

    raw = {c.name: forward(torch.from_numpy(c.inputs["x"])) for c in cases}
    outputs, notes = sizes.output_specs(run, lambda f: f, spec, cases, raw,
                                        output_paths(raw["a"]))
    assert [(t.name, t.dims) for t in outputs] == [("pooled", (5,)), ("seq", (-1, 2))]
    assert notes == []
