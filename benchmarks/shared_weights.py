"""What the weights of a Python-backend model cost in memory across its instances, with them
inside the archive (one copy per instance) and mapped from 1/weights.pt (shared), and how long
the instances take to load.

    .venv/bin/python benchmarks/shared_weights.py [--model torchvision:resnet50] [--instances 4]
                                                  [--rounds 3] [--out shared_weights]
                                                  [--idle-seconds 2.5]

Builds the model's python variant three times with ``gen-repo build``: "before" (weights inside
the archive, every import at load: ``--no-mapped-weights --no-deferred-imports``; served by a
server with the backends' config auto-completion on, as gen-repo started it before), "archive"
(``--no-mapped-weights``) and "mapped" (the default), and a baseline the same way, each with
``--cpu-instances N``: a conv net with ~10 k weights that takes resnet50's input and answers
1000 logits through the same kinds of layers (tests/fixtures/weights.py:tiny_convnet; ``--baseline``/``--baseline-input`` for other
models), so that its stubs import the same libraries, run the same kinds of kernels and move
requests and responses of the same sizes. Each round loads every model alone on the embedded
tritonserver, in turn (the settings alternate within the round), sends it requests from several
clients at once so that every instance has run the model (sampling the summed PSS of its N
stubs every 0.1 s: the peak under load), lets it idle ``--idle-seconds`` and sums the PSS again
(shared pages counted once across the stubs, /proc/<pid>/smaps). What the model adds is its PSS
minus the baseline's of the same setting, in copies of the weights' bytes, in all and per kind
of mapping (the weights file, heap and anonymous memory, libraries, the Python backend's shared
memory for requests). Load time: from the load request to READY; and each step of one
instance's load in a fresh process of its own; the baseline's PSS per instance is the Python
backend's fixed cost of an instance. Where a PyTorch backend is found (GEN_REPO_BACKEND_DIRECTORY),
the model's libtorch variant is measured beside them, as built (``ENABLE_WEIGHT_SHARING``: its
instances share one copy of the weights) and with that parameter removed: what the server
process's PSS gains from before the model's load, less the same for the baseline built as
libtorch, each on a server of its own with a tiny libtorch model loaded first (the backend's
libraries are in the server before the measurement). Medians over the rounds; each round kept in ``results.json``, the
tables in ``shared_weights.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from generator.cli import main as gen_repo  # noqa: E402
from generator.repository import layout  # noqa: E402
from generator.serve.ports import Ports, free_ports  # noqa: E402
from generator.serve.processes import (PeakMemory, mappings, stub_processes, stubs_of,  # noqa: E402
                                       total_memory)
from generator.serve.server import EmbeddedServer  # noqa: E402
from generator.status import READY  # noqa: E402

BASELINE = f"{HERE.parent}/tests/fixtures/weights.py:tiny_convnet"
BASELINE_INPUT = "x:float32:3,224,224"  # resnet50's
# "before": as the python variant was built, and served (the backends' config auto-completion on),
# before mapped weights, deferred imports and complete configs served as such
SETTINGS = {"before": ["--no-mapped-weights", "--no-deferred-imports"],
            "archive": ["--no-mapped-weights"], "mapped": ["--mapped-weights"]}


# libtorch beside them, where a PyTorch backend is found: as built (the instances share one copy
# of the weights) and with ENABLE_WEIGHT_SHARING removed from its config
SHARING = "ENABLE_WEIGHT_SHARING"
LIBTORCH = {"libtorch": True, "libtorch unshared": False}


def build(repo: Path, source: str, name: str, instances: int, extra: list[str],
          variant: str = "python") -> None:
    args = ["-q", "build", source, "--name", name, "--variants", variant, "--out", str(repo),
            "--cpu-instances", str(instances), "--force", *extra]
    if gen_repo(args) != 0:
        raise SystemExit(f"building {name} failed")


def without_sharing(model: layout.BuiltModel) -> None:
    """Remove ENABLE_WEIGHT_SHARING from a libtorch model's config (its hash recorded anew)."""
    from generator.repository.config import write_config

    config = model.config
    del config.parameters[SHARING]
    write_config(model.path, config, "Rewritten by benchmarks/shared_weights.py: weight sharing"
                 " off.")
    model.reread()


def pytorch_backend() -> bool:
    from generator.serve.triton_install import default_backend_dirs, has_pytorch_backend

    return any(has_pytorch_backend(Path(d)) for d in default_backend_dirs())


def exercise(server: EmbeddedServer, model: layout.BuiltModel, clients: int = 8) -> None:
    """Requests from ``clients`` clients at once, so that every instance runs the model."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    samples = model.samples()

    def one(_):
        client = httpclient.InferenceServerClient(server.http_url)
        tensors = []
        for name, array in samples.items():
            t = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            t.set_data_from_numpy(array)
            tensors.append(t)
        for _ in range(5):
            client.infer(model.name, tensors)
        client.close()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))


def measure(server: EmbeddedServer, model: layout.BuiltModel, idle_s: float) -> dict:
    """Load ``model`` alone, exercise it while sampling its stubs' PSS (the peak under load),
    let it idle ``idle_s`` (the runtime gives freed memory back after 1 s idle) and read the PSS
    again, in all and per kind of mapping; unload it."""
    start = time.perf_counter()
    (status,) = server.load([model])
    seconds = time.perf_counter() - start
    if status.state != READY:
        raise SystemExit(f"{model.name}: {status.state}: {status.reason}")
    stubs = stubs_of(stub_processes(server.pid).values(), model.name)
    with PeakMemory(stubs, every=0.1) as peak:
        exercise(server, model)
    time.sleep(idle_s)
    pss = total_memory(stubs).pss
    kinds = pss_by_kind([p.pid for p in stubs])
    server.unload(model.name)
    deadline = time.monotonic() + 60
    while stubs_of(stub_processes(server.pid).values(), model.name):  # gone before the next
        if time.monotonic() > deadline:
            raise SystemExit(f"{model.name}'s stub processes did not exit after its unload")
        time.sleep(0.2)
    return {"pss": pss, "peak_pss": max(peak.pss or 0, pss), "kinds": kinds,
            "stubs": len(stubs), "load_seconds": seconds}


def measure_in_server(repo: Path, warm: layout.BuiltModel, model: layout.BuiltModel,
                      idle_s: float, log_path: Path) -> dict:
    """Like ``measure`` for a model whose instances run inside the server (libtorch), on a
    server of its own (a long-lived server's heap would lend it what earlier models freed) with
    ``warm`` loaded first (the backend's libraries): the PSS the server process gains from
    before the model's load, idle and at the peak under load."""
    import psutil

    with EmbeddedServer(repo, Ports(*free_ports(3)), log_path=log_path) as server:
        proc = psutil.Process(server.pid)
        for one in (warm, model):
            start = time.perf_counter()
            before = total_memory([proc]).pss  # the last one's: before the model's load
            (status,) = server.load([one])
            seconds = time.perf_counter() - start
            if status.state != READY:
                raise SystemExit(f"{one.name}: {status.state}: {status.reason}")
        loaded = total_memory([proc]).pss
        with PeakMemory([proc], every=0.1) as peak:
            exercise(server, model)
        time.sleep(idle_s)
        pss = total_memory([proc]).pss
    return {"pss": pss - before, "peak_pss": max(peak.pss or 0, pss) - before,
            "loaded_pss": loaded - before, "load_seconds": seconds}


KINDS = ("weights file", "heap and anonymous", "libraries", "shared memory (requests)", "other")


def pss_by_kind(pids) -> dict[str, int]:
    """PSS (bytes) of processes ``pids`` summed per kind of mapping: the mapped weights.pt, heap
    and anonymous memory, shared libraries' pages, the Python backend's shared memory for
    requests and responses (/dev/shm), the rest."""
    total = dict.fromkeys(KINDS, 0)
    for pid in pids:
        for path, size in mappings(pid):
            kind = ("weights file" if Path(path).name == "weights.pt" else
                    "shared memory (requests)" if path.startswith("/dev/shm/") else
                    "libraries" if ".so" in Path(path).name else
                    "heap and anonymous" if path in ("", "[heap]") else "other")
            total[kind] += size["Pss"]
    return total


BREAKDOWN = r"""
import sys, time
t0 = time.perf_counter()
import numpy, torch
t1 = time.perf_counter()
from pathlib import Path
version_dir = Path(sys.argv[1])
sys.path.insert(0, str(version_dir))
import json, model as runtime
params = json.loads(sys.argv[2])
runtime.defer_imports(params)  # as load_model does, before the imports it times
importer = torch.package.PackageImporter(str(version_dir / params["artifact"]))
for name in importer.extern_modules:
    __import__(name)
t2 = time.perf_counter()
runtime.sha256_of(version_dir / params["artifact"])
if params.get("weights"):
    runtime.sha256_of(version_dir / params["weights"])
t3 = time.perf_counter()
runtime.load_model(version_dir, params, torch.device("cpu"))
t4 = time.perf_counter()
print(json.dumps({"import torch": t1 - t0, "import the archive's extern modules": t2 - t1,
                  "SHA-256 of the files": t3 - t2, "load the model": t4 - t3 - (t3 - t2)}))
"""


def load_breakdown(model: layout.BuiltModel) -> dict:
    """Seconds of each step of an instance's load, in a fresh process on its own (what a stub
    does in initialize(); the stub's own start is not in it)."""
    import subprocess

    params = {k: v.string_value for k, v in model.config.parameters.items()}
    got = subprocess.run([sys.executable, "-I", "-c", BREAKDOWN, str(model.path / "1"),
                          json.dumps(params)], capture_output=True, text=True, check=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def layout_of(model: layout.BuiltModel) -> str:
    from generator.runtime.model import CHANNELS_LAST, MEMORY_FORMAT
    from generator.variants.threads import CONTIGUOUS

    chosen = model.config.parameters.get(MEMORY_FORMAT)
    return CHANNELS_LAST if chosen is not None and chosen.string_value == CHANNELS_LAST \
        else CONTIGUOUS


def above_baseline(got: dict, key: str, weights: int) -> float:
    """What the model measured (``got["model"][key]``, bytes) above the baseline's
    (``got["tiny"][key]``), in copies of the weights' ``weights`` bytes."""
    return (got["model"][key] - got["tiny"][key]) / weights


def weight_bytes(model: layout.BuiltModel) -> int:
    import torch

    state = torch.load(str(model.path / "1" / "weights.pt"), mmap=True, weights_only=True)
    return sum(t.numel() * t.element_size() for t in state.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="torchvision:resnet50")
    p.add_argument("--baseline", default=BASELINE,
                   help="a model with few weights that takes the model's inputs")
    p.add_argument("--baseline-input", action="append",
                   help=f"the baseline's --input (default {BASELINE_INPUT})")
    p.add_argument("--instances", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="shared_weights")
    p.add_argument("--idle-seconds", type=float, default=2.5,
                   help="idle time before the memory is read (the runtime releases freed"
                        " memory after 1 s idle)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    baseline_inputs = [f"--input={i}" for i in args.baseline_input or [BASELINE_INPUT]]
    repo = Path(tempfile.mkdtemp(prefix="shared-weights-")) / "repo"
    names = {}
    sources = (("model", args.model, []), ("tiny", args.baseline, baseline_inputs))
    for setting, flag in SETTINGS.items():
        for kind, source, extra in sources:
            names[setting, kind] = f"{kind}_{setting}"
            build(repo, source, names[setting, kind], args.instances, [*flag, *extra])
    models = {key: layout.BuiltModel(repo / f"{name}_python") for key, name in names.items()}
    weights = weight_bytes(models["mapped", "model"])
    libtorch = {}
    if pytorch_backend():
        for setting, sharing in LIBTORCH.items():
            for kind, source, extra in sources:
                name = f"{kind}_{setting.replace(' ', '_')}"
                build(repo, source, name, args.instances, extra, variant="libtorch")
                libtorch[setting, kind] = layout.BuiltModel(repo / f"{name}_libtorch")
                if not sharing:
                    without_sharing(libtorch[setting, kind])
        # loaded first: the backend's own libraries are in the server before the measurement
        build(repo, args.baseline, "backend", 1, baseline_inputs, "libtorch")
        warm = layout.BuiltModel(repo / "backend_libtorch")
    else:
        print("libtorch: not measured -- no PyTorch backend found (GEN_REPO_BACKEND_DIRECTORY)")
    rounds = []
    with EmbeddedServer(repo, Ports(*free_ports(3)), log_path=out / "tritonserver.log") as server, \
            EmbeddedServer(repo, Ports(*free_ports(3)), log_path=out / "tritonserver-before.log",
                           auto_complete=True) as old_server:
        servers = {s: old_server if s == "before" else server for s in SETTINGS}
        for r in range(args.rounds):
            row = {}
            for setting in (list(LIBTORCH) if r % 2 == 0 else list(reversed(LIBTORCH))
                            ) if libtorch else []:
                got = {kind: measure_in_server(repo, warm, libtorch[setting, kind],
                                               args.idle_seconds, out / "libtorch.log")
                       for kind in ("model", "tiny")}
                row[setting] = {**got, "copies": above_baseline(got, "pss", weights),
                                "peak_copies": above_baseline(got, "peak_pss", weights),
                                "loaded_copies": above_baseline(got, "loaded_pss", weights)}
                print(f"round {r + 1} {setting}: the model adds"
                      f" {row[setting]['loaded_copies']:.2f} copies of its weights to the server"
                      f" once loaded, {row[setting]['copies']:.2f} idle after requests,"
                      f" {row[setting]['peak_copies']:.2f} at the peak under load; load"
                      f" {got['model']['load_seconds']:.1f} s", flush=True)
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            for setting in order:
                got = {kind: measure(servers[setting], models[setting, kind], args.idle_seconds)
                       for kind in ("model", "tiny")}
                row[setting] = {
                    **got, "copies": above_baseline(got, "pss", weights),
                    "peak_copies": above_baseline(got, "peak_pss", weights),
                    "kinds": {k: (got["model"]["kinds"][k] - got["tiny"]["kinds"][k]) / weights
                              for k in KINDS},
                    "breakdown": load_breakdown(models[setting, "model"])}
                print(f"round {r + 1} {setting}: the model adds {row[setting]['copies']:.2f}"
                      f" copies of its weights idle, {row[setting]['peak_copies']:.2f} at the"
                      f" peak under load (" + ", ".join(
                          f"{k} {v:.2f}" for k, v in row[setting]["kinds"].items()) + "); load"
                      f" {got['model']['load_seconds']:.1f} s", flush=True)
            rounds.append(row)
    med = {s: {"copies": statistics.median(r[s]["copies"] for r in rounds),
               "peak": statistics.median(r[s]["peak_copies"] for r in rounds),
               "steps": {k: statistics.median(r[s]["breakdown"][k] for r in rounds)
                         for k in rounds[0][s]["breakdown"]},
               "kinds": {k: statistics.median(r[s]["kinds"][k] for r in rounds) for k in KINDS},
               "load": statistics.median(r[s]["model"]["load_seconds"] for r in rounds),
               "floor": statistics.median(r[s]["tiny"]["pss"] / r[s]["tiny"]["stubs"]
                                          for r in rounds)}
           for s in SETTINGS}
    for s in LIBTORCH:
        if libtorch:
            med[s] = {"copies": statistics.median(r[s]["copies"] for r in rounds),
                      "loaded": statistics.median(r[s]["loaded_copies"] for r in rounds),
                      "peak": statistics.median(r[s]["peak_copies"] for r in rounds),
                      "load": statistics.median(r[s]["model"]["load_seconds"] for r in rounds)}
    layouts = ", ".join(f"{s} {layout_of(models[s, 'model'])}" for s in SETTINGS)
    lines = [f"{args.model}, {args.instances} CPU instances, weights {weights / 2**20:.1f} MiB;"
             f" medians of {args.rounds} rounds (settings alternating); the layout the build's"
             f" timing chose: {layouts} (what the forward passes leave in the heap differs"
             " between them)", "",
             "| weights | memory the model adds to the instances, idle (copies of the weights) |"
             " peak under load | load to READY (s) | the baseline's PSS per instance (MiB) |",
             "|---|---|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| {s} | {med[s]['copies']:.2f} | {med[s]['peak']:.2f} |"
                     f" {med[s]['load']:.1f} | {med[s]['floor'] / 2**20:.0f} |")
    for s, sharing in LIBTORCH.items():
        if s in med:
            lines.append(f"| {s} ({SHARING} {'true' if sharing else 'absent'}; the server"
                         f" process) | {med[s]['copies']:.2f} | {med[s]['peak']:.2f} |"
                         f" {med[s]['load']:.1f} | - |")
    if not libtorch:
        lines.append("| libtorch | not measured: no PyTorch backend found | | | |")
    else:
        lines += ["", "libtorch, what the model adds to the server once loaded, before any request"
                  " (copies of the weights): " + ", ".join(
                      f"{s} {med[s]['loaded']:.2f}" for s in LIBTORCH) + "; the server does not"
                  " give back what the forward passes freed (the idle column)"]
    lines += ["", "What the model adds idle, by kind of memory (copies of the weights):", "",
              "| weights | " + " | ".join(KINDS) + " |", "|---|" + "---|" * len(KINDS)]
    for s in SETTINGS:
        lines.append(f"| {s} | " + " | ".join(f"{med[s]['kinds'][k]:.2f}" for k in KINDS) + " |")
    steps = list(med["mapped"]["steps"])
    lines += ["", "One instance's load, step by step, in a fresh process of its own (seconds):", "",
              "| weights | " + " | ".join(steps) + " |", "|---|" + "---|" * len(steps)]
    for s in SETTINGS:
        lines.append(f"| {s} | " + " | ".join(f"{med[s]['steps'][k]:.2f}" for k in steps) + " |")
    lines += ["", f"mapped / archive: memory {med['mapped']['copies'] / med['archive']['copies']:.2f}x,"
              f" load time {med['mapped']['load'] / med['archive']['load']:.2f}x; mapped / before:"
              f" load time {med['mapped']['load'] / med['before']['load']:.2f}x (per round: "
              + ", ".join(f"{r['mapped']['model']['load_seconds'] / r['before']['model']['load_seconds']:.2f}"
                          for r in rounds) + ")"]
    (out / "results.json").write_text(json.dumps({"model": args.model, "weights": weights,
                                                  "instances": args.instances,
                                                  "rounds": rounds}, indent=1))
    (out / "shared_weights.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
