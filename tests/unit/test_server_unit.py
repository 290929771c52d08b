"""Server and verify parts that need no running server: ports, backend dirs, env, docker kwargs."""

from __future__ import annotations

import os
import socket
import stat
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from generator.serve.load_errors import clean_load_error, load_failure
from generator.serve.ports import Ports, free_ports, port_is_free
from generator.serve.server import EmbeddedServer
from generator.serve import triton_install as ti
from generator.serve.docker_server import (DEFAULT_IMAGE, DockerOptions, DockerServer,
                                           compatibility_warnings, image_release, run_kwargs)
from generator.errors import PortInUseError, SpecError, ToolError
from generator.spec import ModelSpec, TensorSpec
from generator.status import FAILED, SKIPPED
from generator.serve.verify import Case, Target, bad_requests, batch_sizes, row_slices


@pytest.fixture
def listening():
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        yield s.getsockname()[1]


# -- ports ------------------------------------------------------------------------------------


def test_port_is_free_tracks_a_listener(listening):
    assert not port_is_free(listening)
    (free,) = free_ports(1)
    assert port_is_free(free)


def test_check_free_names_the_port_and_its_flag(listening):
    h, m = free_ports(2)
    with pytest.raises(PortInUseError) as e:
        Ports(h, m, listening).check_free()
    assert f"port {listening}" in e.value.message and "metrics" in e.value.message
    assert "--metrics-port" in e.value.tip
    assert isinstance(e.value, OSError)  # callers catching the builtin keep working


def test_ports_must_differ_and_be_valid():
    with pytest.raises(SpecError, match="must differ"):
        Ports(8000, 8000, 8002).validate()
    with pytest.raises(SpecError, match="not a TCP port"):
        Ports(0, 8001, 8002).validate()
    assert len(set(free_ports(3))) == 3


# -- the bundled server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def install():
    return ti.TritonInstall.locate()


def test_locate_finds_the_bundled_server(install):
    assert install.binary.is_file() and os.access(install.binary, os.X_OK)
    assert (install.python_backend / "libtriton_python.so").is_file()
    assert install.libs.is_dir()


def test_backend_dir_has_the_stub_of_this_python(install, tmp_path):
    d = ti.bundled_backend_dir(install, cache=tmp_path)
    stub = d / "python" / "triton_python_backend_stub"
    assert stub.is_file() and stub.stat().st_mode & stat.S_IXUSR
    assert stub.read_bytes() == install.stub(ti.python_version()).read_bytes()
    assert (d / "python" / "libtriton_python.so").is_file()
    assert (d / "python" / "triton_python_backend_utils.py").is_file()
    assert ti.bundled_backend_dir(install, cache=tmp_path) == d  # built once, then reused
    assert not list(tmp_path.glob(".backends-*"))  # no staging left


def test_backend_dir_for_a_python_without_stub(install, tmp_path):
    with pytest.raises(ToolError, match="no Python-backend stub for Python 2.7") as e:
        ti.bundled_backend_dir(install, cache=tmp_path, pyver="2.7")
    assert "3.11" in e.value.message


def _fake_backend(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / f"libtriton_{name}.so").write_bytes(b"")
    return d


def test_extra_backend_dirs_are_merged_as_symlinks(install, tmp_path):
    base = ti.bundled_backend_dir(install, cache=tmp_path / "c")
    ngc = tmp_path / "ngc_backends"
    _fake_backend(ngc, "pytorch")
    _fake_backend(ngc, "python")  # loses to the bundled one, whose stub matches this Python
    single = _fake_backend(tmp_path / "single", "onnxruntime")  # a dir that is one backend
    merged = ti.merged_backend_dir(base, [ngc, single], cache=tmp_path / "c")
    assert sorted(p.name for p in merged.iterdir()) == ["onnxruntime", "python", "pytorch"]
    assert (merged / "python").resolve() == (base / "python").resolve()
    assert (merged / "pytorch").resolve() == (ngc / "pytorch").resolve()
    assert (merged / "onnxruntime").resolve() == single.resolve()
    assert ti.merged_backend_dir(base, [], cache=tmp_path / "c") == base


def test_a_merge_whose_backends_are_gone_is_pruned_when_another_is_made(install, tmp_path):
    import shutil

    base = ti.bundled_backend_dir(install, cache=tmp_path / "c")
    gone, kept = _fake_backend(tmp_path / "gone", "pytorch"), _fake_backend(tmp_path / "k", "onnx")
    old = ti.merged_backend_dir(base, [gone.parent], cache=tmp_path / "c")
    alive = ti.merged_backend_dir(base, [kept.parent], cache=tmp_path / "c")
    shutil.rmtree(gone.parent)  # e.g. a temporary folder, deleted
    newer = ti.merged_backend_dir(base, [_fake_backend(tmp_path / "n", "pytorch").parent],
                                  cache=tmp_path / "c")
    assert not old.exists() and alive.is_dir() and newer.is_dir() and base.is_dir()


def test_bad_backend_directories(install, tmp_path):
    base = ti.bundled_backend_dir(install, cache=tmp_path / "c")
    with pytest.raises(SpecError, match="is not a directory"):
        ti.merged_backend_dir(base, [tmp_path / "nope"], cache=tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="holds no Triton backend"):
        ti.merged_backend_dir(base, [tmp_path / "empty"], cache=tmp_path / "c")


def test_env_puts_libpython_first_and_this_venv_on_path(install):
    env = ti.server_env(install, {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/opt/x"})
    ld = env["LD_LIBRARY_PATH"].split(":")
    assert ld == [sysconfig.get_config_var("LIBDIR"), str(install.libs), "/opt/x"]
    first = Path(env["PATH"].split(os.pathsep)[0])
    assert (first / "python3").exists()
    assert env["PATH"].endswith("/usr/bin:/bin")


def test_embedded_command_and_backends(tmp_path):
    s = EmbeddedServer(tmp_path, Ports(9000, 9001, 9002), log_path=tmp_path / "l.log",
                       backend_dirs=())
    cmd = s.command()
    assert cmd[0].endswith("bin/tritonserver")
    for flag in ("--model-control-mode=explicit", "--http-port=9000", "--grpc-port=9001",
                 "--metrics-port=9002", f"--model-repository={tmp_path.resolve()}",
                 f"--backend-directory={s.backend_dir}"):
        assert flag in cmd
    assert s.missing_backend_reason("python") is None
    reason = s.missing_backend_reason("pytorch")
    assert "no PyTorch backend" in reason and "--docker" in reason
    assert "--backend-directory" in reason
    assert "onnxruntime" in s.missing_backend_reason("onnxruntime")


def test_embedded_server_with_a_pytorch_backend_directory(tmp_path):
    _fake_backend(tmp_path / "extra", "pytorch")
    s = EmbeddedServer(tmp_path, log_path=tmp_path / "l.log",
                       backend_dirs=[tmp_path / "extra"])
    assert s.missing_backend_reason("pytorch") is None
    # a backend without its own libtorch.so gets this environment's torch/lib on the path
    assert s.library_dirs == [ti.torch_lib_dir()] and ti.torch_lib_dir() is not None
    ld = ti.server_env(s.install, {}, s.library_dirs)["LD_LIBRARY_PATH"].split(":")
    assert ld[2] == str(ti.torch_lib_dir())


def test_a_pytorch_backend_that_ships_libtorch_keeps_its_own(tmp_path):
    """The NGC image's backend directory holds libtorch.so: LD_LIBRARY_PATH would override its
    RUNPATH, so this environment's torch/lib is not added."""
    _fake_backend(tmp_path / "ngc", "pytorch")
    (tmp_path / "ngc" / "pytorch" / "libtorch.so").write_bytes(b"")
    s = EmbeddedServer(tmp_path, log_path=tmp_path / "l.log", backend_dirs=[tmp_path / "ngc"])
    assert s.missing_backend_reason("pytorch") is None and s.library_dirs == []


def test_backend_directories_default_to_the_environment_variable(tmp_path, monkeypatch):
    _fake_backend(tmp_path / "a", "pytorch")
    monkeypatch.setenv(ti.BACKEND_DIRS_ENV, f"{tmp_path / 'a'}{os.pathsep}")
    assert ti.default_backend_dirs() == (str(tmp_path / "a"),)
    s = EmbeddedServer(tmp_path, log_path=tmp_path / "l.log")
    assert s.missing_backend_reason("pytorch") is None
    monkeypatch.setenv(ti.BACKEND_DIRS_ENV, "")
    assert ti.default_backend_dirs() == ()
    s = EmbeddedServer(tmp_path, log_path=tmp_path / "l.log")
    assert ti.BACKEND_DIRS_ENV in s.missing_backend_reason("pytorch")


def test_backends_are_found_where_triton_keeps_them(tmp_path, monkeypatch):
    """With neither --backend-directory nor the variable, /opt/tritonserver/backends (Triton's
    install, the NGC image) is used when it holds a PyTorch backend; serve names the directory."""
    system = tmp_path / "opt" / "backends"
    monkeypatch.setattr(ti, "SYSTEM_BACKENDS", system)
    monkeypatch.delenv(ti.BACKEND_DIRS_ENV, raising=False)
    _fake_backend(system, "onnxruntime")
    assert ti.default_backend_dirs() == ()  # no pytorch/ there: not used
    _fake_backend(system, "pytorch")
    assert ti.default_backend_dirs() == (str(system),)
    s = EmbeddedServer(tmp_path, log_path=tmp_path / "l.log")
    assert s.missing_backend_reason("pytorch") is None
    line, tip = s.backends_note(needs_pytorch=True)
    assert str(system) in line and "where Triton keeps" in line and tip is None
    assert f"PyTorch backend: {(system / 'pytorch').resolve()}" in line
    # the variable wins; set empty it means none, /opt included
    monkeypatch.setenv(ti.BACKEND_DIRS_ENV, "")
    assert ti.default_backend_dirs() == ()
    # so does the flag (an explicit list, here empty)
    monkeypatch.delenv(ti.BACKEND_DIRS_ENV)
    s = EmbeddedServer(tmp_path, log_path=tmp_path / "l.log", backend_dirs=())
    assert s.missing_backend_reason("pytorch") is not None


def test_serve_without_a_pytorch_backend_says_where_it_looked_and_how_to_get_one(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(ti, "SYSTEM_BACKENDS", tmp_path / "absent")
    monkeypatch.delenv(ti.BACKEND_DIRS_ENV, raising=False)
    s = EmbeddedServer(tmp_path, log_path=tmp_path / "l.log")
    line, tip = s.backends_note(needs_pytorch=True)
    assert "no PyTorch backend" in line and ti.BACKEND_DIRS_ENV in line
    assert str(tmp_path / "absent") in line
    assert "docker cp" in tip and "/opt/tritonserver/backends" in tip and ti.NGC_IMAGE in tip
    assert s.backends_note(needs_pytorch=False)[1] is None  # no libtorch model: no TIP
    _fake_backend(tmp_path / "extra", "onnxruntime")
    s = EmbeddedServer(tmp_path, log_path=tmp_path / "l.log", backend_dirs=[tmp_path / "extra"])
    line, tip = s.backends_note(needs_pytorch=True)
    assert f"{tmp_path / 'extra'} (from --backend-directory)" in line and "docker cp" in tip


@pytest.mark.parametrize("reason,state,says,tip", [
    # what the server answered, seen on the real r24.10 PyTorch backend
    ("unable to load shared library: libtorch.so: cannot open shared object file: No such file"
     " or directory", FAILED, "libtorch.so is not on the server's library path", "torch/lib"),
    ("unable to load shared library: /b/pytorch/libtriton_pytorch.so: undefined symbol:"
     " _ZN3c1015SmallVectorBase", FAILED, "undefined symbol _ZN3c1015SmallVectorBase",
     "built against another version"),
    ("unable to load shared library: libfoo.so.3: cannot open shared object file", FAILED,
     "libfoo.so.3 is missing", "LD_LIBRARY_PATH"),
    ("failed to load model 'detector_libtorch': Unknown builtin op: torchvision::nms. Could not"
     " find any similar ops", SKIPPED, "calls torchvision::nms", "NGC"),
])
def test_load_failures_say_what_to_do(reason, state, says, tip):
    got_state, got_reason, got_tip = load_failure("pytorch", reason)
    assert (got_state, says in got_reason, tip in got_tip) == (state, True, True)


def test_other_load_failures_keep_the_servers_words():
    assert load_failure("python", "ArtifactError: bad") == (FAILED, "ArtifactError: bad",
                                                        None)


def test_clean_load_error():
    raw = ("[400] load failed for model 'm_python': version 1 is at UNAVAILABLE state: Internal:"
           " ArtifactError: artifact /r/m/1/model.package has SHA-256 abc, but the build recorded"
           " def\n\nAt:\n  /r/m/1/model.py(60): load_model\n;\n")
    assert clean_load_error(raw) == ("ArtifactError: artifact /r/m/1/model.package has"
                                     " SHA-256 abc, but the build recorded def")
    assert clean_load_error("plain") == "plain"


# -- docker -----------------------------------------------------------------------------------


def test_run_kwargs_host_network(tmp_path):
    kw = run_kwargs(tmp_path, Ports(9000, 9001, 9002), DockerOptions(), "c1")
    assert kw["image"] == DEFAULT_IMAGE == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert kw["network_mode"] == "host" and "ports" not in kw
    assert kw["volumes"] == {str(tmp_path.resolve()): {"bind": "/models", "mode": "ro"}}
    assert kw["command"][0] == "tritonserver"
    assert {"--model-repository=/models", "--model-control-mode=explicit", "--http-port=9000",
            "--grpc-port=9001", "--metrics-port=9002"} <= set(kw["command"])
    assert not any(a.startswith("--backend-directory") for a in kw["command"])
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1"} <= set(kw["command"])
    restricted = [a for a in kw["command"] if a.startswith(("--http-restricted-api=",
                                                            "--grpc-restricted-protocol="))]
    assert len(restricted) == 2 and all(
        "model-repository,shared-memory,trace,logging:gen-repo-control-key=" in a
        for a in restricted)
    assert kw["shm_size"] == "1g" and kw["detach"] and kw["name"] == "c1"
    assert kw["device_requests"] == []


def test_run_kwargs_bridge_publishes_ports_and_gpus(tmp_path):
    opts = DockerOptions(image="img:1", gpus="0,1", shm_size="2g", network="bridge")
    kw = run_kwargs(tmp_path, Ports(9000, 9001, 9002), opts, "c2")
    assert kw["ports"] == {"8000/tcp": ("127.0.0.1", 9000), "8001/tcp": ("127.0.0.1", 9001),
                           "8002/tcp": ("127.0.0.1", 9002)}
    assert "--http-address=0.0.0.0" in kw["command"]  # inside the container; published on 127.0.0.1
    assert "--http-port=8000" in kw["command"] and "network_mode" not in kw
    (req,) = kw["device_requests"]
    assert req["DeviceIDs"] == ["0", "1"] and req["Capabilities"] == [["gpu"]]
    assert kw["shm_size"] == "2g"
    (req,) = run_kwargs(tmp_path, Ports(), DockerOptions(gpus="all"), "c")["device_requests"]
    assert req["Count"] == -1


@pytest.mark.parametrize("opts, match", [
    (DockerOptions(gpus="first"), "--gpus"),
    (DockerOptions(shm_size="lots"), "--shm-size"),
    (DockerOptions(network="overlay"), "--docker-network"),
])
def test_run_kwargs_rejects_bad_options(tmp_path, opts, match):
    with pytest.raises(SpecError, match=match):
        run_kwargs(tmp_path, Ports(), opts, "c")


def test_no_docker_engine_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    server = DockerServer(tmp_path, Ports(*free_ports(3)), log_path=tmp_path / "d.log",
                          start_timeout=5)
    with pytest.raises(ToolError) as e:
        with server:
            pass
    assert "no docker engine is reachable" in e.value.message
    assert "docker info" in e.value.tip and "without --docker" in e.value.tip


class _FakeModel:  # the two attributes compatibility_warnings reads from a layout.BuiltModel
    target_release = None  # built before --triton-release was recorded

    def __init__(self, name, backend, torch):
        self.name, self.backend = name, backend
        self.record = {"versions": {"torch": torch}}


def test_compatibility_warnings():
    assert image_release(DEFAULT_IMAGE) == "24.10" and image_release("my/triton:latest") is None
    models = [_FakeModel("m_libtorch", "pytorch", "2.15.0+cu132"),
              _FakeModel("m_python", "python", "2.15.0+cu132"),
              _FakeModel("old_libtorch", "pytorch", "2.5.1")]
    warnings = compatibility_warnings(models, DEFAULT_IMAGE)
    assert len(warnings) == 2
    assert "m_libtorch" in warnings[0] and "2.15.0" in warnings[0] and "2.5" in warnings[0]
    assert "m_python" in warnings[1] and "torch==2.15.0" in warnings[1] and "--image" in warnings[1]
    assert compatibility_warnings(models, "my/triton:latest") == []


# -- verify helpers ---------------------------------------------------------------------------


def test_batch_sizes_and_slices():
    assert batch_sizes(4) == [1, 2, 4] and batch_sizes(1) == [1] and batch_sizes(0) == [None]
    assert row_slices(3) == [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3)]
    assert row_slices(0) == [(None, None)]


def _target(max_batch_size=8):
    spec = ModelSpec(name="m", inputs=(TensorSpec("tokens", "int64", (-1,)),
                                       TensorSpec("x", "float32", (3, 2))),
                     outputs=(TensorSpec("y", "float32", (2,)),), max_batch_size=max_batch_size)
    rows = 4 if max_batch_size else None
    lead = (rows,) if rows else ()
    samples = {"tokens": np.arange(np.prod(lead + (5,))).reshape(lead + (5,)).astype(np.int64),
               "x": np.ones(lead + (3, 2), np.float32)}
    reference = {"y": np.zeros(lead + (2,), np.float32)}
    b = {k: v[:3] for k, v in samples.items()} if rows else samples
    return Target("m", "python", spec, [Case("a", samples, reference),
                                        Case("b", b, {"y": reference["y"][:3]})])


def test_jobs_cycle_through_every_slice_of_every_case():
    t = _target()
    jobs = t.jobs(25)
    assert len(jobs) == 25
    assert {(c.name, s, e) for c, s, e in jobs[:16]} == \
        {("a", s, e) for s, e in row_slices(4)} | {("b", s, e) for s, e in row_slices(3)}
    case, start, stop = jobs[0]
    (name, arr, wire), _ = t.tensors(case, start, stop)
    assert name == "tokens" and wire == "INT64" and arr.shape == (1, 5)
    assert t.expected(case, 1, 3)["y"].shape == (2, 2)


def test_bad_requests_are_each_malformed_in_one_way():
    t = _target()
    cases = {c.label: c for c in bad_requests(t)}
    assert set(cases) == {"wrong dtype", "wrong shape", "missing input",
                          "batch 9 > max_batch_size"}
    name, arr, wire = cases["wrong dtype"].tensors[0]
    assert (name, wire, arr.dtype) == ("tokens", "FP64", np.float64)
    name, arr, _ = cases["wrong shape"].tensors[0]
    assert name == "tokens" and arr.shape == (1, 5, 1)  # only dynamic dims: one axis too many
    assert [n for n, _, _ in cases["missing input"].tensors] == ["x"]
    assert all(a.shape[0] == 9 for _, a, _ in cases["batch 9 > max_batch_size"].tensors)
    assert "tokens" in cases["missing input"].expect


def test_bad_requests_without_batching_change_a_fixed_dim():
    spec = ModelSpec(name="m", inputs=(TensorSpec("x", "float32", (3, 2)),),
                     outputs=(TensorSpec("y", "float32", (2,)),), max_batch_size=0)
    t = Target("m", "python", spec, [Case("a", {"x": np.ones((3, 2), np.float32)},
                                          {"y": np.zeros(2, np.float32)})])
    cases = {c.label: c for c in bad_requests(t)}
    assert set(cases) == {"wrong dtype", "wrong shape", "missing input"}  # no batch to oversize
    assert cases["wrong shape"].tensors[0][1].shape == (3, 3)
    assert cases["missing input"].tensors == []


# -- the commands without a server ------------------------------------------------------------


def test_verify_without_a_server(run_cli, tmp_path):
    from generator.repository.layout import CONFIG

    (tmp_path / "m_python").mkdir()
    (tmp_path / "m_python" / CONFIG).write_text('name: "m_python"\nbackend: "python"\n')
    (port,) = free_ports(1)
    code, out, err = run_cli("verify", "--repo", tmp_path, "--http-url", f"localhost:{port}",
                             "--protocols", "http")
    assert code == 1
    assert f"no Triton server answers over HTTP at localhost:{port}" in err
    assert "TIP:" in err and "gen-repo serve" in err and "Traceback" not in err


@pytest.mark.parametrize("args, match", [
    (["serve", "--image", "x"], "--image applies to --docker only"),
    (["serve", "--docker", "--backend-directory", "/tmp"], "--backend-directory applies"),
    (["serve", "--http-port", "8000", "--grpc-port", "8000"], "must differ"),
    (["verify", "--protocols", "ftp"], "--protocols"),
    (["verify", "--concurrency", "0"], "--concurrency"),
])
def test_bad_flags_are_usage_errors(run_cli, tmp_path, args, match):
    from generator.repository.layout import CONFIG

    (tmp_path / "m_python").mkdir()
    (tmp_path / "m_python" / CONFIG).write_text('name: "m_python"\nbackend: "python"\n')
    code, _, err = run_cli(*args, "--repo", tmp_path)
    assert code == 2 and match in err and "TIP:" in err, err


def test_models_filter_names_unknown_models(run_cli, tmp_path):
    from generator.repository.layout import CONFIG

    (tmp_path / "m_python").mkdir()
    (tmp_path / "m_python" / CONFIG).write_text('name: "m_python"\nbackend: "python"\n')
    code, _, err = run_cli("verify", "--repo", tmp_path, "--models", "m_pyton")
    assert code == 2 and 'did you mean "m_python"' in err
