"""A build killed with SIGKILL at any point leaves only complete models in the repository."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.repository import layout, staging
from generator.runtime.model import sha256_of
from tests.conftest import fixture_source

# Progress lines that mark points inside a build; the build is killed as soon as one appears.
KILL_POINTS = [
    "running the eager model",
    "[libtorch] exporting ...",
    "[python] exporting ...",
    "checking libtorch, python in a fresh process ...",
    "checking libtorch, python in a fresh process: done",
]


def _assert_only_complete_models(repo):
    if not repo.exists():
        return
    for d in repo.iterdir():
        if d.name == staging.LOCK:  # a killed build's lock file (no lock: its process is gone)
            continue
        assert d.is_dir() and (d / layout.CONFIG).is_file(), f"half-written model {d}"
        m = layout.BuiltModel(d)
        params = m.record["load_params"]
        assert sha256_of(d / "1" / params["artifact"]) == params["artifact_sha256"]
        assert m.samples() and m.reference()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = tmp_path_factory.mktemp("base") / "repo"
    proc = subprocess.run([sys.executable, "-m", "generator.cli", "build",
                           fixture_source("tiny_mlp"), "--input", "x:float32:16", "--out",
                           repo, "--variants", "python"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return repo


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_mid_build_leaves_only_complete_models(tmp_path, built, point):
    # An earlier complete model must survive a killed --force rebuild untouched.
    repo = tmp_path / "repo"
    shutil.copytree(built, repo)
    before = sha256_of(repo / "tiny_mlp_python/1/model.package")
    proc = subprocess.Popen([sys.executable, "-m", "generator.cli", "build",
                             fixture_source("tiny_mlp"), "--input", "x:float32:16", "--out",
                             repo, "--force", "--seed", "7"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    killed = False
    for line in proc.stderr:
        if point in line:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        assert time.monotonic() < deadline
    proc.wait(timeout=30)
    assert killed, f"the build never printed {point!r}"
    _assert_only_complete_models(repo)
    python_model = repo / "tiny_mlp_python/1/model.package"
    if not point.endswith("done"):
        assert sha256_of(python_model) == before  # the old model is intact
    # Staging debris lives outside the repository and the next build clears it.
    from generator.repository.staging import clean_stale_staging

    clean_stale_staging(repo)
    assert not list(tmp_path.glob(f"{staging.STAGING_PREFIX}*"))


def test_the_check_worker_dies_with_its_build_and_its_folder_is_cleaned(tmp_path):
    import tempfile

    import psutil

    from generator.build.check import CHECK_PREFIX

    cmd = [sys.executable, "-m", "generator.cli", "build", fixture_source("tiny_mlp"), "--input",
           "x:float32:16", "--variants", "python"]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "a")], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if "in a fresh process ..." in line:
            break
        assert time.monotonic() < deadline
    workers = []
    while not workers and time.monotonic() < deadline:
        workers = [c for c in psutil.Process(proc.pid).children()
                   if "check_worker.py" in " ".join(c.cmdline())]
        time.sleep(0.05)
    assert workers, "no check worker started"
    folders = list(Path(tempfile.gettempdir()).glob(f"{CHECK_PREFIX}pid{proc.pid}-*"))
    assert folders
    proc.kill()  # the build alone, not its process group
    proc.wait(timeout=30)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "the check worker outlived its build"
    done = subprocess.run([*cmd, "--out", str(tmp_path / "b")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not any(f.exists() for f in folders)  # the killed build's folder is cleaned
