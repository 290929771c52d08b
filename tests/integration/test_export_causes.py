"""gen-repo build of models torch.export cannot take whole: the refusal names the cause and the
line, nothing of the exporter's dump reaches the terminal, and the other variants are built."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.fixtures import exports

pytestmark = pytest.mark.integration
SOURCE = ROOT / "tests" / "fixtures" / "exports.py"


def _build(run_cli, tmp_path, factory, *extra):
    inputs = [a for spec in exports.INPUTS[factory] for a in ("--input", spec)]
    return run_cli("build", f"{SOURCE}:{factory}", *inputs, "--out", tmp_path / "r",
                   "--name", factory, *extra)


def test_a_value_branch_is_refused_by_its_line_and_python_is_built(tmp_path, run_cli):
    code, out, err = _build(run_cli, tmp_path, "value_branch", "--max-batch-size", "0",
                            "--variants", "python,python-aoti")
    assert code == 3, out + err
    assert "exports.py:14 `if x.sum() > 0:" in err
    assert "def forward" not in out + err and "GuardOnDataDependentSymNode:" not in out + err
    assert (tmp_path / "r" / "value_branch_python" / "config.pbtxt").is_file()
    assert not (tmp_path / "r" / "value_branch_python_aoti").exists()


def test_an_axis_the_code_fixes_is_refused_before_any_compile(tmp_path, run_cli):
    code, out, err = _build(run_cli, tmp_path, "size_check", "--variants", "python-aoti")
    assert code == 1, out + err
    assert "torch.export fixed x axis 1 (size 8) to the sample's size" in err
    assert "declare it fixed in --input" in err


def test_a_guard_on_the_length_is_refused_before_any_compile(tmp_path, run_cli):
    """A strided slice whose graph holds only at lengths that are multiples of 4: the compiled
    package would answer other lengths wrongly (it does not check the guard)."""
    code, out, err = run_cli("build", f"{ROOT}/tests/fixtures/batch_probes.py:subsample_by_4",
                             "--input", "x:float32:-1x16", "--variants", "python,python-aoti",
                             "--out", tmp_path / "r")
    assert code == 3, out + err
    assert "torch.export made its graph on a condition on the input sizes" in err
    assert "`((3 + x.shape[1]) // 4) != 1`" in err
    assert (tmp_path / "r" / "subsample_by_4_python" / "config.pbtxt").is_file()
