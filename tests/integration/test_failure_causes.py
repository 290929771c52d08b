"""Builds of tests/fixtures/causes.py's models end to end: a failure says its true cause and
takes down only what it concerns (unit tests: tests/unit/test_failure_causes.py)."""

from __future__ import annotations

import json

from generator.cli import main
from tests.conftest import ROOT
from tests.fixtures import causes

SOURCE = ROOT / "tests" / "fixtures" / "causes.py"


def _build(out, factory: str, *extra: str) -> int:
    args = ["-q", "build", f"{SOURCE}:{factory}", "--out", str(out)]
    for spec in causes.INPUTS[factory]:
        args += ["--input", spec]
    return main(args + list(extra))


def test_a_cnn_that_channels_last_weights_break_builds_in_its_own_layout(tmp_path, capsys):
    # x.view(-1, N): the layout trial of the check worker (python) and of the TorchScript
    # export (libtorch) fails; each is skipped with a note, and both variants are written
    assert _build(tmp_path, "view_cnn", "--variants", "python,libtorch") == 0
    out = capsys.readouterr().out
    assert ("note (python): channels_last weights, tried for speed, fail on this model"
            " (RuntimeError: view size is not compatible") in out
    assert "note (libtorch): weights kept in contiguous layout" in out
    record = json.loads((tmp_path / "view_cnn_python" / "gen_repo.json").read_text())
    assert record["forward_pass"]["memory_format"] == "contiguous"
    assert list(record["forward_pass"]["timings_ms"]) == ["contiguous"]
    assert "memory_format" not in (tmp_path / "view_cnn_python" / "config.pbtxt").read_text()


def test_a_model_that_needs_the_build_process_gets_the_tip_for_that_not_packaging(tmp_path,
                                                                                 capsys):
    # forward() reads a global only the factory set: it runs in the build, and raises in the
    # check's fresh process -- a run-time dependence on the build process, not a packaging one
    from generator.build.check import LOAD_TIP

    assert _build(tmp_path, "needs_setup", "--variants", "python") == 1
    err = capsys.readouterr().err
    assert ("ERROR: variant python refused: fails to load/run in a fresh process: KeyError:"
            " 'scale' (at causes.py:") in err
    assert "TIP: The model ran on these inputs in the build but raises in a fresh process" in err
    assert LOAD_TIP not in err
