"""Serve a repository with the NGC tritonserver container through the docker SDK.

Same interface as ``generator.serve.server.EmbeddedServer``. The repository is mounted read-only at
/models; the server binds the host's ports (host network); /dev/shm is sized for the Python
backend; extra environment variables are passed through; the container's log is streamed to a
file; the container is removed on exit, on Ctrl-C, and when starting it fails half-way.
The container's run arguments come from a pure function (``run_kwargs``) so they can be checked
without a docker engine. The backends the image has are read from it once it runs, so a model
whose backend the image lacks is SKIPPED with the reason instead of failing.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import progress, releases
from ..errors import ServerError, SpecError, ToolError
from ..repository.config import release_needs
from ..repository.layout import PACKED_ENV_PARAM
from ..repository.s3 import is_s3_url
from . import control
from .arguments import complete_configs, server_args
from .lifecycle import BUILTIN_BACKENDS, TritonServer
from .ports import Ports

DEFAULT_IMAGE = releases.image(releases.EMBEDDED_RELEASE)  # the embedded server's release
CONTAINER_REPO = "/models"
CONTAINER_BACKENDS = "/opt/tritonserver/backends"
NETWORKS = ("host", "bridge")
PULL = ("missing", "never")
DOCKERFILE_TIP = ("build one FROM it with the project's docker/Dockerfile (`docker build -t"
                  " gen-repo-triton --build-arg BASE_IMAGE=<image> docker/`) and pass it with"
                  " --image, or pack torch into the model with `gen-repo pack-env`")
# torch (major.minor) of the PyTorch backend in each NGC tritonserver release, per NVIDIA's
# Frameworks Support Matrix. The stock image has no torch for the Python backend.
IMAGE_TORCH = {
    "24.01": "2.2", "24.02": "2.3", "24.03": "2.3", "24.04": "2.3", "24.05": "2.4",
    "24.06": "2.4", "24.07": "2.4", "24.08": "2.5", "24.09": "2.5", "24.10": "2.5",
    "24.11": "2.6", "24.12": "2.6", "25.01": "2.6",
}


@dataclass(frozen=True)
class DockerOptions:
    image: str = DEFAULT_IMAGE
    gpus: str | None = None  # None | "all" | "0,1"
    shm_size: str = "1g"
    network: str = "host"  # host: the server binds the host's ports; bridge: ports published
    env: tuple[str, ...] = ()  # "KEY=VALUE" for the container
    pull: str = "missing"  # missing: pull the image when the engine lacks it; never


def environment(env) -> dict[str, str]:
    """("KEY=VALUE", ...) -> {KEY: VALUE}; a SpecError naming the bad entry."""
    out = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise SpecError(f"--env '{item}' is not KEY=VALUE.",
                            "Example: --env OMP_NUM_THREADS=4 (repeat --env for more).")
        out[key] = value
    return out


def device_requests(gpus: str | None) -> list:
    """--gpus all | 0,1 -> docker DeviceRequests (what `docker run --gpus` sends)."""
    from docker.types import DeviceRequest

    if not gpus:
        return []
    text = gpus.strip()
    if text == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    ids = [g.strip() for g in text.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids):
        raise SpecError(f"--gpus '{gpus}' is neither 'all' nor a list of GPU ids.",
                        "Example: --gpus all, or --gpus 0,1.")
    return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def run_kwargs(repo: str | Path, ports: Ports, options: DockerOptions, name: str,
               env: dict[str, str] | None = None, *, listen: str = control.LOOPBACK,
               control_key: str | None = None) -> dict:
    """Keyword arguments of ``docker.containers.run`` for a tritonserver serving ``repo``.

    A local repository is mounted read-only at /models; an s3:// one is read by the server itself
    (``env`` carries its credentials). ``env`` and then ``options.env`` form the environment.
    The server is reachable at ``listen`` only: on the host network it binds that address; on a
    bridge it binds the container's interfaces and each port is published on ``listen``. Its
    model control needs ``control_key`` (a new random one when None).
    """
    if options.network not in NETWORKS:
        raise SpecError(f"--docker-network '{options.network}' is not one of"
                        f" {', '.join(NETWORKS)}.",
                        "Use host (the server binds the host's ports) or bridge (ports published).")
    if not re.fullmatch(r"\d+(\.\d+)?[bkmgBKMG]?", options.shm_size):
        raise SpecError(f"--shm-size '{options.shm_size}' is not a size.", "Example: --shm-size 1g")
    if options.pull not in PULL:
        raise SpecError(f"--pull '{options.pull}' is not one of {', '.join(PULL)}.",
                        "Use missing (pull when the engine lacks the image) or never.")
    host_network = options.network == "host"
    inside = ports if host_network else Ports()
    bind = listen if host_network else "0.0.0.0"  # a bridge: the container's own interfaces
    remote = is_s3_url(repo)
    kwargs = dict(
        image=options.image,
        command=["tritonserver", *server_args(str(repo) if remote else CONTAINER_REPO, inside,
                                              listen=bind,
                                              control_key=control_key or control.new_key(),
                                              auto_complete=not complete_configs(repo))],
        name=name,
        detach=True,
        auto_remove=False,  # removed by us after its log is saved
        volumes={} if remote else {str(Path(repo).resolve()): {"bind": CONTAINER_REPO,
                                                                 "mode": "ro"}},
        shm_size=options.shm_size,
        environment={**(env or {}), **environment(options.env)},
        labels={"gen-repo": "serve"},
        device_requests=device_requests(options.gpus),
    )
    if options.network == "host":
        kwargs["network_mode"] = "host"
    else:
        kwargs["ports"] = {f"{inside.http}/tcp": (listen, ports.http),
                           f"{inside.grpc}/tcp": (listen, ports.grpc),
                           f"{inside.metrics}/tcp": (listen, ports.metrics)}
    return kwargs


def image_release(image: str) -> str | None:
    """'nvcr.io/nvidia/tritonserver:24.10-py3' -> '24.10' (None for other images)."""
    m = re.search(r"tritonserver:(\d\d\.\d\d)-py3", image)
    return m.group(1) if m else None


def _major_minor(version: str) -> str:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return f"{m.group(1)}.{m.group(2)}" if m else ""


def packed_env(model) -> bool:
    """True when the model brings its own Python environment (gen-repo pack-env)."""
    try:
        return PACKED_ENV_PARAM in model.config.parameters
    except (AttributeError, OSError):
        return False


def release_warning(model, release: str) -> str | None:
    """A warning for a PyTorch-backend model whose config was written for another Triton
    release than ``release`` (the image's) and that this release still serves (one it cannot
    serve is SKIPPED with the route: lifecycle.unsupported_reason); None otherwise."""
    target = model.target_release
    if model.backend != "pytorch" or not target or target == release \
            or releases.missing(release, release_needs(model.config)):
        return None
    return (f"{model.name} was built for Triton {target} (--triton-release) and the image is"
            f" {release}: it serves the config as written, but a rebuild with --triton-release"
            f" {release} writes what {release} allows (docs/triton-releases.md).")


def compatibility_warnings(models, image: str) -> list[str]:
    """Warnings for models the image may not load or may serve otherwise than built for: torch
    version skew, no torch for Python, another target release."""
    release = image_release(image)
    if release is None:
        return []
    image_torch = IMAGE_TORCH.get(release)
    warnings = [w for w in (release_warning(m, release) for m in models) if w]
    for m in models:
        built = (m.record.get("versions") or {}).get("torch", "")
        if m.backend == "pytorch" and image_torch and built \
                and _major_minor(built) != image_torch:
            warnings.append(
                f"{m.name} was exported with torch {built}, but {image} has libtorch"
                f" {image_torch}; TorchScript from a newer torch may not load in an older one."
                " Pick a matching release with --image, or rebuild with that torch version.")
        elif m.backend == "python" and not packed_env(m):
            warnings.append(
                f"{m.name} runs on the Python backend, which needs"
                f" torch{'==' + built if built else ''}"
                f" inside the container; the stock {image} has none, so it will fail to load:"
                f" {DOCKERFILE_TIP}.")
    return warnings


def ensure_image(client, image: str, pull: str = "missing") -> None:
    """The image is on the engine, pulled if allowed; a ToolError saying how to get it if not."""
    from docker.errors import DockerException, ImageNotFound

    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    local = ("`python -m tests.docker_standin` (in a clone) builds this machine's gen-repo/* test"
             " images; "
             if image.startswith("gen-repo/") else "")
    if pull == "never":
        raise ToolError(f"image {image} is not on the docker engine, and --pull never forbids"
                        " pulling it.", f"{local}`docker images` lists the local images; pull it"
                        f" (`docker pull {image}`) or pass another --image.")
    try:
        with progress.step(f"pulling {image} (several GB the first time)"):
            client.images.pull(image)
    except DockerException as e:
        raise ToolError(f"image {image} is not on the docker engine, and pulling it failed:"
                        f" {' '.join(str(e).split())}.",
                        f"{local}pull it yourself (`docker pull {image}`), build it"
                        " (docker/Dockerfile), or pass a local image with --image; `docker"
                        " images` lists the local ones.") from e


class DockerServer(TritonServer):
    kind = "tritonserver (docker)"

    def __init__(self, repo, ports: Ports = Ports(), log_path=None,
                 options: DockerOptions = DockerOptions(), **kw):
        super().__init__(repo, ports, log_path, **kw)
        self.options = options
        self.release = image_release(options.image)
        self.name = f"gen-repo-triton-{ports.http}-{int(time.time())}"
        self._kwargs = run_kwargs(self.repo, ports, options, self.name, self.env,
                                  listen=self.listen,
                                  control_key=self.control_key)  # validate early
        self._engine = None
        self._container = None
        self._log_thread: threading.Thread | None = None
        self.backends: set[str] | None = None  # read from the image once it runs

    def _start(self) -> None:
        from docker.errors import DockerException

        from .docker_engine import connect

        self._engine = connect()
        try:
            ensure_image(self._engine, self.options.image, self.options.pull)
            try:
                self._container = self._engine.containers.create(**{
                    k: v for k, v in self._kwargs.items() if k != "detach"})
                self._container.start()
            except DockerException as e:
                raise ServerError(f"could not start a container from {self.options.image}:"
                                  f" {' '.join(str(e).split())}.",
                                  "Check `docker info`; with --gpus the NVIDIA container toolkit"
                                  " must be installed.") from e
            self._log_thread = threading.Thread(target=self._stream_logs,
                                                args=(self._container,), daemon=True)
            self._log_thread.start()
            self.backends = self._image_backends()
        except BaseException:  # Ctrl-C included: no container is left behind
            self._remove_by_name()
            self._container = None
            self._engine.close()
            self._engine = None
            raise

    def _remove_by_name(self) -> None:
        from docker.errors import DockerException

        try:
            self._engine.containers.get(self.name).remove(force=True)
        except DockerException:
            pass

    def _image_backends(self) -> set[str] | None:
        """Backends in the image's /opt/tritonserver/backends (None when it cannot be listed)."""
        try:
            code, out = self._container.exec_run(["ls", "-1", CONTAINER_BACKENDS])
        except Exception:
            return None
        if code != 0:
            return None
        return {line.strip() for line in out.decode(errors="replace").splitlines()
                if line.strip()} | BUILTIN_BACKENDS

    def missing_backend_reason(self, backend: str) -> str | None:
        if self.backends is None or backend in self.backends:
            return None
        have = ", ".join(sorted(self.backends))
        extra = (f"; the NGC image ({DEFAULT_IMAGE} or another release) has it"
                 if backend == "pytorch" else "")
        return (f"image {self.options.image} has no '{backend}' backend in {CONTAINER_BACKENDS}"
                f" (it has {have}){extra}")

    def _stream_logs(self, container) -> None:
        try:
            with open(self.log_path, "ab") as f:
                for chunk in container.logs(stream=True, follow=True):
                    f.write(chunk)
                    f.flush()
        except Exception:  # the container went away; the log so far is on disk
            pass

    def exit_code(self) -> int | None:
        if self._container is None:
            return None
        try:
            self._container.reload()
        except Exception:
            return -1
        if self._container.status in ("exited", "dead"):
            return int(self._container.attrs.get("State", {}).get("ExitCode", -1))
        return None

    def _stop(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        try:
            try:
                container.kill(signal="SIGINT")
            except Exception:
                pass  # already stopped
            try:
                container.wait(timeout=self.stop_timeout)
            except Exception:
                progress.warn(f"container {self.name} did not stop within"
                              f" {self.stop_timeout:.0f} s of SIGINT; killing it.")
        finally:
            try:
                container.remove(force=True)
            except Exception:
                pass
            if self._log_thread:
                self._log_thread.join(timeout=5)
            if self._engine is not None:
                self._engine.close()
                self._engine = None
