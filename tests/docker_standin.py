"""The docker engine and the images the docker tests serve with, made on this machine: no image
registry is reachable here and there is no NGC image. Test-only: the product connects to an engine
the user runs (generator/serve/docker_engine.py) and never builds these.

    ensure_engine()    a client of the engine that answers; when nothing answers and we are root:
                       install Debian's docker.io with apt-get if dockerd is missing, start dockerd,
                       wait for it
    ensure_images()    the images the tests serve with, in place of the NGC image:
                         base     Debian 12 made with debootstrap + `docker import` (no registry)
                         standin  base + what the NGC image gives us (docker/standin/Dockerfile)
                         torch    the project's docker/Dockerfile FROM the stand-in

Network rule: dockerd is started with ENGINE_FLAGS (no bridge, no iptables, no masquerading), and
every container and build uses the host's network; no private-range address is ever created.

Each image tag ends in a hash of everything that goes into it (Dockerfile, build arguments,
context files), so an image is built once and rebuilt only when an input changes. The engine's
data root stays where the engine keeps it (/var/lib/docker), outside any clone, so CI reuses it.
Run ``python -m tests.docker_standin`` (from the clone's root) to make the engine and the images
and print the tags.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from generator import progress
from generator.errors import GenRepoError, ToolError, log_tail
from generator.machine import cache_dir
from generator.serve.docker_engine import (ENGINE_FLAGS, SOCKET, EngineError, connect,
                                           engine_address)
from generator.serve.triton_install import TritonInstall

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
STANDIN_DOCKERFILE = DOCKER_DIR / "standin" / "Dockerfile"
REQUIREMENTS = ROOT / "requirements.txt"

APT_PACKAGES = ("docker.io",)
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
STANDIN_PYTHON = "3.11"  # python3 of Debian 12; the stub copied into the stand-in must match it
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PINNED = ("torch", "torchvision", "numpy")  # docker/Dockerfile's build arguments, from requirements


_STARTED: list = []  # dockerd processes started here


def docker_dir() -> Path:
    if not DOCKERFILE.is_file():
        raise ToolError(f"{DOCKERFILE} is missing; the docker images are built from a clone of"
                        " gen-repo.", "Run this from a clone of the gen-repo repository.")
    return DOCKER_DIR


def engine_logs_dir() -> Path:
    return cache_dir() / "docker"


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) < 300 else text[:300] + "..."


# ---------------------------------------------------------------------------------------------
# the engine


def _is_default_address() -> bool:
    return engine_address() in (f"unix://{SOCKET}", SOCKET)


def _dockerd() -> str | None:
    return shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), None)


def apt_install(packages, log_path: Path) -> None:
    """apt-get install (root only), output to ``log_path``; ToolError with its tail on failure."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with progress.step(f"installing {' '.join(packages)} with apt-get (log: {log_path})"):
        _run(["apt-get", "update", "-q"], log_path, "apt-get update", env=env)
        _run(["apt-get", "install", "-y", "-q", *packages], log_path,
             f"apt-get install {' '.join(packages)}", env=env)


def _run(cmd, log_path: Path, what: str, env=None, timeout: float | None = None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(map(str, cmd))}\n".encode())
        log.flush()
        try:
            code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ToolError(f"{what} failed: {e}.", f"See {log_path}.") from e
    if code != 0:
        raise ToolError(f"{what} failed with exit code {code}. Last lines of {log_path}:\n"
                        f"{log_tail(log_path, 15)}", f"Read the full log at {log_path}.")


def start_engine(log_path: Path, timeout: float = 60.0):
    """Start dockerd (as root) with the network rule's flags; wait until it answers."""
    dockerd = _dockerd()
    if dockerd is None:
        raise EngineError("dockerd is not installed.", "apt-get install docker.io (as root).")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [dockerd, *ENGINE_FLAGS, f"--host=unix://{SOCKET}"]
    with progress.step(f"starting the docker engine: {' '.join(cmd)} (log: {log_path})"):
        with open(log_path, "ab") as log:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            # its own session: it outlives this process, like the system service it stands for
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _STARTED.append(proc)  # not reaped by us: it keeps running after this process ends
        deadline, exited_at = time.monotonic() + timeout, None
        while True:
            try:
                return connect(timeout=5)
            except EngineError:
                pass
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now  # another dockerd holding the pid file may still come up
            if exited_at is not None and now - exited_at > 10:
                raise EngineError(
                    f"dockerd exited with status {proc.returncode}. Last lines of its log"
                    f" ({log_path}):\n{log_tail(log_path, 15)}",
                    f"Read {log_path}; another engine may hold /var/run/docker.pid.")
            if now > deadline:
                raise EngineError(
                    f"dockerd did not answer within {timeout:.0f} s. Last lines of its log"
                    f" ({log_path}):\n{log_tail(log_path, 15)}", f"Read {log_path}.")
            time.sleep(0.5)


def ensure_engine(install: bool = True, timeout: float = 60.0):
    """A client of a running engine: the one that answers, or one started here.

    Starting one needs root, and only happens for the default socket (DOCKER_HOST naming another
    engine is respected: its error is raised). dockerd is installed with apt-get when absent and
    ``install`` is true. The engine keeps running afterwards, like the system service it is.
    """
    try:
        return connect(timeout=10)
    except EngineError as unreachable:
        if not _is_default_address():
            raise
        if os.geteuid() != 0:
            raise EngineError(f"{unreachable.message} Starting one needs root, and this process"
                              f" runs as uid {os.geteuid()}.", unreachable.tip) from unreachable
    logs = engine_logs_dir()
    if _dockerd() is None:
        if not install:
            raise EngineError("no docker engine is reachable and dockerd is not installed.",
                              "apt-get install docker.io (as root).")
        apt_install(APT_PACKAGES, logs / "apt.log")
    return start_engine(logs / "dockerd.log", timeout)


# ---------------------------------------------------------------------------------------------
# images


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def tree_digest(root: Path) -> str:
    """Hash of a directory: relative paths, executable bits, contents (symlinks: their target)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            h.update(f"L {rel} {os.readlink(p)}\n".encode())
        elif p.is_file():
            h.update(f"F {rel} {p.stat().st_mode & 0o111:o}\n".encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        elif p.is_dir():
            h.update(f"D {rel}\n".encode())
    return h.hexdigest()[:12]


def image_exists(client, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
        return True
    except ImageNotFound:
        return False


def pinned_versions(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """{'torch': '2.15.0', 'torchvision': ..., 'numpy': ...} from requirements.txt's == pins."""
    pins = {}
    for line in requirements.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)", line)
        if m and m.group(1).lower() in PINNED:
            pins[m.group(1).lower()] = m.group(2)
    missing = [p for p in PINNED if p not in pins]
    if missing:
        raise ToolError(f"{requirements} pins no {', '.join(missing)} (name==version).",
                        "Pin them there; the docker image installs the same versions.")
    return pins


def dockerfile_build_args(pins: dict[str, str]) -> dict[str, str]:
    return {"TORCH_VERSION": pins["torch"], "TORCHVISION_VERSION": pins["torchvision"],
            "NUMPY_VERSION": pins["numpy"]}


def build_image(client, context: Path, tag: str, buildargs: dict, log_path: Path,
                what: str) -> None:
    """docker build (the engine's builder, host network), its output streamed to ``log_path``."""
    from docker.errors import DockerException

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with progress.step(f"building {what} {tag} (log: {log_path})"), open(log_path, "a") as log:
        log.write(f"\n=== docker build {context} -t {tag} {buildargs}\n")
        try:
            for chunk in client.api.build(path=str(context), tag=tag, buildargs=buildargs,
                                          network_mode="host", rm=True, forcerm=True,
                                          pull=False, decode=True):
                if "stream" in chunk:
                    log.write(chunk["stream"])
                    log.flush()
                if "error" in chunk:
                    log.write(f"ERROR: {chunk['error']}\n")
                    log.flush()
                    raise ToolError(f"docker build of {what} {tag} failed: "
                                    f"{_short(chunk['error'])}. Last lines of {log_path}:\n"
                                    f"{log_tail(log_path, 15)}",
                                    f"Read the full log at {log_path}.")
        except DockerException as e:
            raise ToolError(f"docker build of {what} {tag} failed: {_short(e)}.",
                            f"Read the log at {log_path}.") from e


def base_image_tag() -> str:
    recipe = f"debootstrap --variant=minbase {DEBIAN_SUITE} {DEBIAN_MIRROR}; docker import; v1"
    return f"gen-repo/debian:{DEBIAN_SUITE}-{digest(recipe)}"


def ensure_base_image(client, log_path: Path) -> str:
    """Debian 12 (minbase), made with debootstrap and imported: no registry is needed."""
    tag = base_image_tag()
    if image_exists(client, tag):
        return tag
    if os.geteuid() != 0:
        raise ToolError(f"image {tag} is missing, and making it (debootstrap) needs root.",
                        "Run as root once, or build it elsewhere and `docker load` it.")
    if shutil.which("debootstrap") is None:
        apt_install(["debootstrap"], log_path)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=_scratch()))
    try:
        rootfs = work / "rootfs"
        with progress.step(f"debootstrap {DEBIAN_SUITE} (log: {log_path})"):
            _run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR],
                 log_path, "debootstrap")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tarball = work / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], log_path,
             "tar of the debootstrap root")
        repo, _, version = tag.partition(":")
        with progress.step(f"importing {tag}"):
            client.api.import_image_from_file(str(tarball), repository=repo, tag=version)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not image_exists(client, tag):
        raise ToolError(f"docker import did not create {tag}.", f"See {log_path}.")
    return tag


def _scratch() -> Path:
    path = cache_dir() / "docker-context"
    path.mkdir(parents=True, exist_ok=True)
    return path


def assemble_standin_context(dest: Path, install: TritonInstall | None = None) -> Path:
    """The stand-in's build context (outside the clone): its Dockerfile, the wheel's tritonserver
    laid out like /opt/tritonserver of the NGC image, and the host's CA bundle."""
    install = install or TritonInstall.locate()
    stub = install.stub(STANDIN_PYTHON)
    if not stub.is_file():
        raise ToolError(f"nvidia-pytriton has no Python-backend stub for Python {STANDIN_PYTHON}"
                        f" ({stub}).", "Reinstall nvidia-pytriton==0.7.0.")
    if dest.exists():
        shutil.rmtree(dest)
    ts = dest / "tritonserver"
    (ts / "bin").mkdir(parents=True)
    shutil.copy2(install.binary, ts / "bin" / "tritonserver")
    shutil.copytree(install.libs, ts / "lib")
    shutil.copytree(install.python_backend, ts / "backends" / "python",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, ts / "backends" / "python" / "triton_python_backend_stub")
    for p in ts.rglob("*"):  # the wheel's files may lack read bits for others; docker keeps modes
        if p.is_file():
            p.chmod(p.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    ca = dest / "ca-certificates.crt"
    if HOST_CA_BUNDLE.is_file():
        shutil.copy2(HOST_CA_BUNDLE, ca)
    else:
        ca.write_text("")
    shutil.copy2(STANDIN_DOCKERFILE, dest / "Dockerfile")
    return dest


def ensure_standin_image(client, base: str, log_path: Path) -> str:
    work = Path(tempfile.mkdtemp(prefix="standin-", dir=_scratch()))  # one per process
    try:
        context = assemble_standin_context(work / "context")
        tag = f"gen-repo/tritonserver-standin:{digest(base, tree_digest(context))}"
        if not image_exists(client, tag):
            build_image(client, context, tag, {"BASE_IMAGE": base}, log_path,
                        "the NGC stand-in (no torch)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag


def torch_image_tag(base: str, pins: dict[str, str]) -> str:
    args = dockerfile_build_args(pins)
    return (f"gen-repo/tritonserver-torch:"
            f"{digest(base, DOCKERFILE.read_bytes(), sorted(args.items()))}")


def ensure_torch_image(client, base: str, log_path: Path) -> str:
    """The project's docker/Dockerfile, built FROM ``base`` with the pinned torch."""
    docker_dir()
    pins = pinned_versions()
    tag = torch_image_tag(base, pins)
    if not image_exists(client, tag):
        build_image(client, DOCKER_DIR, tag, {"BASE_IMAGE": base, **dockerfile_build_args(pins)},
                    log_path, f"docker/Dockerfile (torch {pins['torch']}) FROM {base}")
    return tag


@dataclass(frozen=True)
class Images:
    base: str
    standin: str  # the NGC stand-in: tritonserver + Python backend, no torch
    torch: str | None  # docker/Dockerfile FROM the stand-in


def ensure_images(client, torch: bool = True) -> Images:
    """Build what is missing (tags carry a hash of their inputs); the tags."""
    docker_dir()
    log = engine_logs_dir() / "build.log"
    base = ensure_base_image(client, log)
    standin = ensure_standin_image(client, base, log)
    return Images(base, standin, ensure_torch_image(client, standin, log) if torch else None)


def main(argv: list[str] | None = None) -> int:
    """python -m tests.docker_standin [--no-torch]: engine + images; prints the tags."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        client = ensure_engine()
        images = ensure_images(client, torch="--no-torch" not in argv)
    except GenRepoError as e:
        print(f"ERROR: {e.message}", file=sys.stderr)
        if e.tip:
            print(f"TIP: {e.tip}", file=sys.stderr)
        return e.exit_code
    print(f"base     {images.base}\nstandin  {images.standin}\ntorch    {images.torch}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
