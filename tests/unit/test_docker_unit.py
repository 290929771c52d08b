"""The docker route's pure parts: image inputs and tags, container arguments, pack-env's config
edit and requirements. No docker engine needed."""

from __future__ import annotations

import re

import pytest

from generator.serve.docker_engine import ENGINE_FLAGS, EngineError
from generator.serve.docker_server import DockerOptions, environment, run_kwargs
from generator.serve.ports import Ports
from generator.errors import RepositoryError, SpecError
from generator.ship.packenv import (PARAM, PackOptions, default_requirements, env_value,
                                    public_version, set_parameter)
from tests.conftest import ROOT
from tests import docker_standin as standin

CONFIG = """# Written by gen-repo 0.1.0 for variant "python". Rebuild instead of editing.
name: "m_python"
backend: "python"
max_batch_size: 8
input {
  name: "x"
  data_type: TYPE_FP32
  dims: [ 16 ]
}
output {
  name: "output"
  data_type: TYPE_FP32
  dims: [ 4 ]
}
parameters {
  key: "artifact"
  value: { string_value: "model.package" }
}
"""


def test_dockerfile_defaults_equal_the_pinned_requirements():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.M))
    assert standin.dockerfile_build_args(standin.pinned_versions()) == {
        k: args[k] for k in ("TORCH_VERSION", "TORCHVISION_VERSION", "NUMPY_VERSION")}
    assert args["BASE_IMAGE"].startswith("nvcr.io/nvidia/tritonserver:")
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)


def test_image_tags_change_with_their_inputs():
    pins = standin.pinned_versions()
    tag = standin.torch_image_tag("base:1", pins)
    assert tag == standin.torch_image_tag("base:1", dict(pins))
    assert tag != standin.torch_image_tag("base:2", pins)
    assert tag != standin.torch_image_tag("base:1", {**pins, "torch": "9.9.9"})
    assert re.fullmatch(r"gen-repo/tritonserver-torch:[0-9a-f]{12}", tag)


def test_tree_digest_sees_contents_and_exec_bits(tmp_path):
    (tmp_path / "a").write_text("x")
    first = standin.tree_digest(tmp_path)
    (tmp_path / "a").chmod(0o755)
    second = standin.tree_digest(tmp_path)
    (tmp_path / "a").write_text("y")
    assert len({first, second, standin.tree_digest(tmp_path)}) == 3


def test_the_engine_follows_the_network_rule():
    assert set(ENGINE_FLAGS) == {"--bridge=none", "--iptables=false", "--ip-masq=false"}


def test_pinned_versions_name_what_is_missing(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("torch==2.15.0\nnumpy==1.26.4  # comment\n")
    with pytest.raises(Exception) as e:
        standin.pinned_versions(req)
    assert "torchvision" in str(e.value)


def test_run_kwargs_environment_and_s3(tmp_path):
    opts = DockerOptions(image="img:1", env=("A=1", "B=x=y"))
    kw = run_kwargs(tmp_path, Ports(9000, 9001, 9002), opts, "c", env={"A": "0", "S3": "k"})
    assert kw["environment"] == {"A": "1", "B": "x=y", "S3": "k"}  # --env wins
    assert kw["network_mode"] == "host" and "ports" not in kw
    remote = run_kwargs("s3://bucket/repo", Ports(), opts, "c")
    assert remote["volumes"] == {}
    assert "--model-repository=s3://bucket/repo" in remote["command"]


@pytest.mark.parametrize("opts, flag", [
    (DockerOptions(env=("NOEQUALS",)), "--env"),
    (DockerOptions(env=("1BAD=x",)), "--env"),
    (DockerOptions(pull="always"), "--pull"),
])
def test_bad_docker_options_name_the_flag(tmp_path, opts, flag):
    with pytest.raises(SpecError) as e:
        run_kwargs(tmp_path, Ports(), opts, "c")
    assert flag in e.value.message


def test_environment_parses_key_value():
    assert environment(["X=", "Y=a=b"]) == {"X": "", "Y": "a=b"}


def test_env_flag_needs_docker(run_cli, tmp_path):
    (tmp_path / "m_python").mkdir()
    (tmp_path / "m_python" / "config.pbtxt").write_text('name: "m_python"\nbackend: "python"\n')
    code, _, err = run_cli("serve", "--repo", tmp_path, "--env", "A=1")
    assert code == 2 and "--env applies to --docker only" in err


# -- pack-env ---------------------------------------------------------------------------------


def _model_dir(tmp_path, text=CONFIG):
    from generator.repository import manifest

    (tmp_path / "config.pbtxt").write_text(text)
    manifest.write(tmp_path)
    return tmp_path


def test_set_parameter_sets_and_removes_it_through_the_config_writer(tmp_path):
    from generator.repository import manifest
    from generator.repository.layout import parse_config

    value = env_value("tar.gz")
    assert value == "$$TRITON_MODEL_DIRECTORY/gen_repo_env.tar.gz"
    mdir = _model_dir(tmp_path)
    before = parse_config(CONFIG)
    set_parameter(mdir, PARAM, value)
    set_parameter(mdir, PARAM, env_value("dir"))  # replaced, not added twice
    text = (mdir / "config.pbtxt").read_text()
    assert text.count(PARAM) == 1 and "gen_repo_env\"" in text
    assert text.startswith("# Written by gen-repo 0.1.0")  # the comment line is kept
    assert manifest.problems(mdir) == []  # the config's new hash is recorded
    set_parameter(mdir, PARAM, None)
    assert parse_config((mdir / "config.pbtxt").read_text()) == before


def test_set_parameter_set_by_hand_is_replaced(tmp_path):
    from generator.repository.layout import parse_config

    by_hand = CONFIG + 'parameters { key: "EXECUTION_ENV_PATH" value: { string_value: "/x" } }\n'
    mdir = _model_dir(tmp_path, by_hand)
    set_parameter(mdir, PARAM, "$$TRITON_MODEL_DIRECTORY/e.tar.gz")
    config = parse_config((mdir / "config.pbtxt").read_text())
    assert config.parameters[PARAM].string_value == "$$TRITON_MODEL_DIRECTORY/e.tar.gz"
    assert config.parameters["artifact"].string_value == "model.package"


def test_set_parameter_refuses_a_broken_config(tmp_path):
    with pytest.raises(RepositoryError):
        set_parameter(_model_dir(tmp_path, "name: ["), PARAM, "x")


class _Model:
    def __init__(self, versions):
        self.path = "m"
        self.record = {"versions": versions}


def test_default_requirements_are_the_recorded_versions():
    m = _Model({"torch": "2.15.0+cu132", "torchvision": "0.29.2+cu132", "numpy": "1.26.4"})
    assert default_requirements(m) == ("torch==2.15.0", "torchvision==0.29.2", "numpy==1.26.4")
    assert default_requirements(_Model({"torch": "2.15.0", "numpy": "2.1.0"})) == (
        "torch==2.15.0", "numpy<2")
    assert public_version("2.15.0+cpu") == "2.15.0"
    with pytest.raises(RepositoryError) as e:
        default_requirements(_Model({}))
    assert "--requirement" in e.value.tip


@pytest.mark.parametrize("opts, flag", [
    (PackOptions(image="i", fmt="zip"), "--format"),
    (PackOptions(image="i", requirements=("torch==2.15.0; rm -rf /",)), "--requirement"),
    (PackOptions(image="i", wheels="/no/such/dir"), "--wheels"),
])
def test_pack_options_are_checked(opts, flag):
    with pytest.raises(SpecError) as e:
        opts.validate()
    assert flag in e.value.message


def test_pack_env_refuses_an_s3_repository_and_needs_an_image(run_cli, tmp_path):
    code, _, err = run_cli("pack-env", "--repo", "s3://bucket/repo", "--image", "i")
    assert code == 2 and "must be local" in err
    (tmp_path / "m_python").mkdir()
    (tmp_path / "m_python" / "config.pbtxt").write_text('name: "m_python"\nbackend: "python"\n')
    code, _, err = run_cli("pack-env", "--repo", tmp_path)
    assert code == 2 and "pack-env needs --image" in err and "TIP:" in err


# -- the engine: install / start decisions --------------------------------------------------------


@pytest.fixture
def no_engine(monkeypatch):
    def unreachable(timeout=30.0):
        raise EngineError("no docker engine is reachable at unix:///var/run/docker.sock.")

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(standin, "connect", unreachable)
    calls = []
    monkeypatch.setattr(standin, "apt_install",
                        lambda pkgs, log: calls.append(("apt", tuple(pkgs))))
    monkeypatch.setattr(standin, "start_engine",
                        lambda log, timeout: calls.append(("start",)) or "c")
    return calls


def test_ensure_engine_installs_and_starts_one_as_root(no_engine, monkeypatch):
    monkeypatch.setattr(standin.os, "geteuid", lambda: 0)
    monkeypatch.setattr(standin, "_dockerd", lambda: None)
    assert standin.ensure_engine() == "c"
    assert no_engine == [("apt", ("docker.io",)), ("start",)]
    no_engine.clear()
    monkeypatch.setattr(standin, "_dockerd", lambda: "/usr/sbin/dockerd")
    assert standin.ensure_engine() == "c" and no_engine == [("start",)]  # installed: started only


def test_ensure_engine_without_root_or_install_says_why(no_engine, monkeypatch):
    monkeypatch.setattr(standin.os, "geteuid", lambda: 1000)
    with pytest.raises(EngineError) as e:
        standin.ensure_engine()
    assert "needs root" in e.value.message and no_engine == []
    monkeypatch.setattr(standin.os, "geteuid", lambda: 0)
    monkeypatch.setattr(standin, "_dockerd", lambda: None)
    with pytest.raises(EngineError) as e:
        standin.ensure_engine(install=False)
    assert "not installed" in e.value.message and no_engine == []


def test_ensure_engine_never_starts_one_for_another_docker_host(no_engine, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    monkeypatch.setattr(standin.os, "geteuid", lambda: 0)
    with pytest.raises(EngineError):
        standin.ensure_engine()
    assert no_engine == []
