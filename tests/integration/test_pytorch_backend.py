"""The libtorch variant on a real Triton PyTorch backend (release 24.10's pytorch_backend, built
against this environment's torch): how gen-repo finds its libtorch, what it says when the backend
cannot load or lacks an op, and what the generated configs do there -- weights shared by the
instances of a device, the cores split between them, and INTER_OP_THREAD_COUNT, which the backend
may apply only once per server process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from generator.repository import layout
from generator.commands.serve import print_statuses
from generator.serve import arguments as arguments_module
from generator.status import FAILED, READY
from generator.serve.verify import OK, VerifyOptions, verify_repository
from tests.integration.conftest import (alive, build_fixture, copy_model, edit_config,
                                        embedded_server, models_named, needs_pytorch_backend, serve_process)
from tests.integration.raw_requests import grpc_infer

pytestmark = [pytest.mark.integration, needs_pytorch_backend]

MIB = 1 << 20


def _add_parameter(model_dir: Path, key: str, value: str) -> None:
    def change(config):
        config.parameters[key].string_value = value

    edit_config(model_dir, change)


def _drop_parameter(model_dir: Path, key: str) -> None:
    def change(config):
        del config.parameters[key]

    edit_config(model_dir, change)


def test_without_this_torch_on_the_library_path_the_backend_fails_with_a_tip(
        tiny_repo, tmp_path, monkeypatch, capsys):
    """The backend needs libtorch.so; gen-repo normally puts this environment's torch/lib on
    the server's path. Without it the load fails, and the user is told why and what to do."""
    monkeypatch.setattr(arguments_module, "torch_lib_dir", lambda: None)
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


# A dim below -1 whose byte size wraps around (in int64) to the payload's length passes Triton
# 24.10's checks for an input with a dynamic axis. The Python backend's stub then dies
# (test_reliability.py); the PyTorch backend throws from its tensor creation where nothing catches
# it, and the whole server aborts.
SERVER_KILLING_REQUEST = [("tokens", "INT64", [2, -(1 << 63)], b""),
                          ("mask", "BOOL", [2, -(1 << 63)], b"")]


@pytest.fixture(scope="module")
def seq_repo(tiny_repo, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("seq") / "repo"
    build_fixture(repo, "seq_encoder", "libtorch")
    shutil.copytree(tiny_repo / "tiny_mlp_python", repo / "tiny_mlp_python")
    return repo


def test_one_grpc_request_aborts_a_24_10_server_with_a_libtorch_model(seq_repo, tmp_path):
    models = models_named(seq_repo, "seq_encoder_libtorch")
    with embedded_server(seq_repo, tmp_path, models) as (server, statuses):
        assert statuses["seq_encoder_libtorch"].state == READY
        answer = grpc_infer(server.grpc_url, "seq_encoder_libtorch", SERVER_KILLING_REQUEST)
        assert answer.error  # the connection went down with the server
        deadline = time.monotonic() + 30
        while server.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.exit_code() == -signal.SIGABRT
        assert "cannot be represented as a SymInt" in server.log_path.read_text()


def test_serve_starts_the_server_again_when_it_dies(seq_repo, tmp_path):
    """The real `gen-repo serve`: after that request it starts tritonserver again and loads
    every model it served; they answer, and Ctrl-C still stops everything."""
    with serve_process(seq_repo, tmp_path / "serve.log") as (proc, out, ports):
        out.until("Ctrl-C", timeout=180)
        first = next(p for p in psutil.Process(proc.pid).children() if p.name() == "tritonserver")
        answer = grpc_infer(f"localhost:{ports.grpc}", "seq_encoder_libtorch",
                            SERVER_KILLING_REQUEST)
        assert answer.error
        warning = out.until("Starting it again", timeout=30)
        assert "exited" in warning
        for name in ("seq_encoder_libtorch", "tiny_mlp_python"):
            row = out.until(name, timeout=120, start=True)  # the new status table
            assert row.split()[2] == READY, row
        second = next(p for p in psutil.Process(proc.pid).children()
                      if p.name() == "tritonserver")
        assert second.pid != first.pid
        rep = verify_repository(models_named(seq_repo, "seq_encoder_libtorch", "tiny_mlp_python"),
                                f"localhost:{ports.http}", f"localhost:{ports.grpc}",
                                VerifyOptions(concurrency=4, requests=8))
        assert rep.ok and not rep.failures, rep.results
        procs = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, out.rest()
    assert alive(procs) == []


@pytest.mark.parametrize("variant", ["libtorch", "python"])
def test_an_error_over_8_kb_needs_a_grpc_client_with_a_larger_metadata_limit(variant, tmp_path):
    """gRPC carries an error message in metadata, which a default channel caps: above 8 KB it
    refuses more and more of them (RESOURCE_EXHAUSTED "received metadata size exceeds soft
    limit"), above 16 KB all. The PyTorch backend's errors quote the TorchScript traceback (7-10 KB
    seen here), so some of them get lost; verify's clients raise the cap (grpc.max_metadata_size)
    and read the error itself. This model's error is ~24 KB, always over the cap."""
    import numpy as np
    from tritonclient.utils import InferenceServerException

    from generator.serve.protocols import Protocol

    repo = tmp_path / "repo"
    build_fixture(repo, "loud", variant, "--input", "x:float32:4", "--script")
    x = np.full((1, 4), 5000.0, np.float32)
    name = f"loud_{variant}"
    with embedded_server(repo, tmp_path, models_named(repo, name)) as (server, _):
        default = grpc_infer(server.grpc_url, name, [("x", "FP32", [1, 4], x.tobytes())],
                             options=[])
        assert default.code == "RESOURCE_EXHAUSTED" and "metadata size" in default.error, default
        proto = Protocol("grpc", server.grpc_url)
        client = proto.client()
        with pytest.raises(InferenceServerException) as e:
            proto.infer(client, name, [("x", x, "FP32")], ["output"])
        client.close()
    assert "the input is too large: details details" in e.value.message()
