"""The tritonserver flags: the backends' config auto-completion is off only where every model of
a local repository was built by gen-repo (its config complete)."""

from __future__ import annotations

import shutil

from generator.serve.arguments import NO_AUTO_COMPLETE, complete_configs, server_args
from generator.serve.ports import Ports
from tests.conftest import ROOT

EXAMPLE = ROOT / "model_repository"


def _args(auto_complete: bool) -> list[str]:
    return server_args("/r", Ports(1, 2, 3), listen="127.0.0.1", control_key="k",
                       auto_complete=auto_complete)


def test_auto_completion_is_off_only_when_asked():
    assert NO_AUTO_COMPLETE in _args(False)
    assert NO_AUTO_COMPLETE not in _args(True)


def test_a_repository_of_gen_repo_models_has_complete_configs(tmp_path):
    assert complete_configs(EXAMPLE)
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    foreign = repo / "theirs"
    foreign.mkdir()
    (foreign / "config.pbtxt").write_text('backend: "onnxruntime"\n')  # no gen-repo record
    assert not complete_configs(repo)


def test_missing_empty_or_remote_repositories_keep_auto_completion(tmp_path):
    assert not complete_configs(tmp_path / "missing")
    assert not complete_configs(tmp_path)  # no models
    assert not complete_configs("s3://bucket/models")


def test_the_embedded_server_decides_from_its_repository_unless_told(tmp_path):
    from generator.serve.server import EmbeddedServer

    assert NO_AUTO_COMPLETE in EmbeddedServer(EXAMPLE, backend_dirs=()).command()
    assert NO_AUTO_COMPLETE not in EmbeddedServer(EXAMPLE, backend_dirs=(),
                                                  auto_complete=True).command()
    assert NO_AUTO_COMPLETE not in EmbeddedServer(tmp_path, backend_dirs=()).command()
