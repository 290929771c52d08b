"""A real Triton server for a model repository: one context manager owns its whole lifecycle.

    with EmbeddedServer(repo, Ports(8000, 8001, 8002)) as server:
        statuses = server.load(list_models(repo))  # a ModelStatus per model; one bad model
                                                    # never stops the others

``EmbeddedServer`` runs the tritonserver bundled in the ``nvidia-pytriton`` wheel (release 24.10,
Python backend only); ``generator.serve.docker_server.DockerServer`` runs the NGC container. Both
are a ``lifecycle.TritonServer``: they start the server in explicit model-control mode and load the
models one by one, so one model that cannot load is reported as FAILED (with the server's reason)
and never takes the others down. On exit the server gets SIGINT, then SIGKILL for its whole
process group (the Python-backend stubs included) if it has not stopped in time. Its flags and
environment come from arguments.py, its processes are counted and killed by processes.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Sequence

from .. import progress
from ..errors import ToolError
from ..machine import cache_dir
from . import logs
from .arguments import complete_configs, embedded_env, server_args, torch_library_dirs
from .lifecycle import BUILTIN_BACKENDS, TritonServer
from .logs import CappedLog
from .ports import Ports
from .processes import (descendants, kill_group, kill_group_when_it_dies, raise_descriptor_limit,
                        resident_bytes, stub_processes, wait_exit_unreaped, wait_gone)
from . import triton_install
from .triton_install import (BACKEND_DIRS_ENV, EMBEDDED_RELEASE, GET_PYTORCH_BACKEND,
                             TritonInstall, backends_in, bundled_backend_dir, default_backend_dirs,
                             merged_backend_dir)

# The reason of a SKIPPED libtorch model (serve prints once, beside it, how to get a backend:
# GET_PYTORCH_BACKEND).
PYTORCH_BACKEND_TIP = (
    "the embedded tritonserver (from the nvidia-pytriton wheel) has no PyTorch backend: pass"
    f" --backend-directory DIR (or set {BACKEND_DIRS_ENV}=DIR) with a pytorch/ backend, or serve"
    " this model with --docker (the NGC tritonserver image has one)")


class EmbeddedServer(TritonServer):
    """The tritonserver of the nvidia-pytriton wheel, as a child process in its own session."""

    kind = "tritonserver (embedded)"
    release = EMBEDDED_RELEASE

    def __init__(self, repo, ports: Ports = Ports(), log_path=None,
                 backend_dirs: Sequence[str | Path] | None = None,
                 auto_complete: bool | None = None, **kw):
        """``backend_dirs``: extra backend directories; None = those GEN_REPO_BACKEND_DIRECTORY
        names, or when it is unset /opt/tritonserver/backends if it holds a PyTorch backend.
        ``auto_complete``: the backends' config auto-completion; None = off where every model
        of the repository was built by gen-repo (arguments.complete_configs), at each start."""
        super().__init__(repo, ports, log_path, **kw)
        self.auto_complete = auto_complete
        self.install = TritonInstall.locate()
        # where the extra backend directories come from, or why there are none (for serve)
        system = triton_install.SYSTEM_BACKENDS
        self.backend_dirs_from = (
            ("--backend-directory", "none given") if backend_dirs is not None else
            (BACKEND_DIRS_ENV, f"{BACKEND_DIRS_ENV} is set empty")
            if BACKEND_DIRS_ENV in os.environ else
            (f"{system}, where Triton keeps its backends",
             f"{BACKEND_DIRS_ENV} is unset and {system} holds no PyTorch backend"))
        if backend_dirs is None:
            backend_dirs = default_backend_dirs()
        self.extra_backend_dirs = tuple(str(d) for d in backend_dirs)
        self.backend_dir = merged_backend_dir(bundled_backend_dir(self.install), backend_dirs)
        found = backends_in(self.backend_dir)
        self.backends = set(found) | BUILTIN_BACKENDS
        # A PyTorch backend built against pip's torch finds libtorch.so only on the library path.
        self.library_dirs = torch_library_dirs(found)
        self._proc: subprocess.Popen | None = None
        self._spawned: threading.Event | None = None  # set once the spawn has returned
        self._log: CappedLog | None = None

    def command(self) -> list[str]:
        return [str(self.install.binary), *server_args(
            str(self.repo), self.ports, str(self.backend_dir), listen=self.listen,
            control_key=self.control_key,
            auto_complete=not complete_configs(self.repo) if self.auto_complete is None
            else self.auto_complete)]

    def backends_note(self, needs_pytorch: bool = False) -> tuple[str, str | None]:
        """What serve says about its backends: the line naming the backend directories used and
        where the PyTorch backend comes from, and the TIP on getting one when there is none and
        ``needs_pytorch`` (a libtorch model is to be served)."""
        found = backends_in(self.backend_dir)
        source, why_none = self.backend_dirs_from
        if self.extra_backend_dirs:
            where = (f"backend directories: {', '.join(self.extra_backend_dirs)} (from {source})"
                     " and the Python backend of nvidia-pytriton")
        else:
            where = f"backend directory: the Python backend of nvidia-pytriton only ({why_none})"
        if "pytorch" in found:
            return f"{where}; PyTorch backend: {found['pytorch'].resolve()}", None
        tip = (f"there is no PyTorch backend, so libtorch models are SKIPPED; to serve them,"
               f" {GET_PYTORCH_BACKEND}.") if needs_pytorch else None
        return f"{where}; no PyTorch backend", tip

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
        env = embedded_env(self.install, self.library_dirs, self.env)
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
            raise_descriptor_limit(self._proc.pid)
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
            kill_group(self._proc.pid)

    def _kill_group_when_it_dies(self, proc: subprocess.Popen) -> None:
        """When the server exits on its own, kill its process group at once (its orphaned stubs
        would hold the server's sockets: processes.kill_group_when_it_dies)."""
        kill_group_when_it_dies(proc, lambda: self._proc is proc)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _stub_processes(self) -> dict:
        return stub_processes(self.pid)

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def resident_bytes(self) -> int | None:
        """Resident memory of tritonserver and its Python-backend stub processes, in bytes
        (None when it is not running)."""
        return resident_bytes(self.pid)

    def _stop(self) -> None:
        if self._spawned is not None:  # a start cut short: its child is stopped here
            self._spawned.wait(timeout=30)
        proc, self._proc = self._proc, None
        if proc is None:
            return
        helpers = descendants(proc.pid)  # the Python-backend stubs
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                if not wait_exit_unreaped(proc.pid, self.stop_timeout):
                    progress.warn(f"tritonserver did not stop within {self.stop_timeout:.0f} s"
                                  " of SIGINT; killing it.")
        finally:
            # Its process group still exists while the leader is an unreaped zombie, so this kills
            # any stub left behind without risking a recycled process id.
            kill_group(proc.pid)
            proc.wait()
            wait_gone(helpers, 10.0)
            if self._log:  # its pipe closes once the server and its stubs are gone
                self._log.wait(10.0)
