import numpy as np
import pytest
import torch

from generator.repository.compare import compare
from generator.errors import ExportError
from generator.build.outputs import output_paths


def test_compare_reports_every_problem_at_once():
    ref = {"a": np.zeros((2, 3), np.float32), "b": np.ones(2, np.int64),
           "c": np.zeros(2, np.float32), "d": np.zeros(2, np.float32)}
    got = {"a": np.full((2, 3), 0.5, np.float32), "b": np.ones(2, np.int32),
           "c": np.zeros(3, np.float32), "e": np.zeros(1)}
    result = compare(got, ref, atol=1e-3, rtol=0)
    problems = {(m.output, m.problem) for m in result.mismatches}
    assert problems == {("a", "values"), ("b", "dtype"), ("c", "shape"), ("d", "missing"),
                        ("e", "extra")}
    assert result.structural and not result.ok
    a = next(m for m in result.mismatches if m.output == "a")
    assert a.max_abs == pytest.approx(0.5)


def test_compare_within_tolerance():
    ref = {"a": np.array([1.0, 2.0], np.float32)}
    assert compare({"a": ref["a"] + 1e-6}, ref, 1e-5, 0).ok
    assert not compare({"a": ref["a"] + 1e-3}, ref, 1e-5, 1e-5).ok


def test_output_names():
    t = torch.zeros(1)
    assert [p.name for p in output_paths(t)] == ["output"]
    assert [p.name for p in output_paths((t, t))] == ["output_0", "output_1"]
    assert [p.name for p in output_paths([t, (t, t)])] == ["output_0", "output_1_0", "output_1_1"]
    paths = output_paths({"logits": t, "hidden states": (t, t), "z": {"a": t}})
    assert [p.name for p in paths] == ["logits", "hidden_states_0", "hidden_states_1", "z_a"]
    assert paths[1].accessor() == "out['hidden states'][0]"


@pytest.mark.parametrize("value", [3, {"a": [[[torch.zeros(1)]]]}, (), {1: torch.zeros(1)}])
def test_output_refusals(value):
    with pytest.raises(ExportError):
        output_paths(value)
