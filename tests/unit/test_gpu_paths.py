"""The logic of the KIND_GPU paths, on the CPU: which device the ceiling runs on, waiting for a
CUDA device, a trace that baked in its device, a crashed check worker, tune's GPU space.

The paths themselves ran on a GPU with scripts/gpu-check.sh (README, "The GPU check").
"""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path
from types import SimpleNamespace

import torch
from tritonclient.grpc import model_config_pb2

from generator.bench.ceiling import _synchronized, device_of
from generator.build.check import CRASH_TIP, LOAD_TIP, OOM_TIP, worker_crash
from generator.tune.candidate import Candidate
from generator.tune.space import Space, _settings
from generator.variants.torchscript import baked_devices

ROOT = Path(__file__).resolve().parents[2]


def _example_models():
    """examples/gpu_check/gpu_models.py, loaded from its file (examples are not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_check_models",
                                                  ROOT / "examples" / "gpu_check" / "gpu_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_models = _example_models()

Group = model_config_pb2.ModelInstanceGroup


def _config(*groups) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig(name="m", max_batch_size=8)
    for kind, gpus in groups:
        config.instance_group.add(kind=kind, count=1, gpus=gpus)
    return config


def test_the_ceiling_runs_where_the_instances_run():
    assert device_of(_config((Group.KIND_CPU, []))) == "cpu"
    assert device_of(_config()) == "cpu"
    assert device_of(_config((Group.KIND_GPU, []))) == "cuda:0"
    assert device_of(_config((Group.KIND_CPU, []), (Group.KIND_GPU, [2, 3]))) == "cuda:2"


def test_a_cuda_forward_pass_is_timed_to_its_end_and_a_cpu_one_as_it_is():
    calls = []

    def run(model, tensors):
        calls.append("run")
        return "out"

    assert _synchronized(run, torch, torch.device("cpu")) is run
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(synchronize=lambda d: calls.append(d)))
    wrapped = _synchronized(run, fake_torch, torch.device("cuda:1"))
    assert wrapped(None, []) == "out"
    assert calls == ["run", torch.device("cuda:1")]


def test_a_trace_that_created_a_tensor_on_its_own_device_is_found_with_the_users_line():
    tokens = torch.randint(0, 999, (2, 8))
    traced = torch.jit.trace(gpu_models.tiny_transformer(), (tokens,), strict=False,
                             check_trace=False)
    found = baked_devices(traced)
    assert len(found) == 1 and found[0].startswith("aten::arange at ")
    assert found[0].endswith("gpu_models.py(45)"), found  # `positions = torch.arange(...)`
    cnn = torch.jit.trace(gpu_models.small_cnn(), (torch.randn(2, 3, 64, 64),))
    assert baked_devices(cnn) == []
    scripted = torch.jit.script(gpu_models.tiny_transformer())
    assert baked_devices(scripted) == []  # script keeps `device=tokens.device`


def test_a_check_worker_killed_by_a_signal_is_named_as_a_crash_not_an_import_problem():
    detail, tip = worker_crash(-signal.SIGSEGV, "loading model.pt2\n")
    assert detail == "the check process was killed by SIGSEGV (loading model.pt2)"
    assert tip == CRASH_TIP.format(signal="SIGSEGV") and "torch.package" not in tip
    detail, tip = worker_crash(-signal.SIGKILL, "")
    assert detail == "the check process was killed by SIGKILL" and tip == OOM_TIP
    detail, tip = worker_crash(2, "Traceback ...\nModuleNotFoundError: No module named 'x'")
    assert detail.startswith("worker exited 2: Traceback") and tip == LOAD_TIP


def test_tune_does_not_search_cpu_threads_of_a_gpu_instance_unless_asked():
    def model(kind):
        return SimpleNamespace(config=_config((kind, [])))

    default = Candidate("m_python", "python", 1, 1, True, 100, (), 8)
    gpu = _settings(model(Group.KIND_GPU), Space(), default, n_cores=16)
    assert gpu == [(1, 1), (2, 1)]
    asked = _settings(model(Group.KIND_GPU), Space(threads=(1, 4)), default, n_cores=16)
    assert (1, 4) in asked and (2, 4) in asked
    cpu = _settings(model(Group.KIND_CPU), Space(), default, n_cores=4)
    assert (1, 4) in cpu and (4, 1) in cpu
