"""What tritonserver is started with: its flags, shared by the embedded server and the container,
and the embedded server's environment (library path, PATH, extra variables).

    server_args(repo, ports, backend_dir, listen=..., control_key=...)  # the flags, no binary
    torch_library_dirs(backends_in(backend_dir))   # this torch's lib/, when a backend links it
    embedded_env(install, library_dirs, extra)     # the embedded server's environment
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from . import control
from .ports import Ports
from .triton_install import TritonInstall, links_this_torch, server_env, torch_lib_dir

EXIT_TIMEOUT_S = 10  # --exit-timeout-secs: how long tritonserver waits for in-flight requests


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


def torch_library_dirs(backends: Mapping[str, Path]) -> list[Path]:
    """[this environment's torch/lib] when one of ``backends`` ({name: directory}) is a PyTorch
    backend built against pip's torch (it finds libtorch.so only on the library path); else []."""
    torch_lib = torch_lib_dir()
    return [torch_lib] if torch_lib and any(
        links_this_torch(path.resolve()) for path in backends.values()) else []


def embedded_env(install: TritonInstall, library_dirs: Sequence[Path],
                 extra: Mapping[str, str]) -> dict[str, str]:
    """The embedded tritonserver's environment: this process's, with the wheel's libraries and
    ``library_dirs`` on the library path (triton_install.server_env), then ``extra`` (e.g. S3
    credentials) on top."""
    return {**server_env(install, library_dirs=library_dirs), **extra}
