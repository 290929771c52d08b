"""gen-repo pack-env: a Python environment for the Python backend, packed into the model.

Triton's Python backend can run a model in an environment of its own: the config parameter
``EXECUTION_ENV_PATH`` names a tarball (or a directory) with ``bin/activate``; the backend
extracts it under /tmp/python_env_*, runs ``source <env>/bin/activate``, puts ``<env>/lib`` first
on LD_LIBRARY_PATH and starts its stub, which embeds the Python found first on PATH (its prefix,
standard library and site-packages then come from the environment). With
``$$TRITON_MODEL_DIRECTORY/...`` the environment travels inside the model directory, so the stock
NGC image (which has no torch) serves the Python-backend variants.

conda-pack is the documented way to make such a tarball. gen-repo makes the same thing without
conda, inside a container of the image that will serve (so the interpreter matches that image's
stub and C library): it copies the image's python3 (interpreter, standard library, libpython)
into a directory, pip-installs the requirements beside it (by default the torch, torchvision and
numpy versions the model was built with), writes a relocatable ``bin/activate``, and smoke-tests
the result the way the backend starts it. The host packs it (gzip level 1: about 8x faster than
the default level for about 15% more bytes) into a cache keyed by the image id, the requirements,
the wheel directory and this recipe, so an unchanged environment is built once:

    ~/.cache/gen-repo/envs/<key>.tar.gz (+ .json)
    <model>/gen_repo_env.tar.gz          a hard link to it (a copy across file systems)
    <model>/gen_repo_env.json            what is inside: image, python, requirements, packages
    <model>/config.pbtxt                 + parameters { key: "EXECUTION_ENV_PATH"
                                             value: { string_value: "$$TRITON_MODEL_DIRECTORY/gen_repo_env.tar.gz" } }

pack-env parses config.pbtxt into Triton's ModelConfig protobuf, sets that one parameter and
writes it back through the one writer of configs (its comment line is kept); the files it adds
or removes are recorded in the model's gen_repo.sha256. A rebuild of the model (``build
--force``) drops the environment again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import progress
from ..repository import layout, manifest
from ..repository.config import write_config
from ..repository.files import link_or_copy
from ..repository.layout import PACKED_ENV_PARAM as PARAM
from ..errors import RepositoryError, SpecError, ToolError, log_tail
from ..machine import cache_dir
from ..status import PACKED, SKIPPED

ENV_TARBALL = "gen_repo_env.tar.gz"
ENV_DIR = "gen_repo_env"
ENV_RECORD = "gen_repo_env.json"
ENV_FILES = (ENV_TARBALL, ENV_DIR, ENV_RECORD)  # what pack-env adds to a model directory
FORMATS = ("tar.gz", "dir")
RECIPE_VERSION = "1"
GZIP_LEVEL = 1
IN_CONTAINER = "/gen-repo-pack"
WHEELS_IN_CONTAINER = "/gen-repo-wheels"

# Runs inside the target image with its python3 (``python3 -I build_env.py ENV``). Standard
# library only: the image may have nothing else.
BUILD_SCRIPT = r'''
import glob, json, os, shutil, subprocess, sys, sysconfig

env = sys.argv[1]
requirements = json.loads(os.environ["GEN_REPO_REQUIREMENTS"])
pip_args = json.loads(os.environ["GEN_REPO_PIP_ARGS"])
ver = "%d.%d" % sys.version_info[:2]


def fail(msg):
    print("gen-repo pack-env: ERROR: " + msg, flush=True)
    sys.exit(3)


exe = os.path.realpath(sys.executable)
stdlib = sysconfig.get_path("stdlib")
soname = sysconfig.get_config_var("INSTSONAME") or "libpython%s.so.1.0" % ver
if not soname.endswith(".so") and ".so." not in soname:
    soname = "libpython%s.so.1.0" % ver
dirs = [sysconfig.get_config_var("LIBDIR") or "", "/usr/local/lib"]
dirs += glob.glob("/usr/lib/*-linux-gnu") + glob.glob("/lib/*-linux-gnu") + ["/usr/lib", "/lib"]
libpython = next((os.path.join(d, soname) for d in dirs if os.path.exists(os.path.join(d, soname))),
                 None)
if libpython is None:
    fail("the image's Python %s has no shared library %s, which the Python backend's stub"
         " links; install it in the image (Debian/Ubuntu: libpython%s)" % (ver, soname, ver))
print("gen-repo pack-env: Python %s (%s), standard library %s, %s" % (
    sys.version.split()[0], exe, stdlib, libpython), flush=True)

os.makedirs(os.path.join(env, "bin"))
os.makedirs(os.path.join(env, "lib"))
shutil.copy2(exe, os.path.join(env, "bin", "python" + ver))
os.symlink("python" + ver, os.path.join(env, "bin", "python3"))
os.symlink("python3", os.path.join(env, "bin", "python"))
shutil.copy2(libpython, os.path.join(env, "lib", soname))


def skip(directory, names):
    out = {n for n in names if n in ("__pycache__", "site-packages", "dist-packages")}
    if os.path.realpath(directory) == os.path.realpath(stdlib):
        out |= {n for n in names if n == "test"}  # CPython's own test suite
    return out


shutil.copytree(stdlib, os.path.join(env, "lib", "python" + ver), symlinks=True, ignore=skip)

with open(os.path.join(env, "bin", "activate"), "w") as f:
    f.write(
        "# gen-repo pack-env: a relocatable environment; Triton's Python backend sources this\n"
        "# file, puts <env>/lib first on LD_LIBRARY_PATH and starts its stub.\n"
        '_gen_repo_env="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"\n'
        'export PATH="$_gen_repo_env/bin:$PATH"\n'
        "unset PYTHONHOME PYTHONPATH _gen_repo_env\n")

run_env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(env, "lib") + ":" +
               os.environ.get("LD_LIBRARY_PATH", ""))
probe = ("import json, site, sys; v = '%d.%d' % sys.version_info[:2]; "
         "c = site.getsitepackages(); "
         "p = [d for d in c if d.startswith(sys.prefix + '/lib/python' + v + '/')] or c; "
         "print(json.dumps({'prefix': sys.prefix, 'site': p[0]}))")
out = subprocess.run([os.path.join(env, "bin", "python3"), "-I", "-c", probe], env=run_env,
                     stdout=subprocess.PIPE, universal_newlines=True)
if out.returncode != 0:
    fail("the copied interpreter does not start")
info = json.loads(out.stdout)
if os.path.realpath(info["prefix"]) != os.path.realpath(env):
    fail("the copied interpreter took %s as its prefix instead of %s" % (info["prefix"], env))
site_dir = info["site"]
os.makedirs(site_dir, exist_ok=True)

if subprocess.run([sys.executable, "-m", "pip", "--version"]).returncode != 0:
    fail("the image's python3 has no pip (python3 -m pip); install it in the image")
cmd = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
       "--no-warn-script-location", "--target", site_dir] + pip_args + requirements
print("gen-repo pack-env: " + " ".join(cmd), flush=True)
if subprocess.run(cmd).returncode != 0:
    fail("pip could not install %s into Python %s; check that these versions exist for this"
         " Python (torch 2.15 needs >= 3.11)" % (" ".join(requirements), ver))

# the smoke test starts Python the way the backend starts its stub
check = ("import json, sys, importlib.metadata as md, numpy; "
         "mods = {}\n"
         "for name in ('torch', 'torchvision', 'numpy'):\n"
         "    try:\n"
         "        mods[name] = __import__(name).__file__\n"
         "    except ImportError:\n"
         "        pass\n"
         "pk = sorted(((d.metadata['Name'] or '?') + '==' + d.version) "
         "for d in md.distributions(path=[%r]))\n"
         "print('GEN_REPO_ENV ' + json.dumps({'python': sys.version.split()[0],"
         " 'prefix': sys.prefix, 'modules': mods, 'packages': pk}))" % site_dir)
line = ('source "%s/bin/activate" && exec env LD_LIBRARY_PATH="%s/lib:$LD_LIBRARY_PATH" '
        'python3 -I -c "$GEN_REPO_CHECK"' % (env, env))
out = subprocess.run(["bash", "-c", line], env=dict(os.environ, GEN_REPO_CHECK=check),
                     stdout=subprocess.PIPE, universal_newlines=True)
result = [l for l in out.stdout.splitlines() if l.startswith("GEN_REPO_ENV ")]
if out.returncode != 0 or not result:
    fail("the packed environment does not import its packages (see the lines above)")
facts = json.loads(result[-1][len("GEN_REPO_ENV "):])
outside = [m for m, f in facts["modules"].items() if not os.path.realpath(f).startswith(env)]
if outside:
    fail("%s imported from outside the environment" % ", ".join(outside))
facts["site"] = os.path.relpath(site_dir, env)
with open(os.path.join(env, "gen_repo_env.json"), "w") as f:
    json.dump(facts, f, indent=1)
print("gen-repo pack-env: OK " + json.dumps(facts["modules"]), flush=True)
'''


@dataclass(frozen=True)
class PackOptions:
    image: str
    requirements: tuple[str, ...] = ()  # empty: the versions the model was built with
    wheels: str | None = None  # a directory of wheels pip prefers (--find-links)
    pip_args: tuple[str, ...] = ()
    fmt: str = "tar.gz"
    rebuild: bool = False
    pull: str = "missing"

    def validate(self) -> None:
        if self.fmt not in FORMATS:
            raise SpecError(f"--format '{self.fmt}' is not one of {', '.join(FORMATS)}.",
                            "Use tar.gz (one file, extracted at load) or dir (unpacked: loads"
                            " faster, many files).")
        if self.wheels and not Path(self.wheels).is_dir():
            raise SpecError(f"--wheels {self.wheels} is not a directory.",
                            "Pass a directory holding .whl files, or drop --wheels.")
        for r in self.requirements:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,.-]+\])?"
                                r"\s*([<>=!~]=?[^\s,;]+(\s*,\s*[<>=!~]=?[^\s,;]+)*)?", r.strip()):
                raise SpecError(f"--requirement '{r}' is not a requirement like torch==2.15.0.",
                                "Give one name with an optional version specifier per flag.")


@dataclass
class PackResult:
    model: str
    state: str  # PACKED | SKIPPED (generator.status)
    reason: str = ""
    path: str = ""
    size: int = 0
    python: str = ""
    cached: bool = False
    requirements: tuple[str, ...] = ()


@dataclass
class _Env:
    key: str
    tarball: Path
    facts: dict = field(default_factory=dict)
    cached: bool = False


def public_version(version: str) -> str:
    """'2.15.0+cu132' -> '2.15.0' (pip cannot match a local version tag PyPI does not carry)."""
    return version.split("+", 1)[0]


def default_requirements(model) -> tuple[str, ...]:
    """torch, torchvision and numpy at the versions recorded when the model was built."""
    versions = (model.record or {}).get("versions") or {}
    if not versions.get("torch"):
        raise RepositoryError(f"{model.path} records no torch version (gen_repo.json"
                              " 'versions').", "Pass the packages with --requirement, e.g."
                              " --requirement torch==2.15.0 --requirement 'numpy<2'.")
    reqs = [f"torch=={public_version(versions['torch'])}"]
    if versions.get("torchvision"):
        reqs.append(f"torchvision=={public_version(versions['torchvision'])}")
    numpy = public_version(versions.get("numpy", ""))
    reqs.append(f"numpy=={numpy}" if numpy and int(numpy.split(".")[0]) < 2 else "numpy<2")
    return tuple(reqs)


def env_value(fmt: str) -> str:
    return "$$TRITON_MODEL_DIRECTORY/" + (ENV_TARBALL if fmt == "tar.gz" else ENV_DIR)


def set_parameter(model_dir: Path, key: str, value: str | None) -> None:
    """Set config parameter ``key`` of the model in ``model_dir`` to ``value`` (None: remove it),
    keeping the config's comment line."""
    path = Path(model_dir) / layout.CONFIG
    text = path.read_text()
    config = layout.parse_config(text, str(path))
    if value is None:
        if key in config.parameters:
            del config.parameters[key]
    else:
        config.parameters[key].string_value = value
    first = text.splitlines()[0] if text.strip() else ""
    header = first[1:].strip() if first.startswith("#") else "Edited by gen-repo pack-env."
    write_config(model_dir, config, header)


def _env_cache() -> Path:
    path = cache_dir() / "envs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wheels_listing(wheels: str | None) -> str:
    if not wheels:
        return ""
    return "\n".join(f"{p.name}:{p.stat().st_size}" for p in sorted(Path(wheels).iterdir())
                     if p.is_file())


def env_key(image_id: str, requirements, options: PackOptions) -> str:
    h = hashlib.sha256()
    for part in (RECIPE_VERSION, BUILD_SCRIPT, image_id, "\n".join(requirements),
                 "\n".join(options.pip_args), _wheels_listing(options.wheels)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _build(client, options: PackOptions, requirements: tuple[str, ...], key: str,
           log_path: Path) -> _Env:
    """Make the environment in a container of the image; pack it into the cache."""
    from docker.errors import DockerException

    cache = _env_cache()
    work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache))
    name = f"gen-repo-pack-env-{key}-{os.getpid()}"
    container = None
    try:
        work.chmod(0o777)  # the container may run as another user than the owner of the cache
        (work / "build_env.py").write_text(BUILD_SCRIPT)
        pip_args = list(options.pip_args)
        volumes = {str(work): {"bind": IN_CONTAINER, "mode": "rw"}}
        if options.wheels:
            volumes[str(Path(options.wheels).resolve())] = {"bind": WHEELS_IN_CONTAINER,
                                                            "mode": "ro"}
            pip_args = ["--find-links", WHEELS_IN_CONTAINER] + pip_args
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with progress.step(f"building the Python environment ({' '.join(requirements)}) in"
                           f" {options.image} (log: {log_path})"):
            try:
                container = client.containers.create(
                    options.image, name=name, command=[
                        "python3", "-I", f"{IN_CONTAINER}/build_env.py", f"{IN_CONTAINER}/env"],
                    network_mode="host", volumes=volumes, user=f"{os.getuid()}:{os.getgid()}",
                    environment={"GEN_REPO_REQUIREMENTS": json.dumps(list(requirements)),
                                 "GEN_REPO_PIP_ARGS": json.dumps(pip_args), "HOME": "/tmp",
                                 "PYTHONDONTWRITEBYTECODE": "1"},
                    labels={"gen-repo": "pack-env"})
                container.start()
                with open(log_path, "ab") as log:
                    log.write(f"\n=== pack-env {key} in {options.image}: {requirements}\n".encode())
                    for chunk in container.logs(stream=True, follow=True):
                        log.write(chunk)
                        log.flush()
                code = int(container.wait().get("StatusCode", -1))
            except DockerException as e:
                raise ToolError(f"could not run a container of {options.image} to build the"
                                f" environment: {' '.join(str(e).split())}.",
                                "Check `docker info` and the image name.") from e
            if code != 0:
                raise ToolError(f"building the Python environment in {options.image} failed"
                                f" (exit code {code}). Last lines of {log_path}:\n"
                                f"{log_tail(log_path, 20)}", f"Read the full log at {log_path}.")
        env_dir = work / "env"
        facts = json.loads((env_dir / "gen_repo_env.json").read_text())
        facts.pop("prefix", None)  # where it was built; it runs wherever the server extracts it
        tarball = cache / f"{key}.tar.gz"
        tmp = work / "env.tar.gz"
        with progress.step(f"packing it ({_size(env_dir)}, gzip level {GZIP_LEVEL})"):
            with tarfile.open(tmp, "w:gz", compresslevel=GZIP_LEVEL) as tar:
                for child in sorted(env_dir.iterdir()):
                    tar.add(child, arcname=child.name, filter=_root_owned)
        facts.update(image=options.image, requirements=list(requirements),
                     pip_args=list(options.pip_args), wheels=options.wheels,
                     bytes=tmp.stat().st_size, sha256=_sha256(tmp),
                     created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (cache / f"{key}.json").write_text(json.dumps(facts, indent=1))
        os.replace(tmp, tarball)
        return _Env(key, tarball, facts)
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return human(total)


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _cached(key: str) -> _Env | None:
    cache = _env_cache()
    tarball, record = cache / f"{key}.tar.gz", cache / f"{key}.json"
    if tarball.is_file() and record.is_file():
        try:
            return _Env(key, tarball, json.loads(record.read_text()), cached=True)
        except (OSError, json.JSONDecodeError):
            return None
    return None


def _place(env: _Env, model, fmt: str) -> Path:
    """Put the environment into the model directory and point config.pbtxt at it."""
    mdir = model.path
    _remove_files(mdir)
    if fmt == "tar.gz":
        target = mdir / ENV_TARBALL
        tmp = mdir / f".{ENV_TARBALL}.tmp-{os.getpid()}"
        link_or_copy(env.tarball, tmp)
        os.replace(tmp, target)
    else:
        target = mdir / ENV_DIR
        staging = Path(tempfile.mkdtemp(prefix=f".{ENV_DIR}-", dir=mdir))
        keep_modes = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
        with tarfile.open(env.tarball, "r:gz") as tar:
            tar.extractall(staging, **keep_modes)
        os.replace(staging, target)
        target.chmod(0o755)
    (mdir / ENV_RECORD).write_text(json.dumps(env.facts, indent=1))
    manifest.update(mdir, *ENV_FILES)
    set_parameter(mdir, PARAM, env_value(fmt))
    return target


def _remove_files(mdir: Path) -> None:
    for name in (ENV_TARBALL, ENV_RECORD):
        (mdir / name).unlink(missing_ok=True)
    if (mdir / ENV_DIR).exists():
        shutil.rmtree(mdir / ENV_DIR)
    manifest.update(mdir, *ENV_FILES)


def remove_env(model) -> bool:
    """Drop a packed environment from a model: its files and the config parameter."""
    cfg = model.path / layout.CONFIG
    had = PARAM in layout.parse_config(cfg.read_text(), str(cfg)).parameters
    _remove_files(model.path)
    if had:
        set_parameter(model.path, PARAM, None)
    return had


def pack_models(models, options: PackOptions, client=None) -> list[PackResult]:
    """Give each Python-backend model its packed environment; a result per model."""
    options.validate()
    results: list[PackResult] = []
    targets = []
    for m in models:
        if m.backend != "python":
            results.append(PackResult(m.name, SKIPPED, f"runs on the {m.backend} backend;"
                                      " only Python-backend models use an environment"))
            continue
        reqs = tuple(r.strip() for r in options.requirements) or default_requirements(m)
        targets.append((m, reqs))
    if not targets:
        return results
    from ..serve.docker_engine import connect
    from ..serve.docker_server import ensure_image

    own = client is None
    client = client or connect()
    try:
        ensure_image(client, options.image, options.pull)
        image_id = client.images.get(options.image).id
        envs: dict[tuple[str, ...], _Env] = {}
        log_path = cache_dir() / "logs" / f"pack-env-{time.strftime('%Y%m%d-%H%M%S')}.log"
        for m, reqs in targets:
            if reqs not in envs:
                key = env_key(image_id, reqs, options)
                env = None if options.rebuild else _cached(key)
                if env is None:  # concurrent builds of one key: the last os.replace wins
                    env = _build(client, options, reqs, key, log_path)
                envs[reqs] = env
            env = envs[reqs]
            path = _place(env, m, options.fmt)
            results.append(PackResult(m.name, PACKED, path=str(path),
                                      size=int(env.facts.get("bytes", 0)),
                                      python=str(env.facts.get("python", "")), cached=env.cached,
                                      requirements=reqs))
            progress.info(f"{m.name}: {PARAM} = {env_value(options.fmt)}"
                          f" ({'cached ' if env.cached else ''}environment {env.key})")
    finally:
        if own:
            client.close()
    order = {m.name: i for i, m in enumerate(models)}
    return sorted(results, key=lambda r: order.get(r.model, 0))
