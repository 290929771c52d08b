"""What the batch means to a model, end to end on the real embedded tritonserver: per-row scalars
(served [B, 1], the model gets [B]), scalars without batching, an output length that neither sample
case had, rows that depend on each other, and detectors that return one result per image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tritonclient.utils import InferenceServerException

from generator.bench import ceiling
from generator.bench.ceiling import _input_entry
from generator.repository import layout, manifest, staging
from generator.cli import main
from generator.runtime import model as runtime
from generator.serve.protocols import PROTOCOLS
from generator.serve.verify import OK, VerifyOptions, verify_repository
from tests.conftest import ROOT, fixture_source
from tests.fixtures import batch_probes
from tests.fixtures import models as fixtures
from tests.integration.conftest import (assert_verified, build_fixture, copy_model, edit_config,
                                        embedded_server, infer, metadata, models_named)

pytestmark = pytest.mark.integration

ROWS = "row_scalars"  # x: [B, 8], t: one value per row -> logits [B, 5], label/score/flag [B]
UNBATCHED = "row_scalars_nobatch"  # the same with --max-batch-size 0: t and label/... are 0-d
CENTRED = "batch_centred_nobatch"  # centres over its batch; only servable without batching
RANKER = "ranker"  # the README's examples/ranker (its score is one value per row)
SUBSAMPLED = "subsample_by_4"  # ceil(T/4) frames: 2 at both sample lengths, 8 and 5
KEPT = "kept_below_50"  # x[|x| < 50]: 8 elements of every random input, the values decide
COPIES = "copies_above_1e6"  # an expanded view of no rows at random inputs: strides (1, 0)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("rows") / "repo"
    build_fixture(repo, ROWS, "libtorch,python,python-compile")
    build_fixture(repo, ROWS, "python", "--max-batch-size", "0", "--name", UNBATCHED)
    assert main(["-q", "build", fixture_source("batch_centred"), "--input", "x:float32:-1x6",
                 "--max-batch-size", "0", "--name", CENTRED, "--variants", "python",
                 "--out", str(repo)]) == 0
    assert main(["-q", "build", f"{ROOT}/examples/ranker/net.py:make_model",  # its docstring's
                 "--input", "tokens:int64:-1:0..1000", "--input", "mask:bool:-1",  # command
                 "--name", RANKER, "--variants", "python", "--out", str(repo)]) == 0
    assert main(["-q", "build", f"{ROOT}/tests/fixtures/batch_probes.py:{SUBSAMPLED}",
                 "--input", "x:float32:-1x16", "--variants", "python", "--out", str(repo)]) == 0
    for factory in (KEPT, COPIES):
        assert main(["-q", "build", f"{ROOT}/tests/fixtures/batch_probes.py:{factory}",
                     "--input", "x:float32:8", "--max-batch-size", "0", "--variants", "python",
                     "--out", str(repo)]) == 0
    return repo


OLD_RANKER = "old_ranker"
FIXED_KEPT = "kept_declared_fixed"  # KEPT's config as a build blind to the values wrote it
SERVED = [f"{ROWS}_python", f"{ROWS}_python_compile", f"{UNBATCHED}_python", f"{CENTRED}_python",
          f"{RANKER}_python", f"{SUBSAMPLED}_python", f"{KEPT}_python", f"{COPIES}_python"]


def _without_reshape(repo, source: str, name: str) -> None:
    """A copy of ``source`` as gen-repo wrote it before per-row scalars had a reshape: the
    config has dims [1] alone, the references hold the score as [B], and its model.py answers
    whatever shape the model returns (no check against the config)."""
    dst = copy_model(repo, source, name)
    runtime_file = dst / "1" / "model.py"
    text = runtime_file.read_text()
    assert text.count("wrong = shape_contradiction(") == 1
    runtime_file.write_text(text.replace("wrong = shape_contradiction(",
                                         "wrong = None and shape_contradiction("))
    manifest.update(dst, "1/model.py")

    def without_empty_reshapes(config):
        for t in [*config.input, *config.output]:
            if t.HasField("reshape") and not t.reshape.shape:
                t.ClearField("reshape")

    edit_config(dst, without_empty_reshapes)
    for case in ("a", "b"):
        path = dst / layout.case_files(case)[1]
        arrays = dict(np.load(path))
        arrays["score"] = arrays["score"][:, 0]
        np.savez(path, **arrays)
    manifest.update(dst, *(layout.case_files(case)[1] for case in ("a", "b")))


@pytest.fixture(scope="module")
def served(repo, tmp_path_factory):
    _without_reshape(repo, f"{RANKER}_python", OLD_RANKER)

    def eight_elements(config):
        config.output[0].dims[:] = [8]

    edit_config(copy_model(repo, f"{KEPT}_python", FIXED_KEPT), eight_elements)
    with embedded_server(repo, tmp_path_factory.mktemp("logs"),
                         models=models_named(repo, *SERVED, OLD_RANKER, FIXED_KEPT)) \
            as (server, statuses):
        assert all(s.state == "READY" for s in statuses.values()), statuses
        yield server


def _eager(factory: str):
    return getattr(fixtures, factory)().eval()


# ---------------------------------------------------------------------------------------------
# per-row scalars


def test_config_and_stored_arrays_serve_a_per_row_scalar_as_one_element_per_row(repo):
    for variant in ("libtorch", "python"):
        built = layout.BuiltModel(repo / f"{ROWS}_{variant}")
        t = next(i for i in built.config.input if i.name == "t")
        assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == []
        outs = {o.name: o for o in built.config.output}
        for name in ("label", "score", "flag"):
            assert list(outs[name].dims) == [1] and outs[name].HasField("reshape")
        assert not outs["logits"].HasField("reshape")
        for case, inputs, reference in built.cases():  # as clients send and receive them
            rows = inputs["x"].shape[0]
            assert inputs["t"].shape == (rows, 1)
            assert reference["label"].shape == (rows, 1) and reference["logits"].shape == (rows, 5)
    without = layout.BuiltModel(repo / f"{UNBATCHED}_python")
    assert not any(i.HasField("reshape") for i in without.config.input)  # Triton refuses it
    assert [list(i.dims) for i in without.config.input] == [[8], [1]]
    assert without.samples()["t"].shape == (1,) and without.reference()["label"].shape == (1,)


def test_the_model_gets_one_value_per_row_from_the_compile_warm_up_and_the_ceiling(repo):
    built = layout.BuiltModel(repo / f"{ROWS}_python_compile")
    inputs = [_input_entry(i) for i in built.config.input]
    x, t = runtime._warm_up_inputs(built.path / layout.VERSION, inputs, 3)
    assert tuple(x.shape) == (3, 8) and tuple(t.shape) == (3,)
    x, t = ceiling._rows(built.samples(), inputs, True, 4)
    assert tuple(x.shape) == (4, 8) and tuple(t.shape) == (4,)
    record = json.loads((built.path / layout.RECORD).read_text())
    assert any("warmed up for batch sizes [1, 2, 8]" in n for n in record["notes"])


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_a_per_row_scalar_is_sent_and_answered_as_b_by_1(served, kind):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    t = np.array([[0.7], [2.0], [-1.5]], np.float32)
    got = infer(kind, served, f"{ROWS}_python", [("x", x, "FP32"), ("t", t, "FP32")],
                 ["logits", "label", "score", "flag"])
    with torch.inference_mode():
        want = _eager(ROWS)(torch.from_numpy(x), torch.from_numpy(t[:, 0]))
    assert got["logits"].shape == (3, 5)
    np.testing.assert_allclose(got["logits"], want["logits"].numpy(), rtol=1e-5, atol=1e-6)
    assert got["label"].shape == (3, 1) and got["label"].dtype == np.int64
    assert (got["label"][:, 0] == want["label"].numpy()).all()
    np.testing.assert_allclose(got["score"][:, 0], want["score"].numpy(), rtol=1e-5, atol=1e-6)
    assert got["flag"].dtype == np.bool_ and (got["flag"][:, 0] == want["flag"].numpy()).all()
    with pytest.raises(InferenceServerException, match=r"unexpected shape for input 't'.*"
                                                       r"Expected \[-1,1\], got \[3\]"):
        infer(kind, served, f"{ROWS}_python", [("x", x, "FP32"), ("t", t[:, 0], "FP32")],
               ["label"])


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_without_batching_a_scalar_is_sent_and_answered_as_one_element(served, kind):
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    got = infer(kind, served, f"{UNBATCHED}_python",
                 [("x", x, "FP32"), ("t", np.array([0.8], np.float32), "FP32")],
                 ["logits", "label", "score"])
    with torch.inference_mode():  # the model itself takes and returns 0-d values here
        want = _eager(ROWS)(torch.from_numpy(x), torch.tensor(0.8))
    assert want["label"].dim() == 0
    assert got["label"].shape == (1,) and got["label"][0] == want["label"].item()
    np.testing.assert_allclose(got["score"], [want["score"].item()], rtol=1e-5, atol=1e-6)
    assert got["logits"].shape == (5,)


def test_verify_passes_over_http_and_grpc_with_bad_requests(repo, served):
    report = verify_repository(models_named(repo, *SERVED), served.http_url, served.grpc_url,
                               VerifyOptions(requests=24, concurrency=8, bad_requests=True))
    assert {(r.model, r.protocol) for r in report.results} == \
        {(n, p) for n in SERVED for p in ("HTTP", "gRPC")}
    for r in report.results:
        assert r.status == OK, f"{r.model} {r.protocol}: {r.detail}"
        assert "metadata ok" in r.detail
    merged = report.result(f"{ROWS}_python", "grpc").facts
    assert merged["executions"] < merged["requests"]  # the batcher merged [b, 1] requests


def test_verify_fails_a_model_that_answers_b_where_its_metadata_says_b_by_1(repo, served):
    report = verify_repository(models_named(repo, OLD_RANKER), served.http_url, served.grpc_url,
                               VerifyOptions(requests=0))
    for r in report.results:
        assert r.status == "FAIL"
        assert ("score: shape — the server answered [1], its metadata declares [-1, 1]"
                in r.detail), r.detail


def test_bench_sends_per_row_scalars_as_one_element_rows(repo, tmp_path, run_cli):
    """perf_analyzer's input data and the in-process ceiling take the stored samples."""
    from generator.bench.results import Results

    out = tmp_path / "bench"
    code, _, err = run_cli("bench", "--repo", repo, "--models", f"{ROWS}_python", "--out", out,
                           "--concurrency", "2", "--batch-size", "1,4", "--instances", "1",
                           "--ceiling-seconds", "0.2", "--measurement-interval", "300",
                           "--stability", "1000", "--python-ts", "no", "--no-floor")
    assert code == 0, err
    data = json.loads((out / "inputs" / f"{ROWS}_python.json").read_text())["data"][0]
    assert data["t"]["shape"] == [1] and data["x"]["shape"] == [8]
    results = Results.load(out / "results.json")
    points = [p for p in results.points if p.model == f"{ROWS}_python"]
    assert {p.batch_size for p in points} == {1, 4}
    assert all(p.status in ("ok", "unstable") and p.throughput > 0 for p in points), points
    assert results.ceiling and all(c["throughput"] > 0 for c in results.ceiling)


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_an_output_length_no_sample_had_is_served_as_the_metadata_declares(served, kind):
    """The build read the output's sizes at more lengths than 8 and 5 (2 frames at both), so
    it declares the frames dynamic, and the server's answer at T=9 (3 frames) fits its own
    metadata."""
    meta = metadata(kind, served, f"{SUBSAMPLED}_python")
    assert meta["outputs"] == [("output", "FP32", [-1, -1, 64])]
    x = np.random.default_rng(4).standard_normal((1, 9, 16)).astype(np.float32)
    got = infer(kind, served, f"{SUBSAMPLED}_python", [("x", x, "FP32")], ["output"])
    with torch.inference_mode():
        want = batch_probes.subsample_by_4().eval()(torch.from_numpy(x)).numpy()
    assert got["output"].shape == want.shape == (1, 3, 64)
    np.testing.assert_allclose(got["output"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_a_size_the_values_decide_is_declared_and_served_variable(served, kind):
    """Every random input keeps all 8 elements; the build's inputs at the ends of the range
    keep none, so the config declares the count variable and the server answers 6 of them."""
    meta = metadata(kind, served, f"{KEPT}_python")
    assert meta["outputs"] == [("output", "FP32", [-1])]
    x = np.array([1, 2, 3, 100, 200, 5, 6, 7], np.float32)
    got = infer(kind, served, f"{KEPT}_python", [("x", x, "FP32")], ["output"])
    np.testing.assert_array_equal(got["output"], [2, 4, 6, 10, 12, 14])
    # none kept (a detector that finds nothing): an empty answer, still FP32 (tritonclient's
    # HTTP result reads an empty output as float64 whatever its datatype)
    got = infer(kind, served, f"{KEPT}_python", [("x", np.full(8, 100, np.float32), "FP32")],
                ["output"])
    assert got["output"].shape == (0,) and got["output"].dtype == np.float32


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_an_empty_view_torch_calls_contiguous_is_answered(served, kind):
    """No element above 1e6: a [0, 3] view with strides (1, 0), which the Python backend refused
    as DLPack ("not contiguous") before the runtime gave it C-order strides."""
    x = np.arange(8, dtype=np.float32)
    got = infer(kind, served, f"{COPIES}_python", [("x", x, "FP32")], ["output"])["output"]
    assert got.shape == (0, 3) and got.dtype == np.float32
    x[[2, 5]] = [2e6, 3e6]
    got = infer(kind, served, f"{COPIES}_python", [("x", x, "FP32")], ["output"])["output"]
    np.testing.assert_array_equal(got, [[2e6] * 3, [3e6] * 3])


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_an_answer_that_contradicts_the_config_is_an_error_not_a_lie(served, kind):
    """A config that declares the count fixed (8, as a build that never varied the values
    would): 8 kept is answered; 6 kept is an error naming the contradiction and the route, not
    a [6] answer against metadata [8]."""
    x = np.arange(8, dtype=np.float32)
    got = infer(kind, served, FIXED_KEPT, [("x", x, "FP32")], ["output"])
    np.testing.assert_array_equal(got["output"], 2 * x)
    x[3:5] = 100.0
    with pytest.raises(InferenceServerException) as e:
        infer(kind, served, FIXED_KEPT, [("x", x, "FP32")], ["output"])
    assert "output 'output' has shape [6] here, and this model's config declares [8]" \
        in str(e.value)
    assert "--example-inputs" in str(e.value)


# ---------------------------------------------------------------------------------------------
# rows that depend on each other, per-image outputs: refused before anything is written


def test_a_model_mixing_its_batch_is_refused_with_the_route(tmp_path, run_cli):
    out = tmp_path / "repo"
    code, stdout, err = run_cli("build", fixture_source("batch_centred"), "--input",
                                "x:float32:6", "--out", out)
    assert code == 1
    assert "ERROR: rows of a batch depend on each other: row 0 of sample case b run alone" in err
    assert "dynamic batcher merges the requests of different clients" in err
    assert "TIP: Build with --max-batch-size 0" in err and "--input x:float32:-1x6" in err
    assert "Traceback" not in err and not out.exists()
    assert not list(tmp_path.glob(f"{staging.STAGING_PREFIX}*"))


def test_rows_that_differ_only_by_rounding_with_the_batch_size_still_batch(tmp_path, run_cli):
    out = tmp_path / "repo"
    code, _, err = run_cli("build", fixture_source("batch_rounding"), "--input", "x:float32:4",
                           "--variants", "python", "--out", out)
    assert code == 0, err
    code, _, err = run_cli("build", fixture_source("batch_rounding"), "--input", "x:float32:4",
                           "--variants", "python", "--out", out, "--force", "--atol", "1e-7",
                           "--rtol", "0")
    assert code == 1 and "its answer changes with the batch size, not with the other rows" in err
    assert (out / "batch_rounding_python" / layout.CONFIG).is_file()  # the first build stays


def test_the_centred_model_without_batching_answers_each_request_alone(served):
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    got = infer("grpc", served, f"{CENTRED}_python", [("x", x, "FP32")],
                 ["output"])
    with torch.inference_mode():
        want = _eager("batch_centred")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got["output"], want, rtol=1e-5, atol=1e-6)


def test_a_detector_returning_one_dict_per_image_is_refused_with_the_route(tmp_path, run_cli):
    out = tmp_path / "repo"
    code, _, err = run_cli("build", fixture_source("batched_detector"), "--input",
                           "images:float32:3x128x128", "--out", out)
    assert code == 1
    assert ("ERROR: the model returns one result per image (per row of the batch): a list of 4"
            " for a batch of 4 and 3 for a batch of 3, each a dict of boxes, labels, scores") in err
    assert "TIP: Serve one image per request: build with --max-batch-size 0 and a batch of" \
        " exactly one in the input dims (--input images:float32:1x3x128x128)" in err
    assert "docs/model-shapes.md" in err and (ROOT / "docs" / "model-shapes.md").is_file()
    assert "list index out of range" not in err and not out.exists()


def test_the_detectors_route_serves_it_right_over_http_and_grpc(tmp_path, run_cli):
    """The TIP's route, as it says it: one image per request, no wrapper."""
    out = tmp_path / "repo"
    code, stdout, err = run_cli("build", fixture_source("batched_detector"), "--input",
                                "images:float32:1x3x128x128", "--max-batch-size", "0",
                                "--variants", "python", "--out", out)
    assert code == 0, stdout + err
    name = "batched_detector_python"
    meta = json.loads((out / name / layout.RECORD).read_text())["spec"]["outputs"]
    count = meta[0]["dims"][0]  # 100 at every input for this one (box_score_thresh=0), else -1
    assert [(o["name"], o["dims"]) for o in meta] == [
        ("output_0_boxes", [count, 4]), ("output_0_labels", [count]),
        ("output_0_scores", [count])]
    with embedded_server(out, tmp_path / "logs", models_named(out, name)) as (server, statuses):
        assert statuses[name].state == "READY", statuses
        assert_verified(out, server, [name], requests=8)
