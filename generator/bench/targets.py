"""Where the load goes: bench's own embedded server on its private copy, or a running server.

Both answer the same few questions for the sweep: the URL of a protocol, whether a model is
ready (loading it first with a given instance count where bench owns the server), and whether
the server is still alive.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ..errors import ServerError, SpecError
from ..serve import control
from ..serve.protocols import Protocol
from ..serve.lifecycle import ModelStatus
from ..serve.ports import Ports, free_ports
from ..serve.server import EmbeddedServer
from ..status import FAILED, READY
from . import workspace
from .workspace import BenchModel


class ManagedServer:
    """The embedded tritonserver on bench's private repository copy, one model loaded at a time.

    A new instance count is a rewritten config.pbtxt in the copy followed by a reload through
    the model-control API; each model is unloaded after its points so it does not compete for
    the cores with the next one.
    """

    kind = "embedded"
    can_scale = True

    def __init__(self, repo_copy: Path, log_path: Path, backend_dirs: Sequence[str] | None = None,
                 start_timeout: float = 120.0):
        self.server = EmbeddedServer(repo_copy, Ports(*free_ports(3)), log_path=log_path,
                                     backend_dirs=backend_dirs, start_timeout=start_timeout)

    def __enter__(self) -> "ManagedServer":
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)

    @property
    def pid(self) -> int | None:
        """The server's process id (its Python-backend stubs are its descendants)."""
        return self.server.pid

    @property
    def repo(self) -> Path:
        """The repository copy it serves."""
        return self.server.repo

    def url(self, protocol: str) -> str:
        return self.server.grpc_url if protocol == "grpc" else self.server.http_url

    def missing_backend_reason(self, backend: str) -> str | None:
        return self.server.missing_backend_reason(backend)

    def cannot_load_reason(self, model: BenchModel) -> str | None:
        """Why this server cannot load the model (no backend for it, or a platform its release
        does not know), or None."""
        return self.missing_backend_reason(model.built.backend) or \
            self.server.unsupported_reason(model.built)

    def load(self, model: BenchModel, instances: int | None) -> ModelStatus:
        if instances is not None and self.missing_backend_reason(model.built.backend) is None:
            workspace.set_instances(model.built, instances)
        return self.server.load([model.built])[0]

    def unload(self, model: BenchModel) -> None:
        try:
            self.server.unload(model.name)
        except Exception:  # unloading is tidiness; a dead server is caught by check_running
            pass

    def check_running(self) -> None:
        self.server.check_running()

    def resident_bytes(self) -> int | None:
        """The server's resident memory, its Python-backend processes included."""
        return self.server.resident_bytes()

    def wait_for_stubs(self, count: int = 0, timeout: float = 60.0) -> bool:
        """Wait until at most ``count`` Python-backend processes run (those of unloaded models
        have exited); False if they have not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.server.stub_count() > count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def counts(self, model: str) -> tuple[int, int] | None:
        proto = Protocol("http", self.server.http_url, timeout=120)
        return _counts(proto, proto.client(), model, close=True)

    def describe(self) -> dict:
        return {"kind": "embedded tritonserver (nvidia-pytriton)", "version": _version(
            self.server.http_url), "backends": sorted(self.server.backends),
                "log": str(self.server.log_path), "http": self.server.http_url,
                "grpc": self.server.grpc_url}


class RemoteServer:
    """A server someone else started (--url): models are measured as they are loaded there."""

    kind = "remote"
    can_scale = False
    pid = None  # another machine's, or not ours to measure

    def __init__(self, url: str, protocol: str):
        self._url = url
        self.protocol = protocol
        self._proto = Protocol(protocol, url)
        self._client = _client(protocol, url)
        try:
            live = self._client.is_server_live()
        except Exception as e:
            raise ServerError(f"no Triton server answers {protocol} at {url}: {e}.",
                              "Start one (gen-repo serve), check the port (gRPC is usually 8001,"
                              " HTTP 8000) and --protocol, or drop --url to let bench start its"
                              " own server.") from e
        if not live:
            raise ServerError(f"the server at {url} is not live.", "Wait for it, or restart it.")

    def __enter__(self) -> "RemoteServer":
        return self

    def __exit__(self, *exc) -> None:
        self._client.close()

    def url(self, protocol: str) -> str:
        if protocol != self.protocol:
            raise SpecError(f"--url {self._url} is a {self.protocol} endpoint, not {protocol}.",
                            "Pass the URL of the protocol you measure.")
        return self._url

    def missing_backend_reason(self, backend: str) -> str | None:
        return None

    def ready_models(self) -> list[str]:
        from tritonclient.utils import InferenceServerException

        try:
            index = self._client.get_model_repository_index(
                headers=control.headers_for(self._url, self.protocol) or None)
        except InferenceServerException as e:
            raise ServerError(f"the server at {self._url} does not list its models to this"
                              f" client: {e.message() or e}.",
                              "Name the models to measure with --models (its repository index"
                              " is restricted to gen-repo serve's control key).") from e
        if not isinstance(index, list):  # gRPC protobuf
            index = [{"name": m.name, "state": m.state} for m in index.models]
        return [m["name"] for m in index if m.get("state") == READY]  # Triton's word too

    def model_config(self, name: str) -> dict:
        """The server's config of a model, as JSON."""
        try:
            return self._proto.config(self._client, name)
        except Exception as e:
            raise ServerError(f"the server at {self._url} has no model '{name}' ready: {e}.",
                              "Check the name (gen-repo serve prints them) or load it there"
                              " first.") from e

    def load(self, model: BenchModel, instances: int | None) -> ModelStatus:
        backend = model.built.backend
        try:
            ready = self._client.is_model_ready(model.name)
        except Exception as e:
            raise ServerError(f"the server at {self._url} stopped answering: {e}.",
                              "Check the server; bench keeps what it measured so far.") from e
        if ready:
            return ModelStatus(model.name, backend, READY)
        return ModelStatus(model.name, backend, FAILED,
                           f"not ready on the server at {self._url} (load it there first)")

    def unload(self, model: BenchModel) -> None:
        pass

    def counts(self, model: str) -> tuple[int, int] | None:
        return _counts(self._proto, self._client, model)

    def check_running(self) -> None:
        try:
            if self._client.is_server_live():
                return
        except Exception as e:
            raise ServerError(f"the server at {self._url} stopped answering: {e}.",
                              "Check the server; bench keeps what it measured so far.") from e
        raise ServerError(f"the server at {self._url} is no longer live.",
                          "Check the server; bench keeps what it measured so far.")

    def describe(self) -> dict:
        return {"kind": f"running server at {self._url}", "version": _version(self._url,
                                                                               self.protocol),
                self.protocol: self._url}


def _client(protocol: str, url: str):
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(url)
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=120)


def _counts(proto: Protocol, client, model: str, close: bool = False) -> tuple[int, int] | None:
    """(inferences, executions) the server has counted for ``model``; None when it won't say.

    Their change over a point gives the batch size the dynamic batcher actually formed.
    """
    try:
        return proto.counts(client, model)
    except Exception:  # statistics are an extra; a point never fails for want of them
        return None
    finally:
        if close:
            client.close()


def _version(url: str, protocol: str = "http") -> str:
    try:
        client = _client(protocol, url)
        try:
            meta = client.get_server_metadata()
        finally:
            client.close()
        return meta["version"] if isinstance(meta, dict) else meta.version
    except Exception:
        return "unknown"
