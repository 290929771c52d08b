"""What a build calls OK is served right: a value-dependent branch the samples never cross, inputs
that must reach forward() by name, NumPy inside forward(). Real builds, the real embedded
tritonserver, real requests over HTTP and gRPC compared with the eager model on inputs that are
not the stored samples."""

from __future__ import annotations

import contextlib
import inspect
import io
import json

import numpy as np
import pytest
import torch

from generator.repository import layout
from generator.cli import main
from generator.serve.protocols import Protocol
from generator.serve.verify import VerifyOptions, verify_repository
from tests.conftest import fixture_source
from tests.fixtures import models
from tests.fixtures.models import INPUTS, UNBATCHED
from tests.integration.conftest import embedded_server, models_named

pytestmark = pytest.mark.integration

SERVED = ["value_branch_python", "value_branch_python_ts", "tiny_bert_python",
          "tiny_bert_python_ts"]


def _build(out, factory, *extra) -> tuple[int, str]:
    args = ["-q", "build", fixture_source(factory), "--out", str(out)]
    for spec in INPUTS[factory]:
        args += ["--input", spec]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(args + list(extra))
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = tmp_path_factory.mktemp("correct") / "repo"
    summaries = {}
    for factory in ("value_branch", "tiny_bert"):
        extra = UNBATCHED if factory == "value_branch" else ()
        code, summaries[factory] = _build(repo, factory, "--variants", "libtorch,python,python-ts",
                                          *extra)
        assert code == 0, summaries[factory]
    return repo, summaries


@pytest.fixture(scope="module")
def served(built, tmp_path_factory):
    repo, _ = built
    with embedded_server(repo, tmp_path_factory.mktemp("logs"),
                         models=models_named(repo, *SERVED)) as (server, statuses):
        assert all(statuses[m].state == "READY" for m in SERVED), statuses
        yield server


def _line(cls, text: str) -> str:
    """Where the build points: tests/fixtures/models.py:N, N the line of ``cls.forward`` that
    holds ``text``."""
    lines, start = inspect.getsourcelines(cls.forward)
    return f"tests/fixtures/models.py:{start + next(i for i, ln in enumerate(lines) if text in ln)}"


def _record(repo, model) -> dict:
    return json.loads((repo / model / layout.RECORD).read_text())


def _crossing() -> np.ndarray:
    """Rows the samples never look like: one value beyond the model's threshold."""
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    x[1, 2] = 3 * models.ValueBranch().threshold
    return x


def _bert_inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.integers(0, 30, (2, 6)), rng.integers(0, 2, (2, 6))


# ---------------------------------------------------------------------------------------------
# 1. a trace that raised TracerWarnings does not ship on the strength of two samples


def test_warned_trace_is_replaced_by_script_and_the_summary_says_why(built):
    repo, summaries = built
    row = next(ln for ln in summaries["value_branch"].splitlines()
               if ln.startswith("libtorch "))
    assert "OK" in row and "script (the trace raised TracerWarnings)" in row
    line = _line(models.ValueBranch, "if x.abs().max()")
    for model in ("value_branch_libtorch", "value_branch_python_ts"):
        rec = _record(repo, model)
        assert rec["load_params"]["torchscript_method"] == "script"
        assert rec["export_method"] == "script (the trace raised TracerWarnings)"
        assert any(line in n and "Python boolean" in n for n in rec["notes"]), rec["notes"]
    # the shipped artifact is right where a trace would be wrong
    ts = torch.jit.load(str(repo / "value_branch_libtorch/1/model.pt"))
    eager = models.value_branch().eval()
    x = torch.from_numpy(_crossing())
    with torch.no_grad():
        assert torch.equal(ts(x), eager(x))


def test_accepting_the_warnings_ships_the_trace_which_is_wrong_off_the_samples(tmp_path):
    code, out = _build(tmp_path / "r", "value_branch", "--variants", "libtorch",
                       "--accept-trace-warnings", *UNBATCHED)
    assert code == 0, out
    assert "trace (TracerWarnings accepted by --accept-trace-warnings)" in out
    rec = _record(tmp_path / "r", "value_branch_libtorch")
    assert rec["load_params"]["torchscript_method"] == "trace"
    line = _line(models.ValueBranch, "if x.abs().max()")
    assert any("--accept-trace-warnings" in n and line in n for n in rec["notes"])
    ts = torch.jit.load(str(tmp_path / "r/value_branch_libtorch/1/model.pt"))
    x = torch.from_numpy(_crossing())
    with torch.no_grad():
        err = (ts(x) - models.value_branch().eval()(x)).abs().max().item()
    assert err > 0.5  # what the default refuses to ship: the branch the samples took, baked in


def test_warned_trace_that_cannot_be_scripted_is_refused_with_its_line(tmp_path, run_cli):
    out = tmp_path / "r"
    code, stdout, err = run_cli("build", fixture_source("value_branch_unscriptable"), "--input",
                                INPUTS["value_branch_unscriptable"][0], *UNBATCHED, "--out", out)
    assert code == 3, stdout + err
    assert "ERROR: variant libtorch refused: the trace raised TracerWarnings" in err
    assert "Converting a tensor to a Python boolean" in err
    assert "`if x.abs().max() > self.threshold:`" in err and "torch.jit.script failed too" in err
    assert _line(models.ValueBranchUnscriptable, "if x.abs().max()") in err
    tip = next(ln for ln in err.splitlines() if ln.startswith("TIP:"))
    assert "torch.where" in tip and "--accept-trace-warnings" in tip
    assert "Traceback" not in err
    assert not (out / "value_branch_unscriptable_libtorch").exists()
    assert (out / "value_branch_unscriptable_python" / layout.CONFIG).is_file()


# ---------------------------------------------------------------------------------------------
# 3. NumPy in forward() is named as such, with its line


@pytest.mark.parametrize("factory,cls,text", [
    ("numpy_scale", models.NumpyScale, "np.abs(x.detach().numpy())"),  # no control flow at all
    ("untraceable", models.Untraceable, "np.sum(row.detach().numpy())"),
])
def test_a_numpy_conversion_is_named_with_its_line(tmp_path, run_cli, factory, cls, text):
    code, stdout, err = run_cli("build", fixture_source(factory), "--input", "x:float32:4",
                                "--out", tmp_path / "r")
    assert code == 3, stdout + err
    line = _line(cls, text)
    error = next(ln for ln in err.splitlines() if ln.startswith("ERROR:"))
    tip = next(ln for ln in err.splitlines() if ln.startswith("TIP:"))
    assert line in error
    assert "Converting a tensor to a NumPy array" in error and "torch.jit.script failed" in error
    assert "NumPy" in tip and line in tip and "torch operations" in tip
    assert "control flow" not in error + tip
    assert "--accept-trace-warnings" not in tip  # the trace is wrong on a sample: no opt-in
    assert not (tmp_path / "r" / f"{factory}_libtorch").exists()


# ---------------------------------------------------------------------------------------------
# 2. inputs reach forward() by name


def test_bert_like_references_are_the_model_called_by_name(built):
    repo, summaries = built
    model = models.tiny_bert().eval()
    for variant in ("libtorch", "python", "python_ts"):
        m = layout.BuiltModel(repo / f"tiny_bert_{variant}")
        s, ref = m.samples(), m.reference()
        ids, types = torch.from_numpy(s["input_ids"]), torch.from_numpy(s["token_type_ids"])
        with torch.no_grad():
            by_name = model(input_ids=ids, token_type_ids=types)
            by_position = model(ids, types)
        for k in ("last_hidden_state", "pooler_output"):
            assert np.array_equal(ref[k], by_name[k].numpy()), (variant, k)
        assert np.abs(ref["pooler_output"] - by_position["pooler_output"].numpy()).max() > 0.1
    assert "tiny_bert_libtorch" in summaries["tiny_bert"]
    assert _record(repo, "tiny_bert_libtorch")["export_method"] == "trace"


def test_an_input_name_that_is_no_parameter_is_refused(tmp_path, run_cli):
    out = tmp_path / "r"
    code, stdout, err = run_cli("build", fixture_source("tiny_bert"), "--input",
                                "input_ids:int64:-1:0..30", "--input", "segment_ids:int64:-1:0..2",
                                "--out", out)
    assert code == 2
    assert "ERROR: --input 'segment_ids'" in err and "TIP:" in err and "Traceback" not in err
    assert "forward(input_ids, attention_mask=None, token_type_ids=None)" in err
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------------------------
# served: verify, then inputs that are not the stored samples


def test_served_models_verify_over_http_and_grpc(built, served):
    repo, _ = built
    report = verify_repository(models_named(repo, *SERVED), served.http_url, served.grpc_url,
                               VerifyOptions(requests=16, concurrency=4, bad_requests=False))
    assert {(r.model, r.protocol) for r in report.results} == \
        {(m, p) for m in SERVED for p in ("HTTP", "gRPC")}
    assert not report.failures, [(r.model, r.protocol, r.detail) for r in report.failures]
    assert all(r.status == "OK" for r in report.results)


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_served_answers_match_eager_off_the_samples(served, kind):
    proto = Protocol(kind, served.http_url if kind == "http" else served.grpc_url)
    client = proto.client()
    x = _crossing()
    with torch.no_grad():
        want = models.value_branch().eval()(torch.from_numpy(x)).numpy()
    for model in ("value_branch_python", "value_branch_python_ts"):
        got = proto.infer(client, model, [("x", x, "FP32")], ["output"])["output"]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=model)
    ids, types = _bert_inputs()
    bert = models.tiny_bert().eval()
    with torch.no_grad():
        want = bert(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types))
    for model in ("tiny_bert_python", "tiny_bert_python_ts"):
        got = proto.infer(client, model, [("input_ids", ids, "INT64"),
                                          ("token_type_ids", types, "INT64")],
                          ["last_hidden_state", "pooler_output"])
        for k in got:
            np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5, err_msg=f"{model} {k}")
    client.close()
