"""AOTInductor and torch.compile variants: built, checked offline, served on the embedded server
and verified over HTTP and gRPC; export failures refuse only those variants. The configs are
written for Triton 26.06 (--triton-release), where torch_aoti batches."""

from __future__ import annotations

import pytest

from generator.repository import layout
from generator.serve.verify import VerifyOptions, verify_repository
from tests.conftest import fixture_source
from tests.integration.conftest import embedded_server

pytestmark = pytest.mark.integration

ALL = "libtorch,python,python-aoti,python-compile,aoti"
RELEASE = "26.06"  # torch_aoti batches, and names tensors by the package's call spec


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from generator.cli import main

    out = tmp_path_factory.mktemp("compiled") / "repo"
    assert main(["-q", "build", fixture_source("tiny_mlp"), "--input", "x:float32:16",
                 "--out", str(out), "--variants", ALL, "--triton-release", RELEASE]) == 0
    return out


def test_all_five_variants_build_and_check(repo):
    models = {m.name: m for m in layout.list_models(repo)}
    assert set(models) == {f"tiny_mlp_{v.replace('-', '_')}" for v in ALL.split(",")}
    aoti = models["tiny_mlp_aoti"]
    assert aoti.config.platform == "torch_aoti" and aoti.config.max_batch_size == 8
    assert [i.name for i in aoti.config.input] == ["KWARGS[x]"]
    assert [o.name for o in aoti.config.output] == ["RESULT[0]"]
    assert list(aoti.config.input[0].dims) == [16] and aoti.config.HasField("dynamic_batching")
    assert aoti.samples()["KWARGS[x]"].shape == (4, 16)
    assert aoti.target_release == RELEASE
    # the sample cases (batch 4 and 3), then batch 1 and max_batch_size
    assert aoti.record["check"]["detail"].startswith("matches eager on 4 inputs")
    pa = models["tiny_mlp_python_aoti"]
    assert pa.config.max_batch_size == 8 and pa.config.HasField("dynamic_batching")
    assert (pa.path / "1/model.pt2").is_file()
    pc = models["tiny_mlp_python_compile"]
    assert pc.config.parameters["compile_mode"].string_value == "default"
    assert pc.config.parameters["warmup_batch_sizes"].string_value == "1,2,8"
    assert any("warmed up" in n for n in pc.record["notes"])
    for m in models.values():
        assert m.record["export_seconds"] >= 0 and m.record["check"]["ok"]


def test_served_variants_verify_over_http_and_grpc(repo, tmp_path):
    models = layout.list_models(repo)
    with embedded_server(repo, tmp_path) as (server, statuses):
        assert statuses["tiny_mlp_python_aoti"].state == "READY"
        assert statuses["tiny_mlp_python_compile"].state == "READY"
        assert statuses["tiny_mlp_aoti"].state == "SKIPPED"  # needs a 26.06 PyTorch backend
        report = verify_repository(models, server.http_url, server.grpc_url,
                                   VerifyOptions(requests=32, concurrency=8))
        log = server.log_path.read_text()
    by = {(r.model, r.protocol): r for r in report.results}
    for model in ("tiny_mlp_python_aoti", "tiny_mlp_python_compile"):
        for proto in ("HTTP", "gRPC"):
            assert by[(model, proto)].status == "OK", by[(model, proto)].detail
    assert "torch.compile (mode default) warmed up for batch sizes [1, 2, 8]" in log


def test_export_failure_refuses_only_the_compiled_variants(tmp_path, run_cli):
    out = tmp_path / "r"
    code, stdout, err = run_cli("build", fixture_source("untraceable"), "--input", "x:float32:4",
                                "--out", out, "--variants", "python,python-aoti,aoti",
                                "--triton-release", RELEASE)
    assert code == 3
    assert "ERROR: variant python-aoti refused: torch.export cannot follow forward()" in err
    assert "ERROR: variant aoti refused: torch.export cannot follow forward()" in err
    assert "TIP:" in err and "Traceback" not in err
    assert (out / "untraceable_python/config.pbtxt").is_file()
    assert not (out / "untraceable_python_aoti").exists() and not (out / "untraceable_aoti").exists()


def test_compile_failure_falls_back_to_eager(tmp_path, run_cli, monkeypatch):
    """When torch.compile fails (here: no working C++ compiler for Inductor), the variant serves
    the eager model and says why; the check still proves its answers."""
    monkeypatch.setenv("CXX", "/bin/false")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    out = tmp_path / "r"
    code, stdout, err = run_cli("build", fixture_source("tiny_mlp"), "--input", "x:float32:16",
                                "--out", out, "--variants", "python-compile")
    assert code == 0, err
    assert "torch.compile failed, serving the eager model: InductorError" in stdout
    rec = layout.BuiltModel(out / "tiny_mlp_python_compile").record
    assert rec["check"]["ok"] and any("serving the eager model" in n for n in rec["notes"])
