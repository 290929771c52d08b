"""Rows of a batch compared with the rows run alone on a batch whose every input differs from row
to row: a model that reads a per-request flag, threshold or id from row 0 and applies it to the
whole batch is refused on the eager model (pipeline.prepare), whatever the sample rows hold."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from generator.build import rows
from generator.build.pipeline import prepare
from generator.build.samples import Case, varied_rows
from generator.errors import ExportError
from generator.spec import ModelSpec, TensorSpec, build_spec, parse_input
from tests.conftest import ROOT
from tests.fixtures import batch_probes

SOURCE = ROOT / "tests" / "fixtures" / "batch_probes.py"
DEPEND = "rows of a batch depend on each other"


def _spec(factory: str, **values) -> ModelSpec:
    return build_spec({"source": f"{SOURCE}:{factory}",
                       "input": [parse_input(f) for f in batch_probes.INPUTS[factory]], **values})


def _same_rows(factory: str, path) -> str:
    """Example inputs of two identical rows (one request sent twice, a mask of ones), as a user
    may give them: the rows agree on every flag, id and threshold."""
    rng = np.random.default_rng(1)
    arrays = {}
    for t in _spec(factory).inputs:
        dims = [6 if d == -1 else d for d in t.dims]
        if t.dtype == "bool":
            row = np.ones(dims, bool)
        elif t.dtype.startswith("int"):
            row = np.full(dims, 2, np.int64)
        elif t.name == "t":
            row = np.full(dims, 0.1, np.float32)  # below the model's threshold in both rows
        else:
            row = rng.standard_normal(dims).astype(np.float32)
        arrays[t.name] = np.stack([row, row])
    np.savez(path, **arrays)
    return str(path)


def test_the_varied_rows_differ_in_every_input_within_its_range():
    spec = ModelSpec(name="m", inputs=(
        TensorSpec("x", "float32", (3,)), TensorSpec("t", "float32", ()),
        TensorSpec("ids", "int64", (-1,), 0, 5), TensorSpec("user", "int32", (), 10, 14),
        TensorSpec("mask", "bool", (-1,)), TensorSpec("flag", "bool", ()),
        TensorSpec("flags", "bool", (1,))))
    base = Case("a", 2, {"x": np.ones((2, 3), np.float32), "t": np.full(2, 0.1, np.float32),
                         "ids": np.full((2, 6), 3), "user": np.full(2, 11, np.int32),
                         "mask": np.ones((2, 6), bool), "flag": np.ones(2, bool),
                         "flags": np.ones((2, 1), bool)})
    probe = varied_rows(spec, base, 4)
    assert probe.batch == 4
    for t in spec.inputs:
        arr = probe.inputs[t.name]
        assert arr.dtype == base.inputs[t.name].dtype
        assert arr.shape == (4, *base.inputs[t.name].shape[1:])
        for i in range(4):
            for j in range(i + 1, 4 if arr[0].size > 2 else min(4, i + 2)):  # a flag: two values
                assert not np.array_equal(arr[i], arr[j]), (t.name, i, j)
    assert (probe.inputs["x"][0] < 0).all() and (probe.inputs["x"][-1] > 2).all()
    assert probe.inputs["t"][0] < -2 and probe.inputs["t"][-1] > 2
    assert probe.inputs["flag"].tolist() == [True, False, True, False]
    assert probe.inputs["flags"][:, 0].tolist() == [True, False, True, False]
    assert probe.inputs["mask"].any(1).all() and (~probe.inputs["mask"]).any(1).all()
    assert ((probe.inputs["ids"] >= 0) & (probe.inputs["ids"] < 5)).all()
    assert sorted(probe.inputs["user"].tolist()) == [10, 11, 12, 13]
    assert (probe.inputs["ids"][1:] != probe.inputs["ids"][:-1]).all()  # every element


@pytest.mark.parametrize("factory", ["flag_from_row_zero", "flag_column_from_row_zero"])
def test_a_flag_read_from_row_zero_is_refused_on_random_samples(factory):
    with pytest.raises(ExportError, match=DEPEND) as refused:
        prepare(_spec(factory))
    assert "a batch whose rows differ in every input" in refused.value.message
    assert "if bool(flag[0])" in refused.value.message
    assert refused.value.tip.startswith("Build with --max-batch-size 0")


@pytest.mark.parametrize("factory", batch_probes.ROW_ZERO)
def test_row_zero_values_are_refused_when_the_example_rows_are_all_the_same(factory, tmp_path):
    spec = _spec(factory, example_inputs=_same_rows(factory, tmp_path / "same.npz"))
    with pytest.raises(ExportError, match=DEPEND + r": row [1-3] of a batch whose rows differ"
                                                   r" in every input"):
        prepare(spec)


def test_the_refusal_says_how_the_rows_differed():
    with pytest.raises(ExportError) as refused:
        prepare(_spec("flag_from_row_zero"))
    assert ("(x shifted from row to row; flag [True, False, True, False]) run alone is answered"
            " differently than inside its batch of 4") in refused.value.message


@pytest.mark.parametrize("example", [False, True])
def test_each_rows_own_flag_still_builds(example, tmp_path):
    values = {"example_inputs": _same_rows("per_row_flag", tmp_path / "same.npz")} if example \
        else {}
    ctx, notes = prepare(_spec("per_row_flag", **values))
    assert [t.dims for t in ctx.spec.outputs] == [(5,)] and notes == []


def test_the_varied_batch_is_smaller_than_a_small_max_batch_size(tmp_path):
    spec = _spec("flag_from_row_zero", max_batch_size=2,
                 example_inputs=_same_rows("flag_from_row_zero", tmp_path / "same.npz"))
    with pytest.raises(ExportError, match=DEPEND + r": row 1 of a batch whose rows differ in"
                                                   r" every input \(x shifted from row to row;"
                                                   r" flag \[True, False\]\)"):
        prepare(spec)
    prepare(spec.with_(max_batch_size=1, example_inputs=None))  # nothing to mix


def test_a_model_that_fails_on_the_varied_rows_gets_a_note_not_a_refusal():
    spec = ModelSpec(name="m", inputs=(TensorSpec("x", "float32", (8,)),))
    rng = np.random.default_rng(0)
    cases = [Case("a", 4, {"x": rng.standard_normal((4, 8)).astype(np.float32)}),
             Case("b", 3, {"x": rng.standard_normal((3, 8)).astype(np.float32)})]

    def run(case):
        x = torch.from_numpy(case.inputs["x"])
        if case.name.endswith("varied rows"):  # e.g. values outside what the model accepts
            try:
                raise ValueError("inputs must lie in [-2, 2]")
            except ValueError as e:
                raise ExportError("the model fails on sample inputs (x[4, 8]:float32): ...") from e
        return [x * 2]

    notes = rows.check_rows_independent(run, {c.name: run(c) for c in cases}, cases, ["y"], spec)
    assert notes == ["rows run alone were compared with the sample cases only: the model fails on a"
                     " batch whose rows differ in every input (x shifted from row to row):"
                     " ValueError: inputs must lie in [-2, 2]"]


def test_an_answer_that_changes_with_the_batch_size_alone_is_named_so_with_its_route():
    """Not 'rows depend on each other': a batch of copies of the row answers it as its batch
    did. At the size of rounding the tip gives the --rtol that serves it."""
    with pytest.raises(ExportError) as refused:
        prepare(_spec("rounds_by_batch_size"))
    message, tip = refused.value.message, refused.value.tip
    assert DEPEND not in message
    assert "but the same inside a batch of 3 copies of itself: its answer changes with the batch" \
        " size, not with the other rows" in message
    assert "max rel err 3.0" in message and "x.shape[0]" in message
    assert tip.startswith("It is the size of float rounding (at most 3.0e-04 of a value here;")
    assert "build with --rtol 0.01 (ten times that" in tip and "--max-batch-size 0" in tip
    prepare(_spec("rounds_by_batch_size", rtol=1e-2))  # the route works
    with pytest.raises(ExportError) as scaled:
        prepare(_spec("scales_by_batch_size"))
    assert "changes with the batch size, not with the other rows" in scaled.value.message
    assert scaled.value.tip.startswith("Make the answer independent of the batch size, or build"
                                       " with --max-batch-size 0")


@pytest.mark.parametrize("factory", batch_probes.ROW_ZERO)
def test_rows_that_read_another_row_are_still_named_as_depending_on_each_other(factory):
    with pytest.raises(ExportError, match=DEPEND):
        prepare(_spec(factory))


def test_every_sample_case_has_its_rows_compared_alone():
    """Answers that change with the batch size only at large values and a batch of 4 (as a deep
    random-init net's rounding did: fcn_resnet101 passed at batches of 3 and 1, and then served
    row 0 of its batch-of-4 sample differently alone): sample case b's rows and the varied batch
    (made from case b) agree alone and together; case a's do not, and it is refused as such."""
    spec = ModelSpec(name="m", inputs=(TensorSpec("x", "float32", (3,)),), max_batch_size=8)

    def run(case):
        x = torch.from_numpy(case.inputs["x"])
        shift = 0.5 * ((x[:, :1] > 10) & (x.shape[0] == 4))
        return [x * 2.0 + shift]

    rng = np.random.default_rng(0)
    a = Case("a", 4, {"x": (rng.standard_normal((4, 3)) + 20).astype(np.float32)})
    b = Case("b", 3, {"x": rng.standard_normal((3, 3)).astype(np.float32)})
    batched = {c.name: run(c) for c in (a, b)}
    assert rows.check_rows_independent(run, batched, [b], ["y"], spec) == []
    with pytest.raises(ExportError, match="row 0 of sample case a is answered differently alone"
                                          " than inside its batch of 4"):
        rows.check_rows_independent(run, batched, [a, b], ["y"], spec)


@pytest.mark.parametrize("factory", batch_probes.WHOLE_BATCH)
def test_one_decision_for_the_whole_batch_is_refused(factory):
    """Random rows and rows shifted by a few spreads all fall on one side of the model's limit;
    rows at an end of the inputs' ranges beside a sample row do not."""
    with pytest.raises(ExportError, match=DEPEND) as refused:
        prepare(_spec(factory))
    message = refused.value.message
    assert re.search(r"rows whose every input lies at the (low|high) end of its range \(x = ",
                     message), message
    assert re.search(r"(row 0 of sample case \w+ is answered differently beside rows|are answered"
                     r" differently beside row 0 of sample case \w+)", message), message
    assert "decides for the whole batch from the values of all its rows" in message
    assert refused.value.tip.startswith("Build with --max-batch-size 0")
    prepare(_spec(factory, max_batch_size=0, input=_unbatched(factory)))  # the route works


def _unbatched(factory: str) -> list:
    """The factory's inputs with the batch axis in their dims (--max-batch-size 0)."""
    found = []
    for text in batch_probes.INPUTS[factory]:
        name, dtype, dims = text.split(":")
        found.append(parse_input(f"{name}:{dtype}:-1x{dims}"))
    return found


def test_the_same_decision_per_row_still_builds():
    ctx, notes = prepare(_spec("clamps_each_large_row"))
    assert [t.dims for t in ctx.spec.outputs] == [(5,)] and notes == []
