"""tests/fixtures/user_cases.py's models built through the CLI and served on the real embedded
tritonserver: a model that normalises its input in place, an audio front end that needs a
minimum length (--check-lengths), a model that takes a gradient inside forward() (served under
torch.no_grad), and a bfloat16 output (served as TYPE_BF16 by the Python backend; the PyTorch
backend of the default target release has no BF16, so its libtorch variant is refused). Unit
tests: tests/unit/test_user_cases.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from generator.cli import main
from generator.repository import layout
from generator.serve.protocols import PROTOCOLS
from tests.conftest import ROOT
from tests.fixtures import user_cases
from tests.integration.conftest import (PYTORCH_BACKEND, assert_verified, embedded_server, infer,
                                        metadata, models_named, needs_pytorch_backend)

pytestmark = pytest.mark.integration

SOURCE = ROOT / "tests" / "fixtures" / "user_cases.py"
LENGTHS = "16000,12345"  # a second of 16 kHz audio, and a length co-prime to it
# model -> (variants built, exit code): forces' TorchScript variant is refused (autograd),
# bf16_head's for its BF16 output (the PyTorch backend of Triton 24.10 has none)
BUILDS = {"in_place": ("libtorch,python,python-ts", 0),
          "spectrogram": ("libtorch,python", 0),
          "forces": ("libtorch,python", 3),
          "bf16_head": ("libtorch,python", 3)}
SERVED = ["in_place_python", "in_place_python_ts", "spectrogram_python", "forces_python",
          "bf16_head_python"]
LIBTORCH = [f"{m}_libtorch" for m in ("in_place", "spectrogram")]


def _args(out, factory: str, *extra) -> list[str]:
    """`gen-repo build` of a user_cases factory with its inputs (one thread: no timing)."""
    args = ["build", f"{SOURCE}:{factory}", "--out", str(out), "--threads", "1"]
    for spec in user_cases.INPUTS[factory]:
        args += ["--input", spec]
    return args + [str(a) for a in extra]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The repository, and each build's printed summary (stdout + stderr)."""
    import contextlib
    import io

    repo = tmp_path_factory.mktemp("user_cases") / "repo"
    printed = {}
    for factory, (variants, code) in BUILDS.items():
        extra = ["--check-lengths", LENGTHS] if factory == "spectrogram" else []
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            got = main(["-q", *_args(repo, factory, "--variants", variants, *extra)])
        printed[factory] = out.getvalue() + err.getvalue()
        assert got == code, printed[factory]
    return repo, printed


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    repo, _ = built
    names = SERVED + (LIBTORCH if PYTORCH_BACKEND else [])
    with embedded_server(repo, tmp_path_factory.mktemp("logs"),
                         models=models_named(repo, *names)) as (server, statuses):
        assert all(s.state == "READY" for s in statuses.values()), statuses
        yield server


def _eager(factory: str, *arrays):
    """The eager model's answer, on copies of ``arrays`` (one model may change them)."""
    model = getattr(user_cases, factory)().eval()
    return model(*[torch.from_numpy(a.copy()) for a in arrays]).detach()


def test_every_served_variant_answers_like_eager_over_http_and_grpc(built, served):
    assert_verified(built[0], served, SERVED, requests=16)


@needs_pytorch_backend
def test_the_libtorch_variants_answer_like_eager_on_the_pytorch_backend(built, served):
    assert_verified(built[0], served, LIBTORCH, requests=16)


# ---------------------------------------------------------------------------------------------
# 1. in-place ops on the inputs


def test_a_model_changing_its_input_in_place_builds_as_deterministic(built):
    repo, printed = built
    assert "not deterministic" not in printed["in_place"]
    for variant in ("libtorch", "python", "python_ts"):
        built_model = layout.BuiltModel(repo / f"in_place_{variant}")
        for _, inputs, reference in built_model.cases():  # the stored samples, as sent
            want = _eager("in_place", inputs["x"]).numpy()
            np.testing.assert_allclose(reference["output"], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_a_model_changing_its_input_in_place_is_served_right(served, kind):
    x = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    want = _eager("in_place", x).numpy()
    for model in ("in_place_python", "in_place_python_ts"):
        got = infer(kind, served, model, [("x", x, "FP32")], ["output"])
        np.testing.assert_allclose(got["output"], want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 2. a minimum length: --check-lengths


def test_a_length_too_short_for_the_model_is_refused_naming_it_and_check_lengths(tmp_path,
                                                                                run_cli):
    code, _, err = run_cli(*_args(tmp_path / "repo", "spectrogram"))
    assert code == 1
    assert "ERROR: the model fails on sample inputs (audio[4, 8]:float32)" in err
    assert "length 8 of the -1 axes is too short for the model" in err
    assert "TIP: The checks give every -1 axis the lengths 8 and 5 (the default)" in err
    assert "build with --check-lengths " in err and "Traceback" not in err
    assert "Check --input names" not in err  # not blamed on the inputs


def test_check_lengths_sets_the_sample_lengths_and_the_probes_stay_above_them(built):
    repo, printed = built
    model = layout.BuiltModel(repo / "spectrogram_python")
    lengths = [inputs["audio"].shape[1] for _, inputs, _ in model.cases()]
    assert lengths == [16000, 12345]
    assert "output sizes: the model fails" not in printed["spectrogram"]  # no probe too short
    record = json.loads((model.path / layout.RECORD).read_text())
    assert record["spec"]["check_lengths"] == [16000, 12345]
    output = next(o for o in model.config.output)
    assert list(output.dims) == [-1, 8]  # frames follow the length; 8 features each


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_the_audio_model_is_served_at_a_length_no_check_used(served, kind):
    audio = np.random.default_rng(6).standard_normal((2, 8000)).astype(np.float32)
    got = infer(kind, served, "spectrogram_python", [("audio", audio, "FP32")], ["output"])
    want = _eager("spectrogram", audio).numpy()
    assert got["output"].shape == want.shape == (2, 51, 8)
    np.testing.assert_allclose(got["output"], want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# 3. autograd inside forward()


def test_a_model_taking_gradients_is_served_by_the_python_variant_only(built):
    repo, printed = built
    out = printed["forces"]
    assert "forward() takes gradients" in out
    assert ("ERROR: variant libtorch refused: forward() computes gradients with autograd" in out)
    assert "TIP: The python variant serves the eager model, run under torch.no_grad" in out
    assert not (repo / "forces_libtorch").exists()
    model = layout.BuiltModel(repo / "forces_python")
    assert model.config.parameters["forward_mode"].string_value == "no_grad"
    record = json.loads((model.path / layout.RECORD).read_text())
    assert record["spec"]["forward_mode"] == "no_grad"


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_forces_are_served_right(served, kind):
    x = np.random.default_rng(7).standard_normal((3, 6)).astype(np.float32)
    got = infer(kind, served, "forces_python", [("x", x, "FP32")], ["output"])
    want = _eager("forces", x).numpy()
    np.testing.assert_allclose(got["output"], want, rtol=1e-5, atol=1e-6)


def test_the_in_process_ceiling_runs_the_gradient_model_as_served(built):
    from generator.bench import ceiling

    model = layout.BuiltModel(built[0] / "forces_python")
    artifact = ceiling.Artifact("forces", model.name, str(model.path),
                                ceiling.load_params_of(model), True)
    points = ceiling.measure([artifact], [2], [1], 0.05)
    assert len(points) == 1 and points[0].throughput > 0


# ---------------------------------------------------------------------------------------------
# 4. a bfloat16 output


def test_a_bfloat16_output_is_declared_bf16_with_bf16_tolerances(built):
    from tritonclient.grpc import model_config_pb2

    repo, printed = built
    assert "output is bfloat16 (served as TYPE_BF16" in printed["bf16_head"]
    assert "output is bfloat16, and the PyTorch backend of Triton 24.10" in printed["bf16_head"]
    assert "--triton-release 26.11" in printed["bf16_head"]
    assert not (repo / "bf16_head_libtorch").exists()
    for variant in ("python",):
        model = layout.BuiltModel(repo / f"bf16_head_{variant}")
        assert [(o.name, model_config_pb2.DataType.Name(o.data_type))
                for o in model.config.output] == [("output", "TYPE_BF16")]
        assert model.reference()["output"].dtype == np.float32  # how numpy carries bf16
        record = json.loads((model.path / layout.RECORD).read_text())
        assert record["spec"]["atol"] == record["spec"]["rtol"] == 1e-2


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_a_bfloat16_output_is_served_as_bf16(served, kind):
    meta = metadata(kind, served, "bf16_head_python")
    assert meta["outputs"] == [("output", "BF16", [-1, 4])]
    x = np.random.default_rng(8).standard_normal((3, 16)).astype(np.float32)
    got = infer(kind, served, "bf16_head_python", [("x", x, "FP32")], ["output"])
    want = _eager("bf16_head", x).float().numpy()
    assert got["output"].dtype == np.float32
    np.testing.assert_array_equal(got["output"], want)  # the same bf16 values, as float32
