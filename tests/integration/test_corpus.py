"""The CI slice of the coverage corpus (benchmarks/coverage.py): a timm CNN and a transformers
decoder, each built, served on the embedded tritonserver and checked over HTTP and gRPC at a batch
size and length its build never used, against the corpus' own copy of the model; and one of the
corpus' own cases (a decision for the whole batch from its rows' values), refused for its cause."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark

coverage = load_benchmark("coverage")
entries = coverage.entries

pytestmark = pytest.mark.integration
SLICE = ("timm/lcnet_050", "hf/gpt2", "cases/clamps_batch_when_one_is_large")
SERVED = SLICE[:2]


@pytest.fixture(scope="module")
def rows():
    chosen = [e for e in entries(["timm", "hf", "cases"]) if e.key in SLICE]
    assert [e.key for e in chosen] == list(SLICE)
    # python-aoti (an AOTInductor compile per model) is left to the benchmark and the compiled
    # variants' own tests: CI time
    variants = ("libtorch", "python", "python-ts")
    return {e.key: coverage.run_entry(e, timeout_s=600, variants=variants) for e in chosen}


@pytest.mark.parametrize("key", SERVED)
def test_the_python_variant_is_served_right(rows, key):
    cell = rows[key]["variants"]["python"]
    assert cell["outcome"] == coverage.SERVED_RIGHT, cell


@pytest.mark.parametrize("key", SLICE)
def test_no_variant_is_a_defect_and_every_refusal_names_a_known_cause(rows, key):
    for variant, cell in rows[key]["variants"].items():
        outcome = cell["outcome"]
        assert outcome in (coverage.SERVED_RIGHT, coverage.BUILT) \
            or outcome.removeprefix("refused: ") in coverage.CAUSES, (variant, cell)


def test_the_cnn_is_served_through_torchscript_too(rows):
    assert rows["timm/lcnet_050"]["variants"]["libtorch"]["outcome"] == coverage.BUILT
    assert rows["timm/lcnet_050"]["variants"]["python-ts"]["outcome"] == coverage.SERVED_RIGHT


def test_a_decision_for_the_whole_batch_is_refused_as_batch_coupled_in_every_variant(rows):
    cells = rows["cases/clamps_batch_when_one_is_large"]["variants"]
    assert {c["outcome"] for c in cells.values()} == {"refused: batch-coupled rows"}, cells
