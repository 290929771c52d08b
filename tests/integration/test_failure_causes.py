"""Builds of tests/fixtures/causes.py's models end to end: a failure says its true cause and
takes down only what it concerns (unit tests: tests/unit/test_failure_causes.py)."""

from __future__ import annotations

import json

import pytest

from generator.cli import main
from generator.machine import cores
from generator.serve.verify import VerifyOptions, verify_repository
from tests.conftest import ROOT
from tests.fixtures import causes
from tests.integration.conftest import embedded_server, models_named

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


@pytest.mark.skipif(cores() < 2, reason="needs 2 cores: one thread count against another")
def test_a_thread_count_whose_answers_differ_is_never_served(tmp_path, capsys):
    # the references are made at this machine's cores; the worker times 1 .. share threads and
    # checks the answers of each: 1 thread answers 1e-3 off, so 2 are served
    assert _build(tmp_path, "rounds_by_threads", "--variants", "python") == 0
    out = capsys.readouterr().out
    assert ("note (python): contiguous layout at 1 thread(s) answers outside the tolerances: not"
            " used (output: values") in out
    config = (tmp_path / "rounds_by_threads_python" / "config.pbtxt").read_text()
    assert 'key: "measured_threads"' in config
    measured = config.split('key: "measured_threads"')[1].split('string_value: "')[1]
    assert measured.split('"')[0] in ("2", "share"), config
    with embedded_server(tmp_path, tmp_path / "logs",
                         models_named(tmp_path, "rounds_by_threads_python")) as (server, st):
        report = verify_repository(models_named(tmp_path, "rounds_by_threads_python"),
                                   server.http_url, server.grpc_url,
                                   VerifyOptions(requests=8, concurrency=2))
    assert report.results and not report.failures, report.results
    # two CPU instances: a share of one thread each, the only count timed, answers off
    assert _build(tmp_path / "two", "rounds_by_threads", "--variants", "python",
                  "--cpu-instances", "2") == 1
    out = capsys.readouterr()
    assert "answers outside the tolerances at every thread count and layout it may be served" \
        " with" in out.out + out.err
    assert "--threads N" in out.err and "--rtol" in out.err
    assert not (tmp_path / "two" / "rounds_by_threads_python").exists()


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
