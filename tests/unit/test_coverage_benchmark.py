"""benchmarks/coverage.py's own logic: how a refusal's message maps to its cause, how outcomes
are counted, and that docs/coverage.md documents exactly the causes the benchmark knows."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT, load_benchmark

coverage = load_benchmark("coverage")


@pytest.mark.parametrize("message, cause", [
    ("a detector returning one dict per image: the number of boxes differs per image",
     "ragged output"),
    ("the model's rows depend on each other: row 2 differs when served alone", "batch-coupled rows"),
    ("row 0 of sample case b is answered differently alone than inside its batch of 3 (...), but"
     " the same inside a batch of 3 copies of itself: its answer changes with the batch size, not"
     " with the other rows. Kernels that round differently per batch size do this",
     "batch-size dependent"),
    ("forward() draws random numbers (torch.randn at m.py:4)", "randomness in forward"),
    ("torch.jit.script failed: Python builtin <built-in function iter> is currently not supported",
     "not scriptable or traceable"),
    ("torch.package could not pack the model: PicklingError", "not packageable"),
    ("the model needs inputs of at least 400 samples: length 8 is too short", "input too short"),
])
def test_a_refusal_maps_to_its_cause(message, cause):
    assert coverage.classify(message) == cause


def test_a_message_naming_no_known_cause_maps_to_none():
    assert coverage.classify("something went wrong") is None


def test_docs_list_exactly_the_causes_with_their_meaning():
    text = (ROOT / "docs" / "coverage.md").read_text()
    section = text.split("## Causes a refusal may name")[1]
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", section, re.MULTILINE)[1:])
    assert rows == {k: meaning for k, (meaning, _) in coverage.CAUSES.items()}


def test_the_summary_counts_outcomes_per_corpus():
    rows = [{"key": "timm/a", "corpus": "timm", "family": "a", "seconds": 3,
             "variants": {"libtorch": {"outcome": coverage.BUILT},
                          "python": {"outcome": coverage.SERVED_RIGHT},
                          "python-ts": {"outcome": coverage.SERVED_RIGHT}}},
            {"key": "timm/b", "corpus": "timm", "family": "b", "seconds": 5,
             "variants": {"libtorch": {"outcome": "refused: value-dependent branch"},
                          "python": {"outcome": "defect: wrong answer"},
                          "python-ts": {"outcome": "refused: value-dependent branch"}}}]
    text = coverage.summary(rows, [], [], 8)
    assert "| timm | 2 | 1 (50 %) | 0 | 1 | 1 | 0 | 1 | 0 |" in text
    assert "| python: defect: wrong answer | 1 |" in text
    assert "| libtorch: refused: value-dependent branch | 1 |" in text


def test_a_model_past_its_time_is_killed_with_the_server_it_started():
    """The child that times out started a server in a session of its own (as the embedded
    tritonserver is started): killing the child alone left the server and its stubs running."""
    import subprocess
    import sys

    import psutil

    script = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '120'],"
              " start_new_session=True); print(p.pid, flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    server = psutil.Process(int(child.stdout.readline()))
    coverage.kill_tree(child)
    assert child.returncode is not None
    server.wait(timeout=10)  # raises when still running
    assert not server.is_running()
