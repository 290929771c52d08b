"""A new user's install: the wheel and the sdist, each installed (not editable) into a fresh virtual
environment, run `gen-repo build` -> `serve` -> `verify` on a small model from a folder outside the
checkout, and `gen-repo deploy` renders its templates there.

Both are built from the checkout's files (tracked and new, as `git ls-files` lists them) copied to
a temporary folder, so no build output lands in the checkout. A fresh environment reuses this
environment's dependencies: a .pth line names this site-packages after its own, so torch and the
rest need no install (seconds, no network), while the editable install's import hook there is
never run (site.py runs the .pth files of site directories only) and cannot shadow the wheel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from generator.serve.ports import free_ports
from tests.conftest import ROOT
from tests.integration.conftest import Lines, kill_with_descendants, sigint_as_default

pytestmark = pytest.mark.integration

MODEL = '''\
import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(),
                                       torch.nn.Linear(8, 4))

    def forward(self, x):
        return self.net(x)


def make():
    torch.manual_seed(0)
    return MLP()
'''
S3_REPO = "s3://minio.minio.svc:9000/models/prod"


def _run(cmd, timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (f"{' '.join(map(str, result.args))} -> {result.returncode}\n"
                                    f"{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """{"wheel": the .whl, "sdist": the .tar.gz}, built by setuptools' PEP 517 hooks (what `pip
    wheel` and `python -m build` call) from a copy of the checkout's files."""
    tmp = tmp_path_factory.mktemp("dist")
    src, out = tmp / "src", tmp / "out"
    files = _checked(_run(["git", "ls-files", "-z", "-co", "--exclude-standard"], 60, cwd=ROOT))
    for name in filter(None, files.stdout.split("\0")):
        if (ROOT / name).is_file():  # listed but deleted in the working tree: not part of it
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out.mkdir()
    hooks = ("import sys, setuptools.build_meta as b; out = sys.argv[1];"
             " print(b.build_sdist(out)); print(b.build_wheel(out))")
    _checked(_run([sys.executable, "-c", hooks, str(out)], 300, cwd=src))
    found = {"wheel": list(out.glob("gen_repo-*.whl")), "sdist": list(out.glob("gen_repo-*.tar.gz"))}
    assert all(len(v) == 1 for v in found.values()), found
    return {kind: paths[0] for kind, paths in found.items()}


def test_the_distributions_carry_the_run_time_files(dists):
    """What the product reads at run time: the templates (package data mapped from templates/)
    and the Python-backend runtime files."""
    wheel = set(zipfile.ZipFile(dists["wheel"]).namelist())
    templates = {p.name for p in (ROOT / "templates" / "k8s").iterdir() if p.is_file()}
    assert {f"generator/_templates/k8s/{n}" for n in templates} <= wheel
    assert {"generator/runtime/model.py", "generator/runtime/floor.py"} <= wheel
    with tarfile.open(dists["sdist"]) as tar:
        sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {f"templates/k8s/{n}" for n in templates} | {"templates/__init__.py"} <= sdist
    assert {"pyproject.toml", "generator/runtime/model.py", "requirements.txt",
            "docker/Dockerfile"} <= sdist  # MANIFEST.in


def fresh_env(root: Path, dist: Path) -> tuple[Path, dict[str, str]]:
    """A new virtual environment with ``dist`` installed (not editable) and this environment's
    packages behind it; (its bin folder, the environment to run its commands in)."""
    venv = root / "venv"
    _checked(_run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], 120))
    python = venv / "bin" / "python"
    site = Path(_checked(_run([str(python), "-c", "import sysconfig;"
                                " print(sysconfig.get_paths()['purelib'])"], 60)).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "zz_dependencies.pth").write_text("".join(f"{d}\n" for d in ours))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    # --ignore-installed: the editable gen-repo of this environment, visible through the .pth,
    # is neither looked at nor uninstalled; --no-build-isolation: the sdist is built with this
    # environment's setuptools, offline.
    _checked(_run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                   "--no-build-isolation", "--ignore-installed", str(dist)], 300, env=env,
                  cwd=root))
    return venv / "bin", env


@contextlib.contextmanager
def serving(bin_dir: Path, env: dict, cwd: Path, repo: str):
    """`gen-repo serve` of the fresh environment on free ports, until it says it serves."""
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([str(bin_dir / "gen-repo"), "serve", "--repo", repo, "--http-port",
                             str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                             "--log-file", str(cwd / "tritonserver.log")],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=sigint_as_default)
    lines = Lines(proc.stdout)
    try:
        lines.until("serving", timeout=180, start=True)
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", lines
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, lines.rest()
    finally:
        kill_with_descendants(proc)


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_an_installed_distribution_builds_serves_and_verifies_outside_the_checkout(
        kind, dists, tmp_path):
    bin_dir, env = fresh_env(tmp_path, dists[kind])
    work = tmp_path / "work"
    work.mkdir()
    assert not work.resolve().is_relative_to(ROOT)

    where = _checked(_run([str(bin_dir / "python"), "-c",
                           "import generator, generator.templates as t;"
                           " print(generator.__file__); print(t.templates_dir())"],
                          60, env=env, cwd=work)).stdout.split()
    for path in map(Path, where):  # the installed copy, not the checkout (editable) one
        assert path.is_relative_to(tmp_path / "venv"), where

    (work / "mlp.py").write_text(MODEL)
    gr = str(bin_dir / "gen-repo")
    _checked(_run([gr, "-q", "build", "mlp.py:make", "--name", "mlp", "--input", "x:float32:16",
                   "--variants", "python", "--out", "repo"], 300, env=env, cwd=work))
    assert (work / "repo" / "mlp_python" / "config.pbtxt").is_file()

    with serving(bin_dir, env, work, "repo") as (http, grpc, lines):
        assert any("backend director" in line for line in lines.seen), "".join(lines.seen)
        verified = _checked(_run([gr, "verify", "--repo", "repo", "--http-url", http,
                                  "--grpc-url", grpc], 300, env=env, cwd=work))
        assert "2 OK, 0 FAIL" in verified.stdout, verified.stdout

    # deploy renders the packaged templates and validates them (no cluster, no network)
    _checked(_run([gr, "deploy", "k8s", "--help"], 60, env=env, cwd=work))
    for target, written in (("k8s", "deployment.yaml"), ("kserve", "inferenceservice.yaml")):
        _checked(_run([gr, "deploy", target, "--repo", S3_REPO, "--out", target], 120, env=env,
                      cwd=work))
        assert "kind:" in (work / target / written).read_text()
