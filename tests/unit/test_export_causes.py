"""torch.export's failures named by cause and line of the model's code, never its graph dump
(generator/variants/export_causes.py); the note that routes a model TorchScript refused."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from torch.export import Dim

from generator.build.diagnosis import export_route
from generator.build.pipeline import VariantResult
from generator.spec import ModelSpec, TensorSpec
from generator.variants.export_causes import export_failure, fixed_axes
from tests.fixtures import exports

FIXTURE = "tests/fixtures/exports.py"


def _export(model, *shape, dynamic=({1: Dim.AUTO},)):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return torch.export.export(model, (torch.randn(*shape),), dynamic_shapes=dynamic,
                                   strict=False)


def _refusal(model) -> str:
    with pytest.raises(Exception) as caught:
        _export(model, 4, 8)
    e = export_failure(caught.value)
    return f"{e.message}\nTIP: {e.tip}"


def test_a_branch_on_values_is_named_with_its_line():
    text = _refusal(exports.ValueBranch())
    assert "branches on, or sizes a tensor by, the values of its inputs" in text
    assert f"{FIXTURE}:14 `if x.sum() > 0:" in text
    assert "torch.cond" in text and "--variants python" in text
    assert "def forward" not in text and "TORCH_LOGS" not in text  # no exporter dump


def test_a_size_the_values_decide_is_named_with_its_line():
    text = _refusal(exports.ValueSize())
    assert "the values of its inputs" in text and f"{FIXTURE}:21" in text
    assert "torch._check" in text


def test_a_numpy_call_is_named_with_its_line():
    text = _refusal(exports.NumpyCall())
    assert "converts a tensor to NumPy" in text and f"{FIXTURE}:27" in text


def test_an_axis_asked_dynamic_that_the_code_fixes_is_found():
    program = _export(exports.SizeCheck(), 4, 8, dynamic=({0: Dim.AUTO, 1: Dim.AUTO},))
    assert fixed_axes(program, ({0: None, 1: None},), ["x"]) == ["x axis 1 (size 8)"]
    free = _export(exports.Exportable(), 4, 8, dynamic=({0: Dim.AUTO, 1: Dim.AUTO},))
    assert fixed_axes(free, ({0: None, 1: None},), ["x"]) == []


def _result(variant, status):
    return VariantResult(variant, f"m_{variant}", status, 1.0, "")


def test_a_torchscript_refusal_points_at_the_export_variants():
    spec = ModelSpec(inputs=(TensorSpec("x", "float32", (4,)),))
    assert export_route([_result("libtorch", "OK"), _result("python", "OK")], spec) is None
    note = export_route([_result("libtorch", "FAILED"), _result("python", "OK")], spec)
    assert "build --variants python-aoti" in note
    note = export_route([_result("libtorch", "FAILED"), _result("python-aoti", "OK")], spec)
    assert "the export-based python-aoti (torch.export + AOTInductor) took the model" in note
    note = export_route([_result("python-ts", "FAILED"), _result("python-aoti", "FAILED")], spec)
    assert "torch.export was refused too (python-aoti)" in note


def test_a_guard_that_fails_at_a_servable_size_is_found_and_written_readably():
    from tests.fixtures.batch_probes import SubsampleBy4
    from generator.variants.export_causes import readable, unmet_guard

    program = _export(SubsampleBy4(), 4, 8, 16, dynamic=({0: Dim.AUTO, 1: Dim.AUTO},))
    sizes = [(f"length {n}", {"x": (2, n, 16)}) for n in (8, 12, 5)]
    guard, label = unmet_guard(program, sizes)
    assert label == "length 5"  # 8 and 12 are multiples of 4, the slice's arithmetic holds
    assert readable(guard) == "(16*x.shape[1]) == (64*((3 + x.shape[1]) // 4))"
    assert unmet_guard(program, sizes[:2]) is None
    free = _export(exports.Exportable(), 4, 8, dynamic=({0: Dim.AUTO, 1: Dim.AUTO},))
    assert unmet_guard(free, [("length 5", {"x": (2, 5)})]) is None
