"""model_repository/ holds a committed example of what gen-repo writes: its files match their
gen_repo.sha256, and rebuilding it with the documented command gives the same configs (but for
what this machine measures or the artifact's bytes decide) and the same files."""

from __future__ import annotations

import subprocess

import pytest

from generator.repository import layout, manifest
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "model_repository"
MODELS = ("example_ranker_libtorch", "example_ranker_python")
# parameters whose value is measured on the building machine, or is a hash of bytes a save makes
# anew (torch.save writes a random serialization id)
MACHINE_PARAMETERS = ("measured_threads", "memory_format", "artifact_sha256", "weights_sha256")


def _comparable(model_dir):
    config = layout.BuiltModel(model_dir).config
    for key in MACHINE_PARAMETERS:
        if key in config.parameters:
            del config.parameters[key]
    return config


def test_the_committed_example_matches_its_hashes():
    for name in MODELS:
        assert manifest.problems(EXAMPLE / name) == [], name
    tracked = subprocess.run(["git", "ls-files", "model_repository"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert f"model_repository/{MODELS[1]}/1/model.package" in tracked, tracked
    assert sum((ROOT / f).stat().st_size for f in tracked) < 200_000  # a few KB each


def test_rebuilding_the_example_gives_the_same_configs(tmp_path):
    out = tmp_path / "repo"
    done = subprocess.run(["bash", str(ROOT / "scripts/example-repository.sh"), "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in MODELS:
        assert _comparable(out / name) == _comparable(EXAMPLE / name), name
        assert manifest.read(out / name).keys() == manifest.read(EXAMPLE / name).keys(), name
