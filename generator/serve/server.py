"""A real Triton server for a model repository: one context manager owns its whole lifecycle.

    with EmbeddedServer(repo, Ports(8000, 8001, 8002)) as server:
        statuses = server.load(list_models(repo))  # a ModelStatus per model; one bad model
                                                    # never stops the others

``EmbeddedServer`` runs the tritonserver bundled in the ``nvidia-pytriton`` wheel (release 24.10,
Python backend only); ``generator.serve.docker_server.DockerServer`` runs the NGC container. Both start
the server in explicit model-control mode and load the models one by one, so one model that cannot
load is reported as FAILED (with the server's reason) and never takes the others down. On exit the
server gets SIGINT, then SIGKILL for its whole process group (the Python-backend stubs included)
if it has not stopped in time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .. import progress
from ..repository import manifest
from ..repository.layout import PLATFORM_MIN_RELEASE
from ..machine import cache_dir, cores
from ..errors import (GenRepoError, PortInUseError, ServerError, ServerTimeoutError, SpecError,
                      ToolError, log_tail)
from ..repository.s3 import is_s3_url
from . import control, logs
from .logs import CappedLog
from .triton_install import (BACKEND_DIRS_ENV, EMBEDDED_RELEASE, TritonInstall, backends_in,
                             bundled_backend_dir, default_backend_dirs,
                             links_this_torch, merged_backend_dir, server_env, torch_lib_dir)

READY, FAILED, SKIPPED = "READY", "FAILED", "SKIPPED"
EXIT_TIMEOUT_S = 10  # --exit-timeout-secs: how long tritonserver waits for in-flight requests
PYTORCH_BACKEND_TIP = (
    "the embedded tritonserver (from the nvidia-pytriton wheel) has no PyTorch backend: serve this"
    " model with --docker (the NGC tritonserver image has one) or pass --backend-directory DIR (or"
    f" set {BACKEND_DIRS_ENV}=DIR) with a pytorch backend (e.g. a copy of"
    " /opt/tritonserver/backends from that image)")
BUILTIN_BACKENDS = {"ensemble"}  # platforms the server core handles without a backend library
STUB_PROCESS = "triton_python_backend_stub"  # one process per Python-backend model instance
# models loaded at once: each Python-backend instance's stub imports torch (CPU-bound, ~2 s)
LOAD_THREADS = min(4, max(2, cores()))
INTER_OP = "INTER_OP_THREAD_COUNT"  # a PyTorch-backend parameter that may be applied once


# ---------------------------------------------------------------------------------------------
# ports


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    FLAGS = {"http": "--http-port", "grpc": "--grpc-port", "metrics": "--metrics-port"}

    def items(self) -> list[tuple[str, int]]:
        return [("http", self.http), ("grpc", self.grpc), ("metrics", self.metrics)]

    def validate(self) -> None:
        for kind, port in self.items():
            if not 0 < port < 65536:
                raise SpecError(f"{self.FLAGS[kind]} {port} is not a TCP port.",
                                "Use a number between 1 and 65535, e.g. 8000.")
        values = [p for _, p in self.items()]
        if len(set(values)) != len(values):
            raise SpecError(f"the HTTP, gRPC and metrics ports must differ; got {values}.",
                            "Pass three different ports, e.g. --http-port 8000 --grpc-port 8001"
                            " --metrics-port 8002.")

    def check_free(self) -> None:
        """Raise PortInUseError naming the first port (and its flag) that is taken."""
        self.validate()
        for kind, port in self.items():
            if not port_is_free(port):
                raise PortInUseError(
                    f"port {port} (the {kind} port) is already in use, so tritonserver cannot"
                    " start on it.",
                    f"Stop whatever listens there (an earlier gen-repo serve? see"
                    f" `ss -ltnp 'sport = :{port}'`) or pass {self.FLAGS[kind]} with a free port.")


def port_is_free(port: int, host: str = "") -> bool:
    """True when a listening socket could bind ``port`` (like tritonserver does, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(n: int = 3) -> list[int]:
    """n distinct ports that are free right now (the kernel picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------------------------
# per-model status


@dataclass(frozen=True)
class ModelStatus:
    name: str
    backend: str
    state: str  # READY | FAILED | SKIPPED
    reason: str = ""
    tip: str | None = None  # what to do about a FAILED / SKIPPED model, when gen-repo knows


_MISSING_LIB = re.compile(r"unable to load shared library: (?:\S*/)?(\S+?): cannot open shared"
                          r" object file")
_UNDEFINED = re.compile(r"unable to load shared library: (\S+): undefined symbol: (\S+)")
_TORCHVISION_OP = re.compile(r"Unknown builtin op: (torchvision::\w+)")


def load_failure(backend: str, reason: str) -> tuple[str, str, str | None]:
    """(state, reason, tip) for a model the server would not load, from the server's (cleaned)
    reason: a backend library that cannot load, or a capability the backend lacks (TorchVision
    ops), is said plainly with what to do; anything else stays FAILED with the server's words.

    A model whose backend lacks a capability it needs is SKIPPED (like a model whose backend is
    absent): nothing is wrong with the model, this server cannot run it.
    """
    op = _TORCHVISION_OP.search(reason)
    if op:
        return SKIPPED, (f"this TorchScript calls {op.group(1)}, and the server's PyTorch backend has"
                         " no TorchVision ops (it was built without them)"), (
            "Serve it where the PyTorch backend has TorchVision ops (the NGC tritonserver image:"
            " gen-repo serve --docker), or serve the model's python variant, which runs the same"
            " model with torchvision's own ops.")
    lib = _MISSING_LIB.search(reason)
    if lib:
        name = lib.group(1)
        if name.startswith(("libtorch", "libc10")):
            return FAILED, (f"the {backend} backend cannot load: {name} is not on the server's"
                            " library path"), (
                "This PyTorch backend links the libtorch of a pip torch. gen-repo puts this"
                " environment's torch/lib on the server's library path when the backend directory"
                " holds no libtorch.so of its own: install the torch it was built against here,"
                " or use a backend that ships its libtorch (the NGC image's"
                " /opt/tritonserver/backends/pytorch).")
        return FAILED, f"the {backend} backend cannot load: {name} is missing", (
            f"Install the package that provides {name}, or add its folder to LD_LIBRARY_PATH"
            " before starting gen-repo serve.")
    undefined = _UNDEFINED.search(reason)
    if undefined:
        return FAILED, (f"the {backend} backend does not fit the libraries it found"
                        f" ({Path(undefined.group(1)).name}: undefined symbol"
                        f" {undefined.group(2)})"), (
            "The backend was built against another version of the library (for a PyTorch"
            " backend: another torch than this environment's). Use a backend built for this"
            " environment's torch, or serve with --docker (the NGC image brings its own).")
    return FAILED, reason, None


def clean_load_error(message: str) -> str:
    """The server's load error without its boilerplate prefix and Python stack ('At: ...')."""
    text = re.sub(r"^\s*(\[[^\]]*\]\s*)*", "", message)  # "[400] " / "[StatusCode...] "
    text = re.sub(r"load failed for model '[^']*':\s*", "", text)
    text = re.sub(r"version \d+ is at \w+ state:\s*", "", text)
    text = text.split("\n\nAt:")[0]
    text = re.sub(r"^(Internal|Invalid argument|Not found|Unavailable|Unknown|Unsupported):\s*", "",
                  text.strip())
    return " ".join(text.replace(";\n", " ").split()).rstrip(";").strip() or message.strip()


# ---------------------------------------------------------------------------------------------
# the server lifecycle, common to the embedded server and the container


class TritonServer:
    """Base class: ports check, start, wait for live, load models, stop. Subclasses start/stop."""

    kind = "tritonserver"

    def __init__(self, repo: str | Path, ports: Ports = Ports(), log_path: str | Path | None = None,
                 start_timeout: float = 120.0, load_timeout: float = 600.0,
                 stop_timeout: float = EXIT_TIMEOUT_S + 10.0, env: dict[str, str] | None = None,
                 listen: str = control.LOOPBACK):
        """``listen``: the address the server binds (HTTP, gRPC, metrics); the default is
        reachable from this machine only. Its model-control APIs need the key of this start
        (control.py), which gen-repo's own calls send."""
        # A local directory, or an s3:// URL that tritonserver reads itself (generator.repository.s3).
        self.repo: str | Path = str(repo) if is_s3_url(repo) else Path(repo).resolve()
        self.env = dict(env or {})  # extra environment for the server, e.g. S3 credentials
        self.ports = ports
        self.listen = control.check_address(listen)
        self.control_key = control.new_key()
        self.control_headers = control.headers(self.control_key, "http")  # for _client()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = Path(log_path) if log_path else \
            cache_dir() / "logs" / f"tritonserver-{stamp}-{ports.http}.log"
        self.start_timeout = start_timeout
        self.load_timeout = load_timeout
        self.stop_timeout = stop_timeout
        self._started = False
        self._loaded: dict[str, object] = {}  # name -> the model it was loaded from
        self._inter_op_by: str | None = None  # the model whose load set INTER_OP_THREAD_COUNT
        self._stubs: dict[str, list] = {}  # name -> its Python-backend processes (psutil)

    # -- what subclasses provide ---------------------------------------------------------------
    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def _kill(self) -> None:
        """Kill the server at once (a hung one); _stop then cleans up."""

    def exit_code(self) -> int | None:
        """None while the server runs; its exit status once it has stopped."""
        raise NotImplementedError

    release: str | None = None  # the Triton release ("24.10"), when known

    def missing_backend_reason(self, backend: str) -> str | None:
        """Why this server cannot load a model of ``backend``, or None when it can."""
        return None

    def unsupported_reason(self, model) -> str | None:
        """Why this server's release cannot load ``model``'s platform, or None."""
        try:
            platform = model.config.platform
        except GenRepoError:  # no readable local config: the server will say
            return None
        need = PLATFORM_MIN_RELEASE.get(platform)
        if need and self.release and self.release < need:
            return (f"platform {platform} needs Triton {need} or newer, and this server is"
                    f" release {self.release}: serve it with a newer NGC image (--docker --image"
                    f" nvcr.io/nvidia/tritonserver:{need}-py3)")
        return None

    def _stub_processes(self) -> dict:
        """{pid: psutil.Process} of the running Python-backend stubs ({} when not visible)."""
        return {}

    def _stubs_of(self, name: str) -> list:
        """The running stub processes of model ``name``: a stub's command line starts with its
        model file, <repository>/<model>/<version>/model.py (several models may be loading at
        once, so which stubs appeared during a load says nothing)."""
        import psutil

        found = []
        for p in self._stub_processes().values():
            try:
                args = p.cmdline()
            except psutil.Error:  # exited meanwhile
                continue
            if len(args) > 1 and Path(args[1]).parent.parent.name == name:
                found.append(p)
        return found

    def stub_count(self) -> int:
        """How many Python-backend stub processes run now (an unloaded model's stubs exit a
        moment after the unload returns)."""
        return len(self._stub_processes())

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{control.client_host(self.listen)}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{control.client_host(self.listen)}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{control.client_host(self.listen)}:{self.ports.metrics}/metrics"

    @property
    def key_path(self) -> Path:
        """The file holding the model-control key (readable by this user only) while it runs."""
        return control.key_path(self.ports.http)

    def __enter__(self) -> "TritonServer":
        self.ports.check_free()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        control.write_key(self.control_key, (self.ports.http, self.ports.grpc))
        self._boot("starting")
        return self

    def _boot(self, verb: str) -> None:
        """Start the server process and wait until it is live; stop it on any failure."""
        with progress.step(f"{verb} {self.kind} (log: {self.log_path})"):
            self._started = True  # first: an interrupt (Ctrl-C, SIGTERM) inside _start stops
            try:                  # whatever it got going
                self._start()
                self._wait_live()
            except BaseException:
                self.stop()
                raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._started:
            self._started = False
            with progress.step(f"stopping {self.kind}"):
                self._stop()
            control.remove_key(self.control_key, (self.ports.http, self.ports.grpc))

    def log_tail(self, lines: int = 25) -> str:
        return log_tail(self.log_path, lines)

    def _died(self, during: str) -> ServerError:
        tail = self.log_tail().strip()
        return ServerError(
            f"{self.kind} exited with status {self.exit_code()} {during}. " + (
                f"Last lines of its log ({self.log_path}):\n{tail}" if tail else
                f"Its log ({self.log_path}) is empty."),
            f"Read the full log at {self.log_path}.")

    def _client(self, timeout: float):
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.http_url, connection_timeout=timeout,
                                                network_timeout=timeout)

    def _wait_live(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        client = self._client(5.0)
        try:
            while True:
                if self.exit_code() is not None:
                    raise self._died("while starting")
                try:
                    if client.is_server_live():
                        return
                except Exception:  # not listening yet: connection refused / reset
                    pass
                if time.monotonic() > deadline:
                    raise ServerTimeoutError(
                        f"{self.kind} did not become live on port {self.ports.http} within"
                        f" {self.start_timeout:.0f} s. Last lines of its log ({self.log_path}):\n"
                        f"{self.log_tail()}",
                        f"Read the full log at {self.log_path}; a slow machine may need a longer"
                        " --start-timeout.")
                time.sleep(0.2)
        finally:
            client.close()

    # -- models --------------------------------------------------------------------------------
    def load(self, models: Iterable) -> list[ModelStatus]:
        """Load each model (a layout.BuiltModel) through the model-control API; one status each,
        in the order given. Up to LOAD_THREADS load at once (each Python-backend instance starts
        a process that imports torch: a repository of many models loads ~2x faster on 2 cores);
        what is refused before loading (no backend, INTER_OP_THREAD_COUNT twice) is decided in
        order first."""
        from concurrent.futures import ThreadPoolExecutor

        models = list(models)
        statuses: list[ModelStatus | None] = []
        for model in models:
            missing = self.missing_backend_reason(model.backend) or self.unsupported_reason(model)
            statuses.append(ModelStatus(model.name, model.backend, SKIPPED, missing) if missing
                            else self._inter_op_refusal(model))
        todo = [i for i, s in enumerate(statuses) if s is None]
        with ThreadPoolExecutor(max_workers=max(1, min(LOAD_THREADS, len(todo)))) as pool:
            for i, status in zip(todo, pool.map(lambda i: self._load_with_client(models[i]),
                                                todo)):
                statuses[i] = status
        return statuses

    def _load_with_client(self, model) -> ModelStatus:
        client = self._client(self.load_timeout)  # one per thread: a client is not thread-safe
        try:
            return self._load_one(client, model)
        finally:
            client.close()

    def _inter_op_refusal(self, model) -> ModelStatus | None:
        """The PyTorch backend applies INTER_OP_THREAD_COUNT with at::set_num_interop_threads,
        which works once per process: a second load that sets it (another model, or the same one
        again) aborts the whole server. Refuse that load instead."""
        try:
            sets_it = model.backend == "pytorch" and INTER_OP in model.config.parameters
        except GenRepoError:  # no readable local config (a remote repository): nothing to check
            return None
        if not sets_it:
            return None
        if self._inter_op_by is None:
            self._inter_op_by = model.name
            return None
        return ModelStatus(
            model.name, model.backend, FAILED,
            f"it sets {INTER_OP}, which {self._inter_op_by} already set in this server: the PyTorch"
            " backend can apply it once per process, and a second load aborts the server",
            f"Remove {INTER_OP} from the config.pbtxt of all but one libtorch model (gen-repo"
            " never writes it), or serve that model in another server.")

    def _load_one(self, client, model, config: str | None = None) -> ModelStatus:
        from tritonclient.utils import InferenceServerException

        backend = model.backend
        found = model.file_problems()
        if found:  # changed, added, missing or unrecorded files: not loaded
            return ModelStatus(model.name, backend, FAILED, *manifest.refusal(model, found))
        start = time.perf_counter()
        progress.info(f"loading {model.name} ...")
        try:
            client.load_model(model.name, config=config, headers=self.control_headers)
            status = ModelStatus(model.name, backend, READY)
            self._loaded[model.name] = model
            self._stubs[model.name] = self._stubs_of(model.name)
        except Exception as e:  # an error answer, or none in time: this model only
            self._stubs.pop(model.name, None)
            if self.exit_code() is not None:
                raise self._died(f"while loading {model.name}") from e
            if isinstance(e, InferenceServerException):
                state, reason, tip = load_failure(backend, clean_load_error(e.message() or str(e)))
            else:
                state, tip = FAILED, None
                reason = (f"no answer within {self.load_timeout:.0f} s while loading"
                          f" ({type(e).__name__}: {e}); see {self.log_path}")
            status = ModelStatus(model.name, backend, state, reason, tip)
        progress.info(f"loading {model.name}: {status.state} in"
                      f" {time.perf_counter() - start:.1f} s")
        return status

    def unload(self, name: str) -> None:
        """Unload one model (its instances stop); the server's error if it cannot."""
        self._stubs.pop(name, None)
        client = self._client(self.load_timeout)
        try:
            client.unload_model(name, headers=self.control_headers)
        finally:
            client.close()

    def check_running(self) -> None:
        """Raise ServerError if the server has stopped on its own."""
        if self.exit_code() is not None:
            raise self._died("unexpectedly")

    def is_live(self, timeout: float = 3.0) -> bool:
        """Whether the server answers its liveness check within ``timeout`` seconds."""
        if self.exit_code() is not None:
            return False
        client = self._client(timeout)
        try:
            return bool(client.is_server_live())
        except Exception:  # refused, reset, timed out: not answering
            return False
        finally:
            client.close()

    def restart(self, hung: bool = False) -> list[ModelStatus]:
        """Start the server again after it died on its own (or, ``hung``, stopped answering:
        it is killed at once, without a graceful stop it would not perform), and load again the
        models it had loaded; their statuses.

        One gRPC request can abort a whole Triton 24.10 server: a dim below -1 whose byte size
        wraps around to the payload's length passes the core's checks, and the PyTorch backend's
        tensor creation throws where nothing catches it (std::terminate, SIGABRT).
        """
        models = list(self._loaded.values())
        if hung:
            self._kill()
        self._stop()  # reap it and whatever it left behind (its stubs)
        self._loaded, self._stubs, self._inter_op_by = {}, {}, None
        self._boot("restarting")
        return self.load(models)

    def revive(self) -> list[ModelStatus]:
        """Load again each model one of whose Python-backend stub processes has died; their
        statuses (none when every stub runs).

        Triton 24.10 neither restarts a dead stub nor marks its model unready: each request the
        dead instance takes fails with "Stub process '<instance>' is not healthy." A plain
        load_model of the unchanged model is a no-op, so the model's own config goes back with
        one more parameter: that makes Triton build new instances while the old ones serve. The
        old instances are never released (the dead stub's requests never complete), so a
        survivor's memory stays until the server stops.
        """
        dead = [name for name, procs in self._stubs.items()
                if not all(_running(p) for p in procs)]
        statuses = []
        if not dead:
            return statuses
        from tritonclient.utils import InferenceServerException

        client = self._client(self.load_timeout)
        try:
            for name in dead:
                if not self._still_loaded(client, name):
                    continue
                progress.warn(f"a Python-backend process of {name} died (Triton does not restart"
                              f" it); loading {name} again")
                try:
                    config = client.get_model_config(name)
                except InferenceServerException:  # unloaded meanwhile
                    if not self._still_loaded(client, name):
                        continue
                    raise
                config.setdefault("parameters", {})["gen_repo_revived"] = {
                    "string_value": time.strftime("%Y-%m-%dT%H:%M:%S")}
                statuses.append(self._load_one(client, self._loaded[name], json.dumps(config)))
        finally:
            client.close()
        return statuses


    def forget_dead_stubs(self) -> None:
        """Stop watching the models whose stubs died and could not be loaded again (revive
        would otherwise try them every half second); they stay as the server has them."""
        for name, procs in list(self._stubs.items()):
            if not all(_running(p) for p in procs):
                self._stubs.pop(name)

    def _still_loaded(self, client, name: str) -> bool:
        """Whether the server still has model ``name`` loaded. A model that someone unloaded
        through the model-control API (which needs the control key) is reported and forgotten:
        its processes ended because it was unloaded, not because they died."""
        from tritonclient.utils import InferenceServerException

        try:
            index = client.get_model_repository_index(headers=self.control_headers)
        except InferenceServerException:
            return True  # the server does not say: try to reload
        state = next((m.get("state") for m in index if m.get("name") == name), None)
        if state in ("READY", "LOADING"):
            return True
        progress.warn(f"{name} was unloaded by a model-control request (it is {state or 'gone'}"
                      " on the server); gen-repo serve does not load it again, the other models"
                      " keep serving")
        self._stubs.pop(name, None)
        self._loaded.pop(name, None)
        return False


# ---------------------------------------------------------------------------------------------
# the tritonserver bundled with nvidia-pytriton


def server_args(repo: str, ports: Ports, backend_dir: str | None = None, *, listen: str,
                control_key: str) -> list[str]:
    """tritonserver flags (without the binary), shared by the embedded server and the container:
    explicit model control, restricted to requests that carry ``control_key``; HTTP, gRPC and
    metrics bound to ``listen``."""
    args = [f"--model-repository={repo}"]
    if backend_dir:
        args.append(f"--backend-directory={backend_dir}")
    return args + ["--model-control-mode=explicit", *control.server_flags(control_key),
                   *control.address_flags(listen),
                   f"--http-port={ports.http}", f"--grpc-port={ports.grpc}",
                   f"--metrics-port={ports.metrics}", "--log-verbose=0",
                   f"--exit-timeout-secs={EXIT_TIMEOUT_S}"]


class EmbeddedServer(TritonServer):
    """The tritonserver of the nvidia-pytriton wheel, as a child process in its own session."""

    kind = "tritonserver (embedded)"
    release = EMBEDDED_RELEASE

    def __init__(self, repo, ports: Ports = Ports(), log_path=None,
                 backend_dirs: Sequence[str | Path] | None = None, **kw):
        """``backend_dirs``: extra backend directories; None = those GEN_REPO_BACKEND_DIRECTORY
        names (none when unset)."""
        super().__init__(repo, ports, log_path, **kw)
        self.install = TritonInstall.locate()
        if backend_dirs is None:
            backend_dirs = default_backend_dirs()
        self.backend_dir = merged_backend_dir(bundled_backend_dir(self.install), backend_dirs)
        found = backends_in(self.backend_dir)
        self.backends = set(found) | BUILTIN_BACKENDS
        # A PyTorch backend built against pip's torch finds libtorch.so only on the library path.
        torch_lib = torch_lib_dir()
        self.library_dirs = [torch_lib] if torch_lib and any(
            links_this_torch(path.resolve()) for path in found.values()) else []
        self._proc: subprocess.Popen | None = None
        self._spawned: threading.Event | None = None  # set once the spawn has returned
        self._log: CappedLog | None = None

    def command(self) -> list[str]:
        return [str(self.install.binary), *server_args(
            str(self.repo), self.ports, str(self.backend_dir), listen=self.listen,
            control_key=self.control_key)]

    def missing_backend_reason(self, backend: str) -> str | None:
        if backend in self.backends:
            return None
        if backend == "pytorch":
            return PYTORCH_BACKEND_TIP
        have = ", ".join(sorted(self.backends))
        return (f"the server has no '{backend}' backend (it has {have}); pass"
                " --backend-directory DIR holding one, or serve with --docker")

    def _start(self) -> None:
        command = self.command()
        env = {**server_env(self.install, library_dirs=self.library_dirs), **self.env}
        if self.log_path.parent == cache_dir() / "logs":  # gen-repo's own folder, not a user's
            logs.prune(self.log_path.parent)
        failed: list[BaseException] = []
        spawned = self._spawned = threading.Event()

        def spawn():
            try:
                self._proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              start_new_session=True)
            except BaseException as e:  # raised again below, in the calling thread
                failed.append(e)
            finally:
                spawned.set()

        # Started from a thread: Python raises KeyboardInterrupt (Ctrl-C, SIGTERM handlers) in
        # the main thread only, so it never lands inside Popen after the fork, where the child
        # would run on unrecorded. An interrupted start stops the child: _stop waits for the
        # spawn first (on an Event: an interrupted Thread.join can mark a running thread done).
        threading.Thread(target=spawn, name="tritonserver-start", daemon=True).start()
        spawned.wait()
        if self._proc is not None and not failed:
            self._log = CappedLog(self.log_path)
            self._log.follow(self._proc.stdout)
            threading.Thread(target=self._kill_group_when_it_dies, args=(self._proc,),
                             name="tritonserver-guard", daemon=True).start()
        if failed:
            if isinstance(failed[0], OSError):
                raise ToolError(f"could not run {self.install.binary}: {failed[0]}.",
                                "Reinstall nvidia-pytriton (bash scripts/setup.sh).") from failed[0]
            raise failed[0]

    def _kill(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _kill_group_when_it_dies(self, proc: subprocess.Popen) -> None:
        """When the server exits on its own, kill its process group at once: its Python-backend
        stubs would live on as orphans holding the server's sockets, so a client call in flight
        (a reload) would wait out its whole timeout instead of failing."""
        while self._proc is proc:
            if _wait_exit_unreaped(proc.pid, 0.5, reaped=False):
                if self._proc is proc:  # not a stop of ours (that kills the group itself)
                    try:  # the leader is an unreaped zombie: its group id is still its own
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                return

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _stub_processes(self) -> dict:
        import psutil

        stubs = {}
        for p in _descendants(self.pid) if self.pid else []:
            try:
                if p.name() == STUB_PROCESS and _running(p):
                    stubs[p.pid] = p
            except psutil.Error:  # exited meanwhile
                pass
        return stubs

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def resident_bytes(self) -> int | None:
        """Resident memory of tritonserver and its Python-backend stub processes, in bytes
        (None when it is not running)."""
        import psutil

        if not self.pid:
            return None
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return None
        total = 0
        for proc in [root, *_descendants(self.pid)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # exited meanwhile
                pass
        return total

    def _stop(self) -> None:
        if self._spawned is not None:  # a start cut short: its child is stopped here
            self._spawned.wait(timeout=30)
        proc, self._proc = self._proc, None
        if proc is None:
            return
        helpers = _descendants(proc.pid)  # the Python-backend stubs
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                if not _wait_exit_unreaped(proc.pid, self.stop_timeout):
                    progress.warn(f"tritonserver did not stop within {self.stop_timeout:.0f} s"
                                  " of SIGINT; killing it.")
        finally:
            # Its process group still exists while the leader is an unreaped zombie, so this kills
            # any stub left behind without risking a recycled process id.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            _wait_gone(helpers, 10.0)
            if self._log:  # its pipe closes once the server and its stubs are gone
                self._log.wait(10.0)


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _running(proc) -> bool:
    """True while ``proc`` (a psutil.Process) runs: not exited, not an unreaped zombie."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list, timeout: float) -> None:
    """Wait until each process has exited (a zombie waiting for its reaper counts as exited)."""
    import psutil

    deadline = time.monotonic() + timeout
    for p in procs:
        while time.monotonic() < deadline:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)


def _wait_exit_unreaped(pid: int, timeout: float, reaped: bool = True) -> bool:
    """Wait until child ``pid`` has exited, leaving it unreaped (a zombie). True if it exited;
    one already reaped counts as exited when ``reaped``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return reaped
        time.sleep(0.05)
    return False
