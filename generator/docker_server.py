"""Serve a repository with the NGC tritonserver container through the docker SDK.

Same interface as ``generator.server.EmbeddedServer``. The repository is mounted read-only at
/models; the container is removed on exit (and on Ctrl-C); its log is streamed to a file.
The container's run arguments come from a pure function (``run_kwargs``) so they can be checked
without a docker engine.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import progress
from .errors import ServerError, SpecError, ToolError
from .server import Ports, TritonServer, server_args

DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # = the embedded server (2.51.0)
CONTAINER_REPO = "/models"
NETWORKS = ("host", "bridge")
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


def run_kwargs(repo: Path, ports: Ports, options: DockerOptions, name: str) -> dict:
    """Keyword arguments of ``docker.containers.run`` for a tritonserver serving ``repo``."""
    if options.network not in NETWORKS:
        raise SpecError(f"--docker-network '{options.network}' is not one of"
                        f" {', '.join(NETWORKS)}.",
                        "Use host (the server binds the host's ports) or bridge (ports published).")
    if not re.fullmatch(r"\d+(\.\d+)?[bkmgBKMG]?", options.shm_size):
        raise SpecError(f"--shm-size '{options.shm_size}' is not a size.", "Example: --shm-size 1g")
    inside = ports if options.network == "host" else Ports()
    kwargs = dict(
        image=options.image,
        command=["tritonserver", *server_args(CONTAINER_REPO, inside)],
        name=name,
        detach=True,
        auto_remove=False,  # removed by us after its log is saved
        volumes={str(Path(repo).resolve()): {"bind": CONTAINER_REPO, "mode": "ro"}},
        shm_size=options.shm_size,
        labels={"gen-repo": "serve"},
        device_requests=device_requests(options.gpus),
    )
    if options.network == "host":
        kwargs["network_mode"] = "host"
    else:
        kwargs["ports"] = {f"{inside.http}/tcp": ports.http, f"{inside.grpc}/tcp": ports.grpc,
                           f"{inside.metrics}/tcp": ports.metrics}
    return kwargs


def image_release(image: str) -> str | None:
    """'nvcr.io/nvidia/tritonserver:24.10-py3' -> '24.10' (None for other images)."""
    m = re.search(r"tritonserver:(\d\d\.\d\d)-py3", image)
    return m.group(1) if m else None


def _major_minor(version: str) -> str:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return f"{m.group(1)}.{m.group(2)}" if m else ""


def compatibility_warnings(models, image: str) -> list[str]:
    """Warnings for models the image may not load: torch version skew, no torch for Python."""
    release = image_release(image)
    if release is None:
        return []
    image_torch = IMAGE_TORCH.get(release)
    warnings = []
    for m in models:
        built = (m.record.get("versions") or {}).get("torch", "")
        if m.backend == "pytorch" and image_torch and built \
                and _major_minor(built) != image_torch:
            warnings.append(
                f"{m.name} was exported with torch {built}, but {image} has libtorch"
                f" {image_torch}; TorchScript from a newer torch may not load in an older one."
                " Pick a matching release with --image, or rebuild with that torch version.")
        elif m.backend == "python":
            warnings.append(
                f"{m.name} runs on the Python backend, which needs"
                f" torch{'==' + built if built else ''}"
                f" inside the container; the stock {image} has none, so it will fail to load."
                " Build an image FROM it with `pip install torch` and pass it with --image.")
    return warnings


class DockerServer(TritonServer):
    kind = "tritonserver (docker)"

    def __init__(self, repo, ports: Ports = Ports(), log_path=None,
                 options: DockerOptions = DockerOptions(), **kw):
        super().__init__(repo, ports, log_path, **kw)
        self.options = options
        self.name = f"gen-repo-triton-{ports.http}-{int(time.time())}"
        self._kwargs = run_kwargs(self.repo, ports, options, self.name)  # validate early
        self._engine = None
        self._container = None
        self._log_thread: threading.Thread | None = None

    def _docker(self):
        tip = ("Start a docker engine (e.g. `sudo systemctl start docker`; check with"
               " `docker info`), or serve without --docker (the embedded server runs the Python"
               " backend models).")
        try:
            import docker
            from docker.errors import DockerException
        except ImportError as e:
            raise ToolError("--docker needs the docker Python SDK (`pip install docker`).",
                            tip) from e
        try:
            client = docker.from_env(timeout=30)
            client.ping()
        except DockerException as e:
            raise ToolError(f"no docker engine is reachable: {e}.", tip) from e
        return client

    def _ensure_image(self, client) -> None:
        from docker.errors import DockerException, ImageNotFound

        try:
            client.images.get(self.options.image)
            return
        except ImageNotFound:
            pass
        try:
            with progress.step(f"pulling {self.options.image} (several GB the first time)"):
                client.images.pull(self.options.image)
        except DockerException as e:
            raise ToolError(f"could not pull image {self.options.image}: {e}.",
                            f"Pull it yourself (`docker pull {self.options.image}`) or pass a"
                            " local image with --image.") from e

    def _start(self) -> None:
        from docker.errors import DockerException

        self._engine = self._docker()
        self._ensure_image(self._engine)
        try:
            self._container = self._engine.containers.run(**self._kwargs)
        except DockerException as e:
            raise ServerError(f"could not start container from {self.options.image}: {e}.",
                              "Check `docker info`; with --gpus the NVIDIA container toolkit must"
                              " be installed.") from e
        self._log_thread = threading.Thread(target=self._stream_logs, args=(self._container,),
                                            daemon=True)
        self._log_thread.start()

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

