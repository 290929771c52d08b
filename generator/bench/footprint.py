"""What a loaded model costs besides its speed, measured once per model and instance count on
bench's own server: memory, GPU memory, load time and the first request's latency.

    memory         a Python-backend model: the PSS and USS of its stub processes (one per
                   instance) summed, read idle after the warm-up (once the instances have given
                   back what the forward passes freed), and the peak PSS sampled during the
                   warm-up (under load); a model of a backend that runs inside the server
                   (PyTorch): the server process's resident memory after its load less before
    GPU memory     what nvidia-smi lists for the same processes (None without a GPU)
    load           from the load request to READY
    first request  one request of the model's first stored sample row, right after READY

The figures are kept in the model's entry of results.json's ``loads``.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import progress
from ..repository import layout, manifest
from ..repository.config import write_config
from ..repository.layout import BuiltModel
from ..serve import processes
from ..status import READY
from .workspace import BenchModel

PSS, RSS_GROWTH = "PSS", "server RSS growth"  # how a model's memory was measured
NO_GPU = "GPU memory: not measured (no GPU here: nvidia-smi is missing or answers none)."


def in_server(backend: str) -> bool:
    """Whether a backend runs a model's instances inside the server process (not the Python
    backend, whose instances are stub processes)."""
    return backend != "python"


def attributable(entry: dict) -> tuple[int | None, str]:
    """The memory a load entry attributes to its model, and how it was measured."""
    if entry.get("pss_bytes") is not None:
        return entry["pss_bytes"], PSS
    before, after = entry.get("rss_before_bytes"), entry.get("rss_after_bytes")
    if before is not None and after is not None:
        return max(0, after - before), RSS_GROWTH
    return None, ""


def load(target, model: BenchModel, instances: int | None, protocol: str):
    """Load ``model`` (``instances`` each group; None: as configured) on ``target``: its
    ModelStatus and the facts of the load -- seconds to READY, the server's resident and GPU
    memory before and after for a backend inside the server, and the first request's latency.
    On a server bench does not own (no pid) only the seconds: its models are loaded already."""
    pid = target.pid
    own = pid is not None and in_server(model.built.backend)
    before = _server_usage(pid) if own else None
    start = time.perf_counter()
    status = target.load(model, instances)
    facts: dict = {"seconds": round(time.perf_counter() - start, 2)}
    if status.state != READY or pid is None:
        return status, facts
    if own:
        after = _server_usage(pid)
        facts.update(rss_before_bytes=before[0], rss_after_bytes=after[0])
        if before[1] is not None and after[1] is not None:
            facts["gpu_bytes"] = max(0, after[1] - before[1])
    facts["first_request_ms"] = first_request_ms(target.url(protocol), protocol, model.built)
    return status, facts


def _stubs(target, model: BenchModel) -> list:
    """The stub processes of a loaded Python-backend model ([] for another backend or a server
    bench does not own)."""
    pid = target.pid
    if pid is None or in_server(model.built.backend):
        return []
    return processes.stubs_of(processes.stub_processes(pid).values(), model.name)


def under_load(target, model: BenchModel) -> processes.PeakMemory:
    """A block whose peaks of the model's stubs (``.pss``, ``.private``, ``.shared``; None for a
    model inside the server) are what they hold while it runs: bench's warm-up, a tune
    candidate's measurement."""
    return processes.PeakMemory(_stubs(target, model), every=0.1)


def wait_idle(since: float) -> None:
    """Sleep until the Python-backend instances have had no request for longer than the
    runtime's release time since ``since`` (time.monotonic()): their idle memory, after they
    gave back what the forward passes freed."""
    from ..runtime.model import DEFAULT_RELEASE_IDLE_MS

    time.sleep(max(0.0, since + DEFAULT_RELEASE_IDLE_MS / 1000 + 0.5 - time.monotonic()))


def memory(target, model: BenchModel) -> dict:
    """A loaded Python-backend model's stub processes: PSS and USS summed over them, how many,
    and the GPU memory they use; {} for another backend or a server bench does not own."""
    stubs = _stubs(target, model)
    if not stubs:
        return {}
    total = processes.total_memory(stubs)
    facts = {"pss_bytes": total.pss, "uss_bytes": total.uss, "stubs": len(stubs)}
    gpu = processes.gpu_memory()
    if gpu is not None:
        facts["gpu_bytes"] = sum(gpu.get(p.pid, 0) for p in stubs)
    return facts


def _server_usage(pid: int) -> tuple[int | None, int | None]:
    """(resident bytes, GPU bytes) of the server process itself, without its stubs."""
    gpu = processes.gpu_memory()
    return (processes.resident_bytes(pid, with_descendants=False),
            gpu.get(pid, 0) if gpu is not None else None)


def first_request_ms(url: str, protocol: str, model: BuiltModel) -> float | None:
    """Milliseconds one request of the model's first stored sample row takes (its first call
    once READY); None for a model without stored samples, or when the request fails."""
    from ..serve.protocols import Protocol
    from ..serve.verify import load_target

    if not model.built_by_gen_repo:
        return None
    proto = Protocol(protocol, url, timeout=120)
    client = proto.client()
    try:
        target = load_target(model)
        case = target.cases[0]
        tensors = target.tensors(case, 0, 1)
        client.is_model_ready(model.name)  # the connection is made before the clock starts
        start = time.perf_counter()
        proto.infer(client, model.name, tensors, target.outputs)
        return round((time.perf_counter() - start) * 1000, 2)
    except Exception as e:  # a figure of the report; the sweep's points say what fails
        progress.warn(f"{model.name}: the first request failed ({str(e)[:200]}); no"
                      " first-request latency")
        return None
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# the PyTorch backend's own libraries, loaded before any model is measured

PRIME_MODEL = "gen_repo_prime_pytorch"
PRIME_CONFIG = {  # Triton's JSON model config; "name" is the model directory's
    "platform": "pytorch_libtorch", "max_batch_size": 0,
    "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [1]}],
    "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [1]}],
    "instance_group": [{"kind": "KIND_CPU", "count": 1}],
    "parameters": {"INTRA_OP_THREAD_COUNT": {"string_value": "1"}}}


def prime(target, backends: set[str]) -> None:
    """Load and unload a one-layer model of each backend among ``backends`` that runs inside the
    server (pytorch), unmeasured, written into the repository ``target`` serves: the first model
    of such a backend brings the backend's libraries into the server (~0.5 GB for libtorch),
    which no model should be charged with. The Python backend's instances are processes of their
    own, counted in full."""
    if "pytorch" not in backends:
        return
    model = BenchModel(_identity_torchscript(target.repo / PRIME_MODEL))
    status = target.load(model, None)
    if status.state == READY:
        target.unload(model)
    else:
        progress.warn(f"the PyTorch backend did not load a one-layer model ({status.reason});"
                      " the first libtorch model's memory includes the backend's libraries")


def _identity_torchscript(target: Path) -> BuiltModel:
    """A model directory holding a scripted identity for the PyTorch backend."""
    import warnings

    import torch
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    (target / layout.VERSION).mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated"
        torch.jit.script(torch.nn.Identity()).save(str(target / layout.VERSION / "model.pt"))
    config = json_format.ParseDict(dict(PRIME_CONFIG, name=target.name),
                                   model_config_pb2.ModelConfig())
    write_config(target, config, "Written by gen-repo: primes the PyTorch backend.")
    manifest.write(target)
    return BuiltModel(target)
