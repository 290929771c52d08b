"""The libtorch variant on a real Triton PyTorch backend (release 24.10's pytorch_backend, built
against this environment's torch): how gen-repo finds its libtorch, what it says when the backend
cannot load or lacks an op, and what the generated configs do there -- weights shared by the
instances of a device, the cores split between them, and INTER_OP_THREAD_COUNT, which the backend
may apply only once per server process."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import psutil
import pytest

from generator.build import layout
from generator.commands.serve import print_statuses
from generator.serve import server as server_module
from generator.serve.server import FAILED, READY
from generator.serve.verify import OK, VerifyOptions, verify_repository
from tests.integration.conftest import (build_fixture, copy_model, embedded_server,
                                        models_named, needs_pytorch_backend)

pytestmark = [pytest.mark.integration, needs_pytorch_backend]

MIB = 1 << 20


def _add_parameter(model_dir: Path, key: str, value: str) -> None:
    cfg = model_dir / layout.CONFIG
    cfg.write_text(cfg.read_text() + f'parameters {{\n  key: "{key}"\n  value: {{ string_value:'
                                      f' "{value}" }}\n}}\n')


def _drop_parameter(model_dir: Path, key: str) -> None:
    cfg = model_dir / layout.CONFIG
    text = cfg.read_text()
    start = text.index(f'parameters {{\n  key: "{key}"')
    cfg.write_text(text[:start] + text[text.index("}\n}\n", start) + 4:])


def test_without_this_torch_on_the_library_path_the_backend_fails_with_a_tip(
        tiny_repo, tmp_path, monkeypatch, capsys):
    """The backend needs libtorch.so; gen-repo normally puts this environment's torch/lib on
    the server's path. Without it the load fails, and the user is told why and what to do."""
    monkeypatch.setattr(server_module, "torch_lib_dir", lambda: None)
    models = models_named(tiny_repo, "tiny_mlp_libtorch", "tiny_mlp_python")
    with embedded_server(tiny_repo, tmp_path, models) as (server, statuses):
        assert server.library_dirs == []
        lt = statuses["tiny_mlp_libtorch"]
        assert lt.state == FAILED, lt
        assert "libtorch.so is not on the server's library path" in lt.reason
        assert "torch/lib" in lt.tip and "NGC" in lt.tip
        assert statuses["tiny_mlp_python"].state == READY  # the others are not affected
        print_statuses(list(statuses.values()))
    err = capsys.readouterr().err
    assert "ERROR: tiny_mlp_libtorch is FAILED: the pytorch backend cannot load" in err
    assert "TIP: This PyTorch backend links the libtorch of a pip torch" in err


def test_a_second_inter_op_thread_count_is_refused_instead_of_aborting_the_server(tiny_repo,
                                                                                   tmp_path):
    """at::set_num_interop_threads works once per process: the PyTorch backend aborts the whole
    server (SIGABRT, every model gone) when a second load sets INTER_OP_THREAD_COUNT -- another
    model or the same one loaded again. gen-repo never writes it, and refuses such a load."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo / "tiny_mlp_libtorch", repo / "tiny_mlp_libtorch")
    for name in ("first_libtorch", "second_libtorch"):
        _add_parameter(copy_model(repo, "tiny_mlp_libtorch", name), "INTER_OP_THREAD_COUNT", "1")
    first, second = models_named(repo, "first_libtorch", "second_libtorch")
    with embedded_server(repo, tmp_path, [first, second]) as (server, statuses):
        assert statuses["first_libtorch"].state == READY
        refused = statuses["second_libtorch"]
        assert refused.state == FAILED and "INTER_OP_THREAD_COUNT" in refused.reason
        assert "first_libtorch already set in this server" in refused.reason and refused.tip
        server.unload("first_libtorch")
        (again,) = server.load([first])  # the same model again would abort the server too
        assert again.state == FAILED and "INTER_OP_THREAD_COUNT" in again.reason
        server.check_running()


@pytest.fixture(scope="module")
def wide_repo(tiny_repo, tmp_path_factory) -> Path:
    """A ~100 MB model as libtorch with 3 CPU instances (as built), a copy of it without weight
    sharing, and a tiny libtorch model that loads the backend (libtorch itself) first."""
    repo = tmp_path_factory.mktemp("wide") / "repo"
    build_fixture(repo, "wide", "libtorch", "--input", "x:float32:100", "--max-batch-size", "2",
                  "--cpu-instances", "3")
    shutil.copytree(tiny_repo / "tiny_mlp_libtorch", repo / "tiny_mlp_libtorch")
    copy_model(repo, "wide_libtorch", "unshared_libtorch")
    _drop_parameter(repo / "unshared_libtorch", "ENABLE_WEIGHT_SHARING")
    return repo


def _rss_growth(repo: Path, tmp_path: Path, name: str) -> tuple[int, str]:
    """Resident memory the server gains by loading model ``name``, and its log."""
    model = layout.BuiltModel(repo / name)
    with embedded_server(repo, tmp_path, models_named(repo, "tiny_mlp_libtorch")) as (server, _):
        proc = psutil.Process(server.pid)
        before = proc.memory_info().rss
        (status,) = server.load([model])
        assert status.state == READY, status
        grown = proc.memory_info().rss - before
        if name == "wide_libtorch":  # the instances answer right under concurrency
            rep = verify_repository([model], server.http_url, server.grpc_url,
                                    VerifyOptions(concurrency=6, requests=24))
            assert [r.status for r in rep.results] == [OK, OK], rep.results
    return grown, server.log_path.read_text()


def test_instances_share_one_copy_of_the_weights_and_split_the_cores(wide_repo, tmp_path):
    model = layout.BuiltModel(wide_repo / "wide_libtorch")
    params = {k: v.string_value for k, v in model.config.parameters.items()}
    cores = len(os.sched_getaffinity(0))
    assert params["ENABLE_WEIGHT_SHARING"] == "true"
    assert params["INTRA_OP_THREAD_COUNT"] == str(max(1, cores // 3))
    weights = 5000 * 5000 * 4
    shared, log = _rss_growth(wide_repo, tmp_path / "a", "wide_libtorch")
    unshared, _ = _rss_growth(wide_repo, tmp_path / "b", "unshared_libtorch")
    assert "Weight sharing is enabled for model instance 'wide_libtorch'" in log
    assert len(re.findall(r"Reusing TorchScript model for instance", log)) == 2
    assert re.search(rf"Intra op thread count is set to {max(1, cores // 3)}", log)
    # one copy of the ~100 MB, against three without sharing (the check can tell them apart)
    print(f"\nserver memory for ~95 MiB of weights x 3 instances: shared {shared / MIB:.0f} MiB,"
          f" unshared {unshared / MIB:.0f} MiB")
    assert shared < 1.6 * weights, (shared / MIB, unshared / MIB)
    assert unshared > 2.5 * weights, (shared / MIB, unshared / MIB)
