"""Integration helpers: build fixture models with gen-repo build, run a real tritonserver."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from generator.repository import layout, manifest
from generator.cli import main
from generator.serve.ports import Ports, free_ports
from generator.serve.server import EmbeddedServer
from generator.serve.triton_install import BACKEND_DIRS_ENV, backends_in, default_backend_dirs
from tests.conftest import ROOT, fixture_source
from tests.fixtures.models import INPUTS


def _has_pytorch_backend() -> bool:
    return any(Path(d).is_dir() and "pytorch" in backends_in(Path(d).resolve())
               for d in default_backend_dirs())


# The libtorch variant is served for real when gen-repo finds a Triton PyTorch backend
# (GEN_REPO_BACKEND_DIRECTORY, else /opt/tritonserver/backends); the tests that need one skip
# without it, saying so.
PYTORCH_BACKEND = _has_pytorch_backend()
needs_pytorch_backend = pytest.mark.skipif(
    not PYTORCH_BACKEND, reason=f"needs a Triton PyTorch backend: set {BACKEND_DIRS_ENV} to a"
    " backend directory holding pytorch/ (a copy of the NGC image's /opt/tritonserver/backends),"
    " or run where /opt/tritonserver/backends holds one")


def build_fixture(out: Path, factory: str, variants: str = "libtorch,python", *extra: str) -> None:
    """gen-repo build of a tests/fixtures/models.py factory into ``out``."""
    args = ["-q", "build", fixture_source(factory), "--out", str(out), "--variants", variants]
    for spec in INPUTS.get(factory, ()):  # or given in ``extra``
        args += ["--input", spec]
    assert main(args + list(extra)) == 0, f"building {factory} failed"


def models_named(repo: Path, *names: str) -> list[layout.BuiltModel]:
    """The built models ``names`` of ``repo``, in that order."""
    return [layout.BuiltModel(repo / n) for n in names]


@contextlib.contextmanager
def _client(kind: str, server):
    """(Protocol, its tritonclient) for ``server`` (``kind``: http or grpc), closed after."""
    from generator.serve.protocols import Protocol

    proto = Protocol(kind, server.http_url if kind == "http" else server.grpc_url)
    client = proto.client()
    try:
        yield proto, client
    finally:
        client.close()


def infer(kind: str, server, model: str, tensors, outputs) -> dict:
    """One request with tritonclient (``kind``: http or grpc); the answers by output name."""
    with _client(kind, server) as (proto, client):
        return proto.infer(client, model, tensors, outputs)


def metadata(kind: str, server, model: str) -> dict:
    """``model``'s metadata as tritonclient (``kind``: http or grpc) reads it."""
    with _client(kind, server) as (proto, client):
        return proto.metadata(client, model)


def assert_verified(repo: Path, server, names, requests: int) -> None:
    """gen-repo verify of the models ``names`` passes over HTTP and gRPC, each of them."""
    from generator.serve.verify import OK, VerifyOptions, verify_repository

    report = verify_repository(models_named(repo, *names), server.http_url, server.grpc_url,
                               VerifyOptions(requests=requests, concurrency=4))
    assert {(r.model, r.protocol) for r in report.results} == \
        {(n, p) for n in names for p in ("HTTP", "gRPC")}
    for r in report.results:
        assert r.status == OK, f"{r.model} {r.protocol}: {r.detail}"


def copy_model(repo: Path, source: str, name: str) -> Path:
    """A copy of model ``source`` served under ``name`` (config name and build record renamed)."""
    dst = repo / name
    shutil.copytree(repo / source, dst)
    cfg = dst / layout.CONFIG
    cfg.write_text(cfg.read_text().replace(f'name: "{source}"', f'name: "{name}"'))
    record = json.loads((dst / layout.RECORD).read_text())
    record["model_name"], record["spec"]["name"] = name, name
    (dst / layout.RECORD).write_text(json.dumps(record))
    manifest.write(dst)  # a copy made on purpose: its files recorded as they are now
    return dst


def edit_config(model_dir: Path, change) -> None:
    """Change a model's config.pbtxt on purpose: ``change`` edits its ModelConfig in place, and
    gen-repo's one writer of configs writes it (its recorded hash follows)."""
    from generator.repository.config import write_config

    config = layout.BuiltModel(model_dir).config
    change(config)
    write_config(model_dir, config, "Edited by a test.")


def break_model(repo: Path, source: str, name: str) -> Path:
    """A copy of model ``source`` named ``name`` whose artifact no longer matches its SHA-256."""
    dst = copy_model(repo, source, name)
    record = json.loads((dst / layout.RECORD).read_text())
    with open(dst / "1" / record["load_params"]["artifact"], "ab") as f:
        f.write(b"tampered")
    return dst


def wait_for_first_point(proc, out: Path, timeout: float) -> None:
    """Wait until a running `gen-repo bench` has saved its first measured point."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = out / "results.json"
        if path.is_file() and json.loads(path.read_text())["points"]:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"no point measured within {timeout:.0f} s")


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """tiny_mlp (libtorch + python) and seq_encoder (python: dynamic axes, int64 + bool inputs)."""
    repo = tmp_path_factory.mktemp("served") / "repo"
    build_fixture(repo, "tiny_mlp")
    build_fixture(repo, "seq_encoder", "python")
    return repo


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[str]:
    """Names of the processes that still run (zombies count as gone)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    return out


@contextlib.contextmanager
def embedded_server(repo: Path, log_dir: Path, models=None, **kw):
    """A started EmbeddedServer on free ports with ``models`` (default: all) loaded.

    Yields (server, {model name: ModelStatus}).
    """
    ports = Ports(*free_ports(3))
    with EmbeddedServer(repo, ports, log_path=log_dir / f"tritonserver-{ports.http}.log",
                        **kw) as server:
        statuses = server.load(models if models is not None else layout.list_models(repo))
        yield server, {s.name: s for s in statuses}


def sigint_as_default() -> None:
    """preexec_fn of a child a test stops with SIGINT (Ctrl-C): a test runner started in the
    background, and each pytest-xdist worker, ignore SIGINT, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def serve_process(repo: Path, log: Path, *args: str):
    """The real `gen-repo serve` of ``repo`` as a subprocess on free ports.

    Yields (process, Lines of its stdout and stderr, Ports). If it still runs at the end (a
    failed assertion), it and every process it started are killed.
    """
    ports = Ports(*free_ports(3))
    cmd = [sys.executable, "-m", "generator.cli", "serve", "--repo", str(repo), "--http-port",
           str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port",
           str(ports.metrics), "--log-file", str(log), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=sigint_as_default)
    try:
        yield proc, Lines(proc.stdout), ports
    finally:
        kill_with_descendants(proc)


def kill_with_descendants(proc: subprocess.Popen) -> None:
    """Kill ``proc`` (when it still runs) and every process it started."""
    if proc.poll() is None:
        children = descendants(proc.pid)
        proc.kill()
        proc.wait()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


class Lines:
    """A process's output lines, read in a thread, so that waiting for one never blocks."""

    def __init__(self, stream):
        self.queue: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=lambda: [self.queue.put(x) for x in stream], daemon=True).start()

    def until(self, needle: str, timeout: float, start: bool = False) -> str:
        """The next line holding ``needle`` (starting with it, when ``start``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(needle) if start else needle in line:
                return line
        raise AssertionError(f"no {needle!r} within {timeout:.0f} s in: {''.join(self.seen)}")

    def rest(self, timeout: float = 5.0) -> str:
        """Every line seen so far and those that follow until none comes for ``timeout`` s."""
        while True:
            try:
                self.seen.append(self.queue.get(timeout=timeout))
            except queue.Empty:
                return "".join(self.seen)
