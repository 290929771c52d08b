"""What tritonserver is started with: its flags, shared by the embedded server and the container,
and the embedded server's environment (library path, PATH, extra variables).

    server_args(repo, ports, backend_dir, listen=..., control_key=...)  # the flags, no binary
    torch_library_dirs(backends_in(backend_dir))   # this torch's lib/, when a backend links it
    embedded_env(install, library_dirs, extra)     # the embedded server's environment
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..errors import GenRepoError
from . import control
from .ports import Ports
from .triton_install import TritonInstall, links_this_torch, server_env, torch_lib_dir

EXIT_TIMEOUT_S = 10  # --exit-timeout-secs: how long tritonserver waits for in-flight requests


# Off where every model's config is complete: the Python backend otherwise starts one more
# process per model load to ask its model.py to complete the config (it imports torch: ~2.4 s of a
# resnet50 load to READY here, 3.8 s -> 1.4 s with one instance).
NO_AUTO_COMPLETE = "--disable-auto-complete-config"


def complete_configs(repo) -> bool:
    """True for a local repository of at least one model, every one built by gen-repo (its
    config.pbtxt complete: nothing for a backend to fill in)."""
    from ..repository import layout

    try:
        models = layout.list_models(repo)
    except (OSError, GenRepoError):  # remote (S3), missing or empty: leave it to the backends
        return False
    return all(m.built_by_gen_repo for m in models)


def server_args(repo: str, ports: Ports, backend_dir: str | None = None, *, listen: str,
                control_key: str, auto_complete: bool = True) -> list[str]:
    """tritonserver flags (without the binary), shared by the embedded server and the container:
    explicit model control, restricted to requests that carry ``control_key``; HTTP, gRPC and
    metrics bound to ``listen``; the backends' config auto-completion off unless
    ``auto_complete``."""
    args = [f"--model-repository={repo}"]
    if backend_dir:
        args.append(f"--backend-directory={backend_dir}")
    return args + ["--model-control-mode=explicit", *control.server_flags(control_key),
                   *control.address_flags(listen),
                   f"--http-port={ports.http}", f"--grpc-port={ports.grpc}",
                   f"--metrics-port={ports.metrics}", "--log-verbose=0",
                   f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
                   *([] if auto_complete else [NO_AUTO_COMPLETE])]


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
