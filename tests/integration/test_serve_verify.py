"""gen-repo serve and verify against a real embedded tritonserver: real models, real requests."""

from __future__ import annotations

import os
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from tritonclient.utils import InferenceServerException

from generator.repository import layout, manifest
from generator.serve.docker_server import DEFAULT_IMAGE, DockerOptions, DockerServer
from generator.errors import PortInUseError, ServerError, ServerTimeoutError
from generator.serve.ports import Ports, free_ports
from generator.serve.server import EmbeddedServer
from generator.status import FAILED, READY, SKIPPED
from generator.serve.protocols import Protocol
from generator.serve.verify import (FAIL, OK, VerifyOptions, bad_requests, load_target,
                                    verify_repository)
from tests.conftest import ROOT
from tests.integration.conftest import (PYTORCH_BACKEND, Lines, alive, break_model,
                                        descendants, embedded_server, models_named,
                                        needs_pytorch_backend, sigint_as_default)

pytestmark = pytest.mark.integration

GOOD = ["tiny_mlp_python", "seq_encoder_python"]
LIBTORCH = "tiny_mlp_libtorch"
BROKEN = "broken_python"
# Every model that verify must pass: the libtorch one on the real PyTorch backend when there is one.
SERVED = [*GOOD, pytest.param(LIBTORCH, marks=needs_pytorch_backend)]


@pytest.fixture(scope="module")
def repo(tiny_repo, tmp_path_factory) -> Path:
    """The shared tiny repository plus a model whose artifact was tampered with."""
    repo = tmp_path_factory.mktemp("serve") / "repo"
    shutil.copytree(tiny_repo, repo)
    break_model(repo, "tiny_mlp_python", BROKEN)
    return repo


@pytest.fixture(scope="module")
def served(repo, tmp_path_factory):
    """One server for the module, every model of ``repo`` loaded (the broken one fails)."""
    with embedded_server(repo, tmp_path_factory.mktemp("logs")) as (server, statuses):
        yield server, statuses


# ---------------------------------------------------------------------------------------------
# serve: per-model status


@pytest.fixture(scope="module")
def served_without_pytorch(repo, tmp_path_factory):
    """A server with no PyTorch backend (as the embedded one is by itself): the libtorch model
    is SKIPPED. Whatever GEN_REPO_BACKEND_DIRECTORY says, this path is tested too."""
    models = models_named(repo, LIBTORCH, "tiny_mlp_python")
    with embedded_server(repo, tmp_path_factory.mktemp("logs"), models,
                         backend_dirs=()) as (server, statuses):
        yield server, statuses


def test_each_model_gets_its_own_status(served):
    server, statuses = served
    assert set(statuses) == {*GOOD, LIBTORCH, BROKEN}
    for name in GOOD:
        assert statuses[name].state == READY, statuses[name]
        assert statuses[name].backend == "python"
    lt = statuses[LIBTORCH]
    assert lt.backend == "pytorch"
    assert lt.state == (READY if PYTORCH_BACKEND else SKIPPED), lt
    broken = statuses[BROKEN]
    assert broken.state == FAILED
    assert "SHA-256" in broken.reason and "At:" not in broken.reason  # the server's reason, tidied
    server.check_running()  # one bad model did not take the server down


def test_without_a_pytorch_backend_libtorch_is_skipped_with_the_reason(served_without_pytorch):
    server, statuses = served_without_pytorch
    lt = statuses[LIBTORCH]
    assert lt.state == SKIPPED and lt.backend == "pytorch"
    assert "no PyTorch backend" in lt.reason and "--docker" in lt.reason \
        and "--backend-directory" in lt.reason and "GEN_REPO_BACKEND_DIRECTORY" in lt.reason
    assert statuses["tiny_mlp_python"].state == READY


def test_the_good_models_answer_after_the_broken_one_failed(served, repo):
    server, _ = served
    target = load_target(models_named(repo, "tiny_mlp_python")[0])
    for kind, url in (("http", server.http_url), ("grpc", server.grpc_url)):
        proto = Protocol(kind, url)
        client = proto.client()
        assert client.is_model_ready("tiny_mlp_python")
        assert not client.is_model_ready(BROKEN)
        assert target.answer(proto, client, target.cases[0]).ok
        client.close()


# ---------------------------------------------------------------------------------------------
# verify


@pytest.fixture(scope="module")
def report(served, repo):
    server, _ = served
    models = models_named(repo, *GOOD, LIBTORCH)
    return verify_repository(models, server.http_url, server.grpc_url,
                             VerifyOptions(concurrency=16, requests=64, bad_requests=True))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", SERVED)
def test_verify_ok_over_both_protocols(report, repo, model, protocol):
    r = report.result(model, protocol)
    assert r.status == OK, r.detail
    atol = layout.BuiltModel(repo / model).spec.atol
    assert r.max_abs is not None and r.max_abs <= atol
    assert "metadata ok" in r.detail and "bad requests refused" in r.detail


def test_verify_skips_libtorch_with_the_reason(served_without_pytorch, repo):
    server, _ = served_without_pytorch
    rep = verify_repository(models_named(repo, LIBTORCH, "tiny_mlp_python"), server.http_url,
                            server.grpc_url, VerifyOptions(concurrency=8, requests=16))
    for protocol in ("http", "grpc"):
        r = rep.result(LIBTORCH, protocol)
        assert r.status == SKIPPED
        assert "--docker" in r.detail and "--backend-directory" in r.detail
        assert rep.result("tiny_mlp_python", protocol).status == OK
    assert rep.ok and not rep.failures


def test_verify_report_has_no_failure(report):
    assert report.ok and not report.failures, report.failures


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["tiny_mlp_python",
                                   pytest.param(LIBTORCH, marks=needs_pytorch_backend)])
def test_concurrent_requests_are_merged_by_the_dynamic_batcher(report, model, protocol):
    facts = report.result(model, protocol).facts
    assert facts["requests"] == 64
    assert 0 < facts["executions"] < facts["requests"], facts  # several requests per execution


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", SERVED)
def test_bad_requests_get_errors_naming_the_problem(served, repo, model, protocol):
    server, _ = served
    target = load_target(layout.BuiltModel(repo / model))
    proto = Protocol(protocol, server.http_url if protocol == "http" else server.grpc_url)
    client = proto.client()
    cases = bad_requests(target)
    assert [c.label.split()[0] for c in cases] == ["wrong", "wrong", "missing", "batch"]
    first = target.spec.inputs[0].name
    for case in cases:
        with pytest.raises(InferenceServerException) as e:
            proto.infer(client, model, case.tensors, target.outputs)
        msg = e.value.message()
        for fragment in case.expect:
            assert fragment.lower() in msg.lower(), (case.label, msg)
        if case.label != f"batch {target.spec.max_batch_size + 1} > max_batch_size":
            assert first in msg
        # the server and the model stay up, and the next good request gets the right answer
        assert client.is_server_live() and client.is_model_ready(model)
        assert target.answer(proto, client, target.cases[0], 0, 2).ok
    client.close()


def test_verify_fails_on_a_wrong_reference(served, repo, tmp_path):
    """A served answer that differs from the stored reference is a FAIL with the error size."""
    server, _ = served
    local = tmp_path / "repo"
    shutil.copytree(repo / "tiny_mlp_python", local / "tiny_mlp_python")
    ref_path = local / "tiny_mlp_python" / layout.REFERENCE
    ref = dict(np.load(ref_path))
    ref["output"] = ref["output"] + 0.5
    np.savez(ref_path, **ref)
    manifest.update(local / "tiny_mlp_python", layout.REFERENCE)  # a wrong reference, recorded
    rep = verify_repository(layout.list_models(local), server.http_url, server.grpc_url,
                            VerifyOptions(requests=8, concurrency=4))
    for protocol in ("http", "grpc"):
        r = rep.result("tiny_mlp_python", protocol)
        assert r.status == FAIL and "outside atol" in r.detail, r.detail
    assert not rep.ok


def test_verify_cli(served, repo, run_cli, tmp_path):
    server, _ = served
    urls = ["--http-url", server.http_url, "--grpc-url", server.grpc_url]
    code, out, err = run_cli("verify", "--repo", repo, *urls, "--models", "tiny_mlp",
                             "--requests", "16", "--concurrency", "8")
    assert code == 0, out + err
    assert "MODEL" in out and "PROTOCOL" in out
    lt = "OK" if PYTORCH_BACKEND else "SKIPPED"
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("tiny_mlp")] == [
        [LIBTORCH, "HTTP", lt], [LIBTORCH, "gRPC", lt],
        ["tiny_mlp_python", "HTTP", "OK"], ["tiny_mlp_python", "gRPC", "OK"]]
    # the broken model is not ready: FAIL with the server's reason, exit 1, ERROR + TIP
    code, out, err = run_cli("verify", "--repo", repo, *urls, "--models", BROKEN)
    assert code == 1
    assert "FAIL" in out and "SHA-256" in out
    assert "ERROR:" in err and "TIP:" in err and "Traceback" not in err
    if not PYTORCH_BACKEND:  # only a skipped libtorch model: nothing verified is not a success
        code, out, err = run_cli("verify", "--repo", repo, *urls, "--models", LIBTORCH)
        assert code == 1 and "nothing was verified" in err


def test_verify_cli_with_nothing_verified_fails(served_without_pytorch, repo, run_cli):
    server, _ = served_without_pytorch
    code, out, err = run_cli("verify", "--repo", repo, "--http-url", server.http_url,
                             "--grpc-url", server.grpc_url, "--models", LIBTORCH)
    assert code == 1 and "nothing was verified" in err and "SKIPPED" in out


def test_verify_against_a_server_of_another_repository(served, repo, tmp_path):
    server, _ = served
    other = tmp_path / "other"
    shutil.copytree(repo / "tiny_mlp_python", other / "renamed_python")
    rep = verify_repository(layout.list_models(other), server.http_url, server.grpc_url,
                            VerifyOptions(protocols=("grpc",), requests=0))
    r = rep.result("renamed_python", "grpc")
    assert r.status == FAIL and "does not know this model" in r.detail


# ---------------------------------------------------------------------------------------------
# lifecycle: ports, start failures, shutdown


def test_port_in_use_is_named_with_its_flag(repo, tmp_path):
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        taken = s.getsockname()[1]
        h, m = free_ports(2)
        with pytest.raises(PortInUseError) as e:
            with EmbeddedServer(repo, Ports(h, taken, m), log_path=tmp_path / "x.log"):
                pass
    assert str(taken) in e.value.message and "--grpc-port" in e.value.tip
    assert not (tmp_path / "x.log").exists()  # nothing was started


def test_port_in_use_cli(repo, run_cli):
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        taken = s.getsockname()[1]
        code, out, err = run_cli("serve", "--repo", repo, "--http-port", taken)
    assert code == 1 and f"port {taken}" in err and "--http-port" in err and "TIP:" in err


@pytest.mark.parametrize("command", ["serve", "verify"])
def test_missing_or_empty_repository(run_cli, tmp_path, command):
    code, _, err = run_cli(command, "--repo", tmp_path / "nope")
    assert code == 1 and "does not exist" in err and "TIP:" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(command, "--repo", tmp_path / "empty")
    assert code == 1 and "holds no models" in err and "Traceback" not in err


def test_server_that_dies_at_start_reports_its_log(tmp_path):
    """A repository path the server cannot use: it exits, and the error carries its log tail."""
    with pytest.raises(ServerError) as e:
        with EmbeddedServer(tmp_path / "missing", Ports(*free_ports(3)),
                            log_path=tmp_path / "t.log"):
            pass
    assert "exited with status" in e.value.message and str(tmp_path / "t.log") in e.value.tip
    assert "missing" in e.value.message  # the server's own complaint, from its log


def test_start_timeout_stops_the_server_and_quotes_its_log(repo, tmp_path):
    server = EmbeddedServer(repo, Ports(*free_ports(3)), log_path=tmp_path / "t.log",
                            start_timeout=0.0)
    with pytest.raises(ServerTimeoutError) as e:
        with server:
            pass
    assert "did not become live" in e.value.message and "--start-timeout" in e.value.tip
    assert server.exit_code() is None and server.pid is None  # stopped and reaped
    assert isinstance(e.value, TimeoutError)


def test_stop_kills_the_process_group_when_sigint_is_not_enough(repo, tmp_path):
    """stop_timeout=0: SIGINT, then at once SIGKILL for the server and its Python stubs."""
    models = models_named(repo, "tiny_mlp_python")
    with embedded_server(repo, tmp_path, models, stop_timeout=0.0) as (server, statuses):
        assert statuses["tiny_mlp_python"].state == READY
        client = Protocol("http", server.http_url).client()
        server.unload("tiny_mlp_python")  # unload + load again: what bench does between points
        assert not client.is_model_ready("tiny_mlp_python")
        assert [s.state for s in server.load(models)] == [READY]
        assert client.is_model_ready("tiny_mlp_python")
        client.close()
        procs = [psutil.Process(server.pid), *descendants(server.pid)]
        assert any("stub" in p.name() for p in procs), [p.name() for p in procs]
    assert alive(procs) == []


def test_serve_cli_serves_until_ctrl_c_and_leaves_no_process(repo, tmp_path):
    """The real command: table, URLs, exit 3 (one model FAILED), and nothing left running."""
    h, g, m = free_ports(3)
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "generator.cli", "serve", "--repo", str(repo),
           "--models", f"tiny_mlp_python,{BROKEN},{LIBTORCH}", "--http-port", str(h),
           "--grpc-port", str(g), "--metrics-port", str(m), "--log-file", str(log)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=sigint_as_default)
    procs = []
    try:
        lines = Lines(proc.stdout)
        lines.until("Ctrl-C", timeout=120)
        out = "".join(lines.seen)
        rows = {line.split()[0]: line.split()[2] for line in out.splitlines()
                if line.split() and line.split()[0] in ("tiny_mlp_python", BROKEN, LIBTORCH)}
        assert rows == {"tiny_mlp_python": READY, BROKEN: FAILED,
                        LIBTORCH: READY if PYTORCH_BACKEND else SKIPPED}
        assert f"127.0.0.1:{h}" in out and f"127.0.0.1:{g}" in out and str(log) in out
        assert "listening on 127.0.0.1 (this machine only)" in out
        procs = descendants(proc.pid)
        assert any(p.name() == "tritonserver" for p in procs)
        assert any("stub" in p.name() for p in procs)
        proto = Protocol("http", f"localhost:{h}")
        client = proto.client()
        assert client.is_model_ready("tiny_mlp_python")
        client.close()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # a failed assertion above: still stop the server cleanly
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
    assert code == 3, proc.stderr.read()  # some models FAILED, the others were served
    assert alive(procs) == []
    assert log.is_file() and "successfully loaded 'tiny_mlp_python'" in log.read_text()


DOCKER_IMAGE = os.environ.get("GEN_REPO_TEST_IMAGE", DEFAULT_IMAGE)


def _docker_has(image: str) -> bool:
    """Whether a running docker engine holds ``image`` (the NGC image cannot be pulled here)."""
    import docker

    try:
        docker.from_env(timeout=5).images.get(image)
        return True
    except docker.errors.DockerException:  # no engine, or no such image
        return False


@pytest.mark.docker
@pytest.mark.skipif(not _docker_has(DOCKER_IMAGE),
                    reason=f"needs a docker engine with {DOCKER_IMAGE} (set GEN_REPO_TEST_IMAGE)")
def test_docker_server_per_model_status_and_no_container_left(repo, tmp_path):
    """The container: each model READY (then verified) or FAILED with the server's reason.

    With the stock NGC image the libtorch model loads when its torch is compatible, and the
    Python model fails without torch in the image; with an image that has torch both load. An
    image without a PyTorch backend (the tests' stand-in, tests/integration/test_docker.py) gets
    the libtorch model SKIPPED with the reason.
    """
    import docker

    models = models_named(repo, LIBTORCH, "tiny_mlp_python")
    server = DockerServer(repo, Ports(*free_ports(3)), log_path=tmp_path / "d.log",
                          options=DockerOptions(image=DOCKER_IMAGE))
    with server:
        statuses = server.load(models)
        assert [s.name for s in statuses] == [LIBTORCH, "tiny_mlp_python"]
        for s in statuses:
            assert s.state in (READY, FAILED, SKIPPED) and (s.state == READY or s.reason), s
        ready = [m for m, s in zip(models, statuses) if s.state == READY]
        if ready:
            rep = verify_repository(ready, server.http_url, server.grpc_url,
                                    VerifyOptions(requests=16, concurrency=8))
            assert rep.ok, rep.results
        assert docker.from_env().containers.list(filters={"name": server.name})
    assert docker.from_env().containers.list(all=True, filters={"name": server.name}) == []
    assert "Signal (2) received" in (tmp_path / "d.log").read_text()  # stopped by SIGINT
