"""The tritonserver of the nvidia-pytriton wheel: where it is, its backend directory, its env.

What works on a plain machine (no container): copy the bundled Python backend into a backend
directory, add the Python-backend stub built for the running Python, put this interpreter's
libpython and the wheel's libraries on LD_LIBRARY_PATH, and this environment's bin first on PATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import SpecError, ToolError
from ..machine import cache_dir
from ..releases import EMBEDDED_RELEASE, image


# The default of --backend-directory for serve, bench and demo: directories of extra Triton backends
# (a PyTorch backend), separated by ':'. Set it once, e.g. to a copy of the NGC image's
# /opt/tritonserver/backends or to a backend built against this environment's torch; set it
# empty for none at all.
BACKEND_DIRS_ENV = "GEN_REPO_BACKEND_DIRECTORY"
# Where Triton keeps its backends (its own install, the NGC image): used when the variable is
# unset and it holds a PyTorch backend.
SYSTEM_BACKENDS = Path("/opt/tritonserver/backends")
NGC_IMAGE = image(EMBEDDED_RELEASE)  # the embedded server's release, as an NGC image
# How to get a PyTorch backend for the embedded server: the one of the same Triton release.
GET_PYTORCH_BACKEND = (
    f"copy the backends of the NGC image of the same Triton release (`docker create --name tb"
    f" {NGC_IMAGE} && docker cp tb:{SYSTEM_BACKENDS} DIR && docker rm tb`), then pass"
    f" --backend-directory DIR or set {BACKEND_DIRS_ENV}=DIR; or serve with --docker")


def has_pytorch_backend(directory: Path) -> bool:
    """True when ``directory`` (a backend directory) holds a PyTorch backend."""
    try:
        return directory.is_dir() and "pytorch" in backends_in(directory.resolve())
    except OSError:  # unreadable: as good as absent
        return False


def default_backend_dirs() -> tuple[str, ...]:
    """The backend directories used when none is given: those ``GEN_REPO_BACKEND_DIRECTORY``
    names when it is set (none when it is set empty); else ``/opt/tritonserver/backends`` (the
    layout of Triton's own install and of the NGC image) when it holds a PyTorch backend."""
    if BACKEND_DIRS_ENV in os.environ:
        return tuple(d for d in os.environ[BACKEND_DIRS_ENV].split(os.pathsep) if d.strip())
    return (str(SYSTEM_BACKENDS),) if has_pytorch_backend(SYSTEM_BACKENDS) else ()


def torch_lib_dir() -> Path | None:
    """``torch/lib`` of this environment's torch (found without importing torch), or None."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return lib if (lib / "libtorch.so").is_file() else None


def links_this_torch(backend: Path) -> bool:
    """True for a PyTorch backend that does not ship its own libtorch (one built against pip's
    torch): the server must find this environment's torch/lib. The NGC image's backend ships
    libtorch.so beside libtriton_pytorch.so, and must keep using its own."""
    return (backend / "libtriton_pytorch.so").is_file() and not (backend / "libtorch.so").exists()


@dataclass(frozen=True)
class TritonInstall:
    """Where the nvidia-pytriton wheel keeps its tritonserver."""

    root: Path  # .../site-packages/pytriton/tritonserver
    libs: Path  # .../site-packages/nvidia_pytriton.libs

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    def stub(self, python_version: str) -> Path:
        return self.root / "python_backend_stubs" / python_version / "triton_python_backend_stub"

    @classmethod
    def locate(cls) -> "TritonInstall":
        tip = ("Install the project's environment (bash scripts/setup.sh) or"
               " `pip install nvidia-pytriton==0.7.0`; or serve with --docker.")
        import importlib.util

        # Found, not imported: only its tritonserver folder is used, and importing pytriton
        # pulls in its own client stack (the GPU check kit ships the folder alone).
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.origin:
            raise ToolError("the embedded tritonserver needs the nvidia-pytriton package, which is"
                            " not installed in this Python environment.", tip)
        root = Path(spec.origin).resolve().parent / "tritonserver"
        install = cls(root, root.parent.parent / "nvidia_pytriton.libs")
        for path in (install.binary, install.python_backend, install.libs):
            if not path.exists():
                raise ToolError(f"the nvidia-pytriton installation lacks {path}; it is damaged or"
                                " a build without the bundled server.", tip)
        return install


def python_version() -> str:
    return "%d.%d" % sys.version_info[:2]


def _fingerprint(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def bundled_backend_dir(install: TritonInstall, cache: Path | None = None,
                        pyver: str | None = None) -> Path:
    """A backend directory holding the bundled Python backend plus the stub for this Python.

    Built once per installation and Python version under the cache dir, atomically.
    """
    pyver = pyver or python_version()
    stub = install.stub(pyver)
    if not stub.is_file():
        have = sorted(p.name for p in (install.root / "python_backend_stubs").iterdir())
        raise ToolError(f"nvidia-pytriton ships no Python-backend stub for Python {pyver}"
                        f" (it has {', '.join(have)}).",
                        "Run gen-repo with one of those Python versions, or serve with --docker.")
    lib = install.python_backend / "libtriton_python.so"
    cache = cache or cache_dir()
    target = cache / f"backends-{_fingerprint(lib, stub)}-py{pyver}"
    if (target / "python" / "triton_python_backend_stub").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".backends-", dir=cache))
    try:
        shutil.copytree(install.python_backend, staging / "python",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
        try:
            os.replace(staging, target)
        except OSError:  # another process built it meanwhile
            if not (target / "python" / "triton_python_backend_stub").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def backends_in(directory: Path) -> dict[str, Path]:
    """Backends in a --backend-directory: {name: dir}. A dir holding libtriton_X.so is backend X."""
    own = sorted(directory.glob("libtriton_*.so"))
    if own:
        return {own[0].name[len("libtriton_"):-len(".so")]: directory}
    found = {}
    for sub in sorted(directory.iterdir()):
        if sub.is_dir() and (any(sub.glob("libtriton_*.so")) or sub.name == "python"):
            found[sub.name] = sub
    return found


def merged_backend_dir(base: Path, extra_dirs: Sequence[str | Path],
                       cache: Path | None = None) -> Path:
    """One directory of symlinks: the bundled backends, then those of each extra directory.

    Triton takes a single --backend-directory. When a name repeats, the first one wins (so the
    bundled Python backend, whose stub matches this Python, is always the one used).
    """
    if not extra_dirs:
        return base
    backends = dict(backends_in(base))
    for d in extra_dirs:
        path = Path(d).expanduser().resolve()
        if not path.is_dir():
            raise SpecError(f"--backend-directory {d} is not a directory.",
                            "Pass a directory holding Triton backends (e.g. one with"
                            " pytorch/libtriton_pytorch.so).")
        found = backends_in(path)
        if not found:
            raise SpecError(f"--backend-directory {d} holds no Triton backend (no"
                            " libtriton_<name>.so in it or in its sub-directories).",
                            "Point it at a backends directory such as /opt/tritonserver/backends"
                            " copied from the NGC tritonserver image.")
        for name, src in found.items():
            backends.setdefault(name, src)
    cache = cache or cache_dir()
    key = hashlib.sha256("\n".join(f"{n}={p}" for n, p in sorted(backends.items())).encode())
    target = cache / f"backends-merged-{key.hexdigest()[:16]}"
    if all((target / n).resolve() == p.resolve() for n, p in backends.items()) and target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    _prune_dangling_merges(cache)
    staging = Path(tempfile.mkdtemp(prefix=".backends-", dir=cache))
    for name, src in backends.items():
        (staging / name).symlink_to(src.resolve(), target_is_directory=True)
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


def _prune_dangling_merges(cache: Path) -> None:
    """Drop merged directories whose backends are gone (a deleted checkout or temporary folder):
    they could never serve again, and would pile up in the cache."""
    for merged in cache.glob("backends-merged-*"):
        links = list(merged.iterdir()) if merged.is_dir() else []
        if links and any(link.is_symlink() and not link.exists() for link in links):
            shutil.rmtree(merged, ignore_errors=True)


def server_env(install: TritonInstall, base: dict | None = None,
               library_dirs: Sequence[Path] = ()) -> dict[str, str]:
    """Environment for the embedded tritonserver and its Python-backend stubs.

    LD_LIBRARY_PATH: this interpreter's libpython first (else the stub may pick up another
    libpython3.X with a different standard library), then the wheel's bundled libraries, then
    ``library_dirs`` (this environment's torch/lib, for a PyTorch backend built against it).
    PATH: this environment's bin first; the stub finds the virtual environment (torch, numpy)
    through the ``python3`` it finds on PATH.
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ld = [libdir, str(install.libs), *map(str, library_dirs)] + \
        [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(p for p in ld if p))
    bindir = Path(sys.prefix) / "bin"
    if not (bindir / "python3").exists():
        bindir = Path(sys.executable).parent
    env["PATH"] = os.pathsep.join([str(bindir)] + [p for p in env.get("PATH", "").split(os.pathsep)
                                                   if p and p != str(bindir)])
    return env


