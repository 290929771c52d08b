"""The in-process ceiling: the same artifacts, batch sizes and thread settings, no server.

Each artifact (the eager torch.package, the TorchScript model.pt) is loaded exactly as the
Python-backend runtime loads it (``generator.runtime.model.load_model``, SHA-256 check included)
in a fresh worker process (one per model, started before the server so nothing competes with
it) and run in a tight loop on the same input rows perf_analyzer sends; the fastest of a few
slices of each setting counts. The best of these numbers is what this machine can do for the
model; the report shows each served variant as a fraction of it.

The worker: ``python -m generator.bench.ceiling JOB.json OUT.json``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import progress
from ..repository.files import write_atomic
from ..errors import ToolError
from ..variants.base import EAGER, TORCHSCRIPT
from .workspace import config_parameters

LOADER_KIND = {"package": EAGER, "torchscript": TORCHSCRIPT}


@dataclass(frozen=True)
class CeilingPoint:
    model: str  # base model name (resnet18)
    kind: str  # eager | torchscript
    source: str  # model directory the artifact came from
    batch_size: int
    threads: int
    throughput: float  # inferences (rows) per second
    p50_ms: float  # median time of one forward pass
    iterations: int
    device: str = "cpu"  # where it ran: the served instances' device (cuda:N for KIND_GPU)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Artifact:
    """One artifact to measure: a model directory and how its runtime loads it."""

    model: str
    source: str
    path: str  # model directory
    load_params: dict
    batching: bool
    device: str = "cpu"  # torch device of the served model's instances

    @property
    def kind(self) -> str:
        loader = self.load_params.get("loader", "")
        kind = LOADER_KIND.get(loader, loader)
        return kind + "+compile" if self.load_params.get("compile_mode") else kind


def load_params_of(built) -> dict:
    """How the runtime loads a model's artifact: its config parameters on the Python backend
    (what the server uses), else the build record's (a libtorch model.pt)."""
    if built.backend == "python":
        params = config_parameters(built)
        if "artifact" in params and "loader" in params:
            return params
    return dict(built.record.get("load_params") or {})


def artifacts_of(models) -> list[Artifact]:
    """One Artifact per (base model, kind) among bench models, preferring python-backend dirs."""
    seen: dict[tuple[str, str], Artifact] = {}
    for m in sorted(models, key=lambda m: m.built.backend != "python"):
        params = load_params_of(m.built)
        if not params:
            continue
        a = Artifact(m.base_name, m.name, str(m.built.path), params,
                     m.built.config.max_batch_size > 0, device_of(m.built.config))
        seen.setdefault((a.model, a.kind), a)
    return list(seen.values())


def device_of(config) -> str:
    """The torch device of a model config's instances: the first GPU of its first KIND_GPU
    group ("cuda:N", as the runtime's GPU instance uses), else "cpu"."""
    for group in config.instance_group:
        if group.kind == group.KIND_GPU:
            return f"cuda:{group.gpus[0] if group.gpus else 0}"
    return "cpu"


def measure(artifacts: list[Artifact], batch_sizes: list[int], threads: list[int],
            seconds: float, timeout: float = 900.0) -> list[CeilingPoint]:
    """Run the worker once per model (its artifacts one after the other); every point."""
    points: list[CeilingPoint] = []
    by_model: dict[str, list[Artifact]] = {}
    for a in artifacts:
        by_model.setdefault(a.model, []).append(a)
    for model, arts in by_model.items():
        kinds = ", ".join(a.kind for a in arts)
        with progress.step(f"in-process ceiling of {model}: {kinds} (batch"
                           f" {_csv(batch_sizes)}, threads {_csv(threads)}, {seconds:g} s each)"):
            points += _run_worker(arts, batch_sizes, threads, seconds, timeout)
    return points


def _csv(values) -> str:
    return ",".join(map(str, values))


def _run_worker(arts: list[Artifact], batch_sizes, threads, seconds, timeout):
    names = ", ".join(a.source for a in arts)
    with tempfile.TemporaryDirectory(prefix="gen-repo-ceiling-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"artifacts": [asdict(a) for a in arts],
                                   "batch_sizes": list(batch_sizes), "threads": list(threads),
                                   "seconds": seconds}))
        try:
            proc = subprocess.run([sys.executable, "-m", "generator.bench.ceiling", str(job),
                                   str(out)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ToolError(f"the in-process ceiling of {names} took over {timeout:.0f} s.",
                            "Shorten it (--ceiling-seconds, --quick) or skip it with"
                            " --no-ceiling.") from e
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise ToolError(f"the in-process ceiling of {names} failed (exit"
                            f" {proc.returncode}):\n{tail}",
                            "Check the artifacts load (gen-repo build checks them; rebuild the"
                            " model), or skip the ceiling with --no-ceiling.")
        return [CeilingPoint(**p) for p in json.loads(out.read_text())]


# ---------------------------------------------------------------------------------------------
# the worker (a fresh process)


def _input_entry(config_input) -> dict:
    """A config input (protobuf) as the runtime takes it: Triton's JSON config spelling."""
    entry = {"name": config_input.name, "dims": list(config_input.dims)}
    if config_input.HasField("reshape"):
        entry["reshape"] = {"shape": list(config_input.reshape.shape)}
    return entry


def _rows(samples: dict, inputs: list[dict], batching: bool, batch_size: int):
    """The input row perf_analyzer sends (row 0), repeated to ``batch_size`` rows, shaped as
    the server hands it to the model (the config's reshape applied)."""
    import numpy as np
    import torch

    from ..runtime.model import as_model_receives

    out = []
    for array, entry in zip(samples.values(), inputs):
        a = np.asarray(array)
        if batching:
            a = np.repeat(a[:1], batch_size, axis=0)
        a = as_model_receives(a, entry, batching)
        out.append(torch.from_numpy(np.ascontiguousarray(a)))
    return out


def worker(job: dict) -> list[dict]:
    from ..runtime import model as runtime  # first: the runtime may set up threading env

    import torch

    try:
        torch.set_num_interop_threads(1)  # as the runtime does
    except RuntimeError:
        pass
    points = []
    for spec in job["artifacts"]:
        points += _measure_artifact(runtime, torch, Artifact(**spec), job)
    return points


def _measure_artifact(runtime, torch, a: Artifact, job: dict) -> list[dict]:
    from ..repository.layout import BuiltModel

    built = BuiltModel(Path(a.path))
    samples = built.samples()  # as clients send them
    inputs = [_input_entry(i) for i in built.config.input]
    samples = {i["name"]: samples[i["name"]] for i in inputs}
    device = torch.device(a.device)
    model = runtime.load_model(built.path / "1", a.load_params, device, inputs,
                               log=lambda *_: None)
    run = _synchronized(runtime.run_batch, torch, device)
    points = []
    with runtime.forward_context(a.load_params.get(runtime.FORWARD_MODE)):  # as served
        for threads in job["threads"]:
            torch.set_num_threads(threads)
            for b in (job["batch_sizes"] if a.batching else [1]):
                tensors = [t.to(device) for t in _rows(samples, inputs, a.batching, b)]
                n, elapsed, times = runtime.time_forward(model, tensors, job["seconds"], run)
                points.append(CeilingPoint(a.model, a.kind, a.source, b, threads,
                                           n * b / elapsed, statistics.median(times) * 1e3, n,
                                           a.device).to_dict())
    return points


def _synchronized(run, torch, device):
    """``run``, waiting for the device to finish: a CUDA forward pass returns before its
    kernels have run, so an unsynchronised loop times the launches, not the work."""
    if device.type != "cuda":
        return run

    def run_and_wait(model, tensors):
        out = run(model, tensors)
        torch.cuda.synchronize(device)
        return out

    return run_and_wait


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    points = worker(job)
    write_atomic(Path(argv[1]), json.dumps(points))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
