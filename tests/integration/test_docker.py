"""The docker route against a real docker engine, as a GPU user runs it with the NGC image.

No image registry is reachable here, so the images are made locally (tests/docker_standin.py):
a Debian base from debootstrap, a stand-in for the NGC tritonserver image (the nvidia-pytriton
wheel's tritonserver and Python backend laid out like NGC's /opt/tritonserver, python3, no torch),
and the project's own docker/Dockerfile built FROM that stand-in. Tags carry a hash of their
inputs, so a warm machine builds nothing. The engine is started here when absent (root only: it is
installed with apt-get if needed); with the network rule's flags: no bridge, host network only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.repository import layout
from generator.bench.results import Results
from generator.cli import main
from generator.serve.docker_server import DockerOptions, DockerServer
from generator.errors import GenRepoError, ToolError
from generator.ship.packenv import ENV_RECORD, ENV_TARBALL, PARAM
from generator.serve.ports import Ports, free_ports
from generator.status import FAILED, READY, SKIPPED
from generator.serve.verify import OK, VerifyOptions, verify_repository
from tests.conftest import ROOT
from tests.integration.conftest import Lines, models_named, sigint_as_default

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PYTHON_MODELS = ["tiny_mlp_python", "seq_encoder_python"]
SHORT_BENCH = ["--request-count", "40", "--stability", "100"]  # count windows: robust on a busy host
NETWORKS_KEPT = {"host", "none", "bridge"}  # the engine's predefined networks (bridge: if enabled)


@pytest.fixture(scope="session")
def engine():
    """A docker client; the engine is installed/started when absent. Without root that may be
    impossible (skip, saying why); as root a failure is a failure."""
    from tests.docker_standin import ensure_engine

    try:
        client = ensure_engine()
    except GenRepoError as e:
        if os.geteuid() != 0:
            pytest.skip(f"no docker engine can run here: {e.message}")
        raise
    yield client
    client.close()


@pytest.fixture(scope="session")
def networks_before(engine):
    """The engine's networks before any test here ran (the cleanup test compares)."""
    return {n.name for n in engine.networks.list()}


@pytest.fixture(scope="session")
def containers_before(engine):
    """Our containers before any test here ran: one a killed earlier run left behind is not this
    run's doing (the cleanup test counts only the ones this run made)."""
    return {c.id for c in _our_containers(engine)}


@pytest.fixture(scope="session")
def images(engine, networks_before, containers_before):
    """The stand-in images, built once (their tags hash their inputs, so CI reuses them)."""
    from tests.docker_standin import ensure_images

    try:
        return ensure_images(engine)
    except ToolError as e:
        if os.geteuid() != 0:
            pytest.skip(f"the test images cannot be made here: {e.message}")
        raise


def _our_containers(engine):
    return engine.containers.list(all=True, filters={"label": "gen-repo"})


def _docker_server(repo, image, log_path, **options):
    return DockerServer(repo, Ports(*free_ports(3)), log_path=log_path,
                        options=DockerOptions(image=image, pull="never", **options))


# ---------------------------------------------------------------------------------------------
# serve -> verify (HTTP + gRPC) -> bench, in the container built from docker/Dockerfile


def test_images_are_built_from_the_projects_dockerfile_and_reused(engine, images):
    from tests.docker_standin import ensure_images, pinned_versions

    assert images.torch.startswith("gen-repo/tritonserver-torch:")
    # the torch image is docker/Dockerfile with BASE_IMAGE = the stand-in, the pinned versions in
    history = " ".join(h.get("CreatedBy", "") for h in engine.images.get(images.torch).history())
    pins = pinned_versions()
    assert f"TORCH_VERSION={pins['torch']}" in history and f"BASE_IMAGE={images.standin}" in history
    start = time.monotonic()
    assert ensure_images(engine) == images  # a warm machine builds nothing
    assert time.monotonic() - start < 30
    out = engine.containers.run(images.torch, ["python3", "-c", "import torch, torchvision, numpy;"
                                               " print(torch.__version__, numpy.__version__)"],
                                network_mode="host", remove=True).decode()
    assert out.startswith(pins["torch"]) and pins["numpy"] in out


def test_serve_verify_and_bench_against_the_container(engine, images, tiny_repo, tmp_path):
    models = layout.list_models(tiny_repo)
    server = _docker_server(tiny_repo, images.torch, tmp_path / "server.log",
                            env=("GEN_REPO_TEST_MARK=docker-route",), shm_size="256m")
    with server:
        statuses = {s.name: s for s in server.load(models)}
        for name in PYTHON_MODELS:
            assert statuses[name].state == READY, statuses[name]
        lt = statuses["tiny_mlp_libtorch"]  # the stand-in has no PyTorch backend; NGC has one
        assert lt.state == SKIPPED and "no 'pytorch' backend" in lt.reason
        assert images.torch in lt.reason

        attrs = engine.containers.get(server.name).attrs
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "host"
        assert host["ShmSize"] == 256 * 1024 * 1024
        (mount,) = attrs["Mounts"]
        assert mount["Destination"] == "/models" and mount["RW"] is False
        assert mount["Source"] == str(tiny_repo.resolve())
        assert "GEN_REPO_TEST_MARK=docker-route" in attrs["Config"]["Env"]
        assert attrs["NetworkSettings"]["Networks"].keys() == {"host"}

        report = verify_repository(models_named(tiny_repo, *PYTHON_MODELS), server.http_url,
                                   server.grpc_url,
                                   VerifyOptions(requests=32, concurrency=8, bad_requests=True))
        for name in PYTHON_MODELS:
            for protocol in ("http", "grpc"):
                r = report.result(name, protocol)
                assert r.status == OK, (name, protocol, r.detail)
                assert "bad requests refused" in r.detail
        assert report.ok

        out = tmp_path / "bench"
        assert main(["-q", "bench", "--url", server.grpc_url, "--repo", str(tiny_repo),
                     "--models", "tiny_mlp_python", "--concurrency", "1,4", "--no-ceiling",
                     "--out", str(out), *SHORT_BENCH]) == 0
        results = Results.load(out / "results.json")
        assert {(p.model, p.concurrency) for p in results.points} == {
            ("tiny_mlp_python", 1), ("tiny_mlp_python", 4)}
        assert all(p.throughput > 0 for p in results.points)
        assert results.server["kind"].startswith("running server at")
    assert engine.containers.list(all=True, filters={"name": server.name}) == []
    log = (tmp_path / "server.log").read_text()
    assert "Signal (2) received" in log  # stopped by SIGINT, its log saved


def test_cli_serve_docker_then_verify_and_ctrl_c_removes_the_container(engine, images,
                                                                       tiny_repo, tmp_path):
    http, grpc, metrics = free_ports(3)
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator.cli", "serve", "--docker", "--image", images.torch,
         "--pull", "never", "--repo", str(tiny_repo), "--models", "tiny_mlp_python",
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
         "--log-file", str(log)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=sigint_as_default)
    out = Lines(proc.stdout)
    try:
        line = out.until("serving ", timeout=180, start=True)
        assert line.startswith("serving 1 of 1 models"), "".join(out.seen)
        (container,) = engine.containers.list(filters={"name": f"gen-repo-triton-{http}-"})
        assert container.labels.get("gen-repo") == "serve"
        code = main(["-q", "verify", "--repo", str(tiny_repo), "--models", "tiny_mlp_python",
                     "--http-url", f"localhost:{http}", "--grpc-url", f"localhost:{grpc}",
                     "--requests", "16", "--concurrency", "4"])
        assert code == 0
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # failed: SIGKILL cannot clean up, so remove its container here
            proc.kill()
            proc.wait()
            for c in engine.containers.list(all=True, filters={"name": f"gen-repo-triton-{http}-"}):
                c.remove(force=True)
    assert proc.returncode == 0, "".join(out.seen)
    out.until("Ctrl-C: stopping the server", timeout=30)
    with pytest.raises(Exception):
        container.reload()  # removed
    assert "Signal (2) received" in log.read_text()


# ---------------------------------------------------------------------------------------------
# the packed environment: an image without torch serves the Python variant


def _cpu_torch_args() -> list[str]:
    """Where this machine has a CPU-only torch wheel, pack it (~300 MB) instead of the CUDA
    build the model recorded (~6 GB): the route is the same, the tarball 20x smaller."""
    wheels = sorted(Path("/opt/wheels").glob("torch-*+cpu-cp311-cp311-*.whl"))
    if not wheels:
        return []
    version = wheels[-1].name.split("-")[1]
    return ["--wheels", "/opt/wheels", "--requirement", f"torch=={version}",
            "--requirement", "numpy<2"]


def test_packed_env_serves_the_python_variant_from_an_image_without_torch(engine, images,
                                                                          tiny_repo, tmp_path):
    from docker.errors import ContainerError

    with pytest.raises(ContainerError):  # the stand-in, like the stock NGC image, has no torch
        engine.containers.run(images.standin, ["python3", "-c", "import torch"],
                              network_mode="host", remove=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(tiny_repo / "tiny_mlp_python", repo / "tiny_mlp_python")
    config = repo / "tiny_mlp_python" / layout.CONFIG
    original = config.read_text()

    assert main(["-q", "pack-env", "--repo", str(repo), "--image", images.standin,
                 "--pull", "never", *_cpu_torch_args()]) == 0
    model = layout.BuiltModel(repo / "tiny_mlp_python")
    assert model.config.parameters[PARAM].string_value == \
        f"$$TRITON_MODEL_DIRECTORY/{ENV_TARBALL}"
    want = layout.parse_config(original)  # the build's config, that one parameter added
    want.parameters[PARAM].string_value = f"$$TRITON_MODEL_DIRECTORY/{ENV_TARBALL}"
    assert model.config == want and config.read_text().splitlines()[0] == original.splitlines()[0]
    assert model.file_problems() == []  # the new files and the config are recorded
    assert (model.path / ENV_TARBALL).stat().st_size > 50_000_000
    record = (model.path / ENV_RECORD).read_text()
    assert '"python": "3.11' in record and "torch==" in record

    server = _docker_server(repo, images.standin, tmp_path / "server.log")
    with server:
        (status,) = server.load(layout.list_models(repo))
        assert status.state == READY, status
        report = verify_repository([model], server.http_url, server.grpc_url,
                                   VerifyOptions(requests=16, concurrency=4))
        for protocol in ("http", "grpc"):
            assert report.result("tiny_mlp_python", protocol).status == OK, report.results
        # the backend extracted the model's environment, and torch comes from there
        code, out = engine.containers.get(server.name).exec_run(
            ["bash", "-c", "ls -d /tmp/python_env_*/*/lib/python3.11/*-packages/torch"])
        assert code == 0, out

    assert main(["-q", "pack-env", "--repo", str(repo), "--remove"]) == 0
    assert config.read_text() == original and not (model.path / ENV_TARBALL).exists()
    assert layout.BuiltModel(model.path).file_problems() == []


def test_without_the_env_the_torchless_image_fails_that_model_with_the_reason(images, tiny_repo,
                                                                            tmp_path):
    server = _docker_server(tiny_repo, images.standin, tmp_path / "server.log")
    with server:
        (status,) = server.load(models_named(tiny_repo, "tiny_mlp_python"))
    assert status.state == FAILED and "torch" in status.reason, status


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("pull", ["never", "missing"])
def test_missing_image_is_a_clear_error(engine, tiny_repo, tmp_path, run_cli, pull):
    image = "gen-repo/no-such-image:0"
    http, grpc, metrics = free_ports(3)
    code, _, err = run_cli("serve", "--docker", "--image", image, "--pull", pull, "--repo",
                           tiny_repo, "--http-port", http, "--grpc-port", grpc,
                           "--metrics-port", metrics, "--log-file", tmp_path / "s.log")
    assert code == 1
    assert f"ERROR: image {image} is not on the docker engine" in err
    assert "TIP:" in err and "docker images" in err
    if pull == "missing":
        assert "pulling it failed" in err
    assert engine.containers.list(all=True, filters={"name": f"gen-repo-triton-{http}-"}) == []


def test_unreachable_engine_is_a_clear_error(tiny_repo, tmp_path, monkeypatch, run_cli):
    path = tmp_path / "closed.sock"  # a unix socket nobody listens on any more
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    http, grpc, metrics = free_ports(3)
    code, _, err = run_cli("serve", "--docker", "--repo", tiny_repo, "--http-port", http,
                           "--grpc-port", grpc, "--metrics-port", metrics)
    assert code == 1
    assert f"ERROR: no docker engine is reachable at unix://{path}" in err
    assert "TIP:" in err and "docker info" in err
    code, _, err = run_cli("pack-env", "--repo", tiny_repo, "--models", "tiny_mlp_python",
                           "--image", "gen-repo/anything:0")
    assert code == 1 and "no docker engine is reachable" in err

    from generator.serve.docker_engine import EngineError
    from tests.docker_standin import ensure_engine

    with pytest.raises(EngineError):  # another engine was named: none is started instead
        ensure_engine()


# ---------------------------------------------------------------------------------------------
# cleanup: runs last in this module


def test_nothing_is_left_behind(engine, networks_before, containers_before):
    assert [c for c in _our_containers(engine) if c.id not in containers_before] == []
    names = {n.name for n in engine.networks.list()}
    assert names <= NETWORKS_KEPT | networks_before, names
    for net in engine.networks.list():  # no network with an address range was created
        if net.name not in networks_before:
            assert not (net.attrs.get("IPAM") or {}).get("Config"), net.attrs
