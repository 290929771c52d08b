"""The lifecycle every tritonserver shares, the embedded one and the container: ports check, start,
wait until live, load the models one by one, watch their Python-backend stubs, restart, stop.

    class EmbeddedServer(TritonServer):   # server.py; DockerServer in docker_server.py
        def _start(self): ...              # a subclass starts and stops its process
        def _stop(self): ...

The models load in explicit model-control mode, each on its own, so one model that cannot load is
a FAILED ``ModelStatus`` (with the server's reason, load_errors.py) and never takes the others
down; a model this server cannot run is SKIPPED before it is tried.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .. import progress, releases
from ..errors import GenRepoError, ServerError, ServerTimeoutError, log_tail
from ..machine import cache_dir, cores
from ..repository import manifest
from ..repository.config import release_needs
from ..repository.s3 import is_s3_url
from ..status import FAILED, READY, SKIPPED
from . import control
from .arguments import EXIT_TIMEOUT_S
from .load_errors import clean_load_error, load_failure
from .ports import Ports
from .processes import dead_children, running, stubs_of

BUILTIN_BACKENDS = {"ensemble"}  # platforms the server core handles without a backend library
# models loaded at once: each Python-backend instance's stub imports torch (CPU-bound, ~2 s)
LOAD_THREADS = min(4, max(2, cores()))
INTER_OP = "INTER_OP_THREAD_COUNT"  # a PyTorch-backend parameter that may be applied once


@dataclass(frozen=True)
class ModelStatus:
    name: str
    backend: str
    state: str  # READY | FAILED | SKIPPED
    reason: str = ""
    tip: str | None = None  # what to do about a FAILED / SKIPPED model, when gen-repo knows


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
        """Why this server's release cannot serve ``model``'s config (what of the release table
        it needs that the release lacks), with the route; None when it can or it is unknown."""
        if not self.release:
            return None
        try:
            lacking = releases.missing(self.release, release_needs(model.config))
        except GenRepoError:  # no readable local config: the server will say
            return None
        if not lacking:
            return None
        need = max(f.since for f in lacking)
        newer = f"serve it with Triton {need} or newer (--docker --image {releases.image(need)})"
        if releases.TORCH_AOTI in lacking:
            route = (f"{newer}, or build the python-aoti variant, which serves the same .pt2 on"
                     " the Python backend")
        elif releases.PYTORCH_BF16 in lacking:
            route = f"{newer}, or serve the python variant, which carries BF16 on every release"
        else:  # batching: a config written for this release serves batch 1
            route = (f"rebuild it for this server (gen-repo build --triton-release"
                     f" {self.release}), or {newer}")
        return (f"its config uses {' and '.join(f.what for f in lacking)}, which this server"
                f" (Triton {self.release}) lacks: {route}")

    def _stub_processes(self) -> dict:
        """{pid: psutil.Process} of the running Python-backend stubs ({} when not visible)."""
        return {}

    def _stubs_of(self, name: str) -> list:
        """The running stub processes of model ``name`` (processes.stubs_of)."""
        return stubs_of(self._stub_processes().values(), name)

    def dead_stubs(self) -> int:
        """How many of the server's processes died and wait for it to reap them: Triton 24.10
        never reaps a dead Python-backend stub, and the instance it served keeps its memory
        until the server stops. 0 where the processes are out of sight (a container)."""
        pid = getattr(self, "pid", None)
        return dead_children(pid) if pid else 0

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
            f"{self.kind} exited with status {self.exit_code()} {during}; its log:"
            f" {self.log_path}" + (f". Last lines:\n{tail}" if tail else " (empty)."),
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
        for model in models:  # loaded in the order given, whichever was READY first
            if model.name in self._loaded:
                self._loaded[model.name] = self._loaded.pop(model.name)
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
                if not all(running(p) for p in procs)]
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
            if not all(running(p) for p in procs):
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
