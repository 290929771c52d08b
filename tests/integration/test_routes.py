"""Builds of tests/fixtures/routes.py's models end to end: each is served, or refused with its
true cause and a route that works (unit tests: tests/unit/test_routes.py). The served ones run
on the real embedded tritonserver and are verified over HTTP and gRPC."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from generator.cli import main
from generator.repository import layout
from generator.serve.protocols import PROTOCOLS, Protocol
from tests.conftest import ROOT
from tests.fixtures import routes
from tests.integration.conftest import assert_verified, embedded_server, models_named

pytestmark = pytest.mark.integration

SOURCE = ROOT / "tests" / "fixtures" / "routes.py"
SERVED = ["dict_features_python", "dict_features_python_ts", "weight_normed_python"]


def _args(out, factory: str, *extra: str) -> list[str]:
    args = ["-q", "build", f"{SOURCE}:{factory}", "--out", str(out)]
    for spec in routes.INPUTS[factory]:
        args += ["--input", spec]
    return args + list(extra)


def _record(repo, model: str) -> dict:
    return json.loads((repo / model / layout.RECORD).read_text())


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("routes") / "repo"
    assert main(_args(repo, "dict_features", "--variants", "python,python-ts")) == 0
    assert main(_args(repo, "weight_normed", "--variants", "python")) == 0
    return repo


@pytest.fixture(scope="module")
def served(repo, tmp_path_factory):
    with embedded_server(repo, tmp_path_factory.mktemp("logs"),
                         models=models_named(repo, *SERVED)) as (server, statuses):
        assert all(s.state == "READY" for s in statuses.values()), statuses
        yield server


def test_served_models_answer_like_eager_over_http_and_grpc(repo, served):
    assert_verified(repo, served, SERVED, requests=8)


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_a_dict_forward_gets_the_served_inputs_as_its_keys(repo, served, kind):
    # the inputs are named after the dict's keys, not after forward()'s one parameter
    assert [i.name for i in layout.BuiltModel(repo / SERVED[0]).config.input] == \
        ["dense", "scale"]
    rng = np.random.default_rng(5)
    dense = rng.standard_normal((3, 4)).astype(np.float32)
    scale = rng.standard_normal((3, 1)).astype(np.float32)
    with torch.inference_mode():
        want = routes.dict_features().eval()({"dense": torch.from_numpy(dense),
                                              "scale": torch.from_numpy(scale)}).numpy()
    proto = Protocol(kind, served.http_url if kind == "http" else served.grpc_url)
    client = proto.client()
    try:
        for model in SERVED[:2]:
            got = proto.infer(client, model, [("dense", dense, "FP32"), ("scale", scale, "FP32")],
                              ["output"])
            np.testing.assert_allclose(got["output"], want, rtol=1e-5, atol=1e-6)
    finally:
        client.close()


def test_weight_norm_is_served_from_a_baked_copy_with_the_same_answers(repo):
    record = _record(repo, "weight_normed_python")
    assert any(n.startswith("parametrized modules (0: torch.nn.utils.parametrize, e.g."
                            " weight_norm) cannot be pickled, so the archive holds a copy")
               for n in record["notes"]), record["notes"]
    assert record["check"]["max_abs"] == 0.0  # bit-identical to the parametrized eager model


def test_a_compiled_model_is_built_from_the_module_it_compiled(tmp_path, run_cli):
    code, out, err = run_cli(*_args(tmp_path, "compiled", "--variants", "libtorch,python"))
    assert code == 0, err
    assert ("note: the model came compiled with torch.compile (an OptimizedModule): gen-repo"
            " builds the module it compiled (its _orig_mod)") in out
    assert "2 of 2 variants written" in out


def test_dynamic_quantization_is_refused_naming_it_with_the_unbatched_route(tmp_path, run_cli):
    code, _, err = run_cli(*_args(tmp_path, "dynamic_quantized", "--variants", "python"))
    assert code == 1
    assert "ERROR: rows of a batch depend on each other" in err
    assert "The model is dynamically quantized (torch.ao.quantization.quantize_dynamic" in err
    assert "TIP: Build with --max-batch-size 0" in err and "quantize statically" in err
    assert err.count("\n") == 2  # one ERROR paragraph, one TIP


def test_a_huggingface_lm_is_built_without_its_key_value_cache(tmp_path, run_cli):
    code, out, err = run_cli(*_args(tmp_path, "tiny_gpt2", "--variants", "python"))
    assert code == 0, err
    assert ("note: the model returns a key/value cache ('cache', a DynamicCache) beside its"
            " outputs") in out
    assert "built with model.config.use_cache = False" in out
    config = layout.BuiltModel(tmp_path / "tiny_gpt2_python").config
    assert [o.name for o in config.output] == ["logits"]  # the ModelOutput's one tensor


def test_tracer_warnings_in_a_librarys_code_name_it_and_route_to_variants_that_do_not_trace(
        tmp_path, run_cli):
    code, _, err = run_cli(*_args(tmp_path, "tiny_bert", "--variants", "libtorch"))
    assert code == 1
    assert "transformers/masking_utils.py:" in err and "(in transformers " in err
    assert "TIP: The TracerWarnings come from transformers " in err
    assert "python-aoti" in err and "--variants python" in err
    assert "torch.where" not in err  # no rewrite of the library's code
    assert "test_routes.py" not in err and "called from" not in err  # no caller outside it
