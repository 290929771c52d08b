"""What the weights of a Python-backend model cost in memory across its instances, with them
inside the archive (one copy per instance) and mapped from 1/weights.pt (shared), and how long
the instances take to load.

    .venv/bin/python benchmarks/shared_weights.py [--model torchvision:resnet50] [--instances 4]
                                                  [--rounds 3] [--out shared_weights]

Builds the model's python variant twice with ``gen-repo build`` (``--no-mapped-weights`` and
the default), and a tiny torchvision model (tests/fixtures/weights.py:tiny_torchvision: its
stubs import torch and torchvision too) the same way, each with ``--cpu-instances N``. Each
round loads every model alone on the embedded tritonserver, in turn (the settings alternate
within the round), sends it requests from several clients at once so that every instance has
run the model, and sums the PSS of its N stub processes (shared pages counted once across them,
/proc/<pid>/smaps_rollup). What the weights add is the model's PSS minus the tiny model's of
the same setting, in copies of the weights' bytes (activations and allocator caches of the
forward passes count too). Load time: from the load request to READY. Medians over the rounds;
each round kept in ``results.json``, the table in ``shared_weights.md``.
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
from generator.serve.processes import stub_processes, stubs_of  # noqa: E402
from generator.serve.server import EmbeddedServer  # noqa: E402
from generator.status import READY  # noqa: E402

TINY = f"{HERE.parent}/tests/fixtures/weights.py:tiny_torchvision"
SETTINGS = {"archive": "--no-mapped-weights", "mapped": "--mapped-weights"}


def build(repo: Path, source: str, name: str, instances: int, extra: list[str]) -> None:
    args = ["-q", "build", source, "--name", name, "--variants", "python", "--out", str(repo),
            "--cpu-instances", str(instances), "--force", *extra]
    if source == TINY:
        args += ["--input", "x:float32:16"]
    if gen_repo(args) != 0:
        raise SystemExit(f"building {name} failed")


def pss_bytes(pid: int) -> int:
    """Proportional set size of process ``pid`` (shared pages split among their users)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


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


def measure(server: EmbeddedServer, model: layout.BuiltModel) -> dict:
    start = time.perf_counter()
    (status,) = server.load([model])
    seconds = time.perf_counter() - start
    if status.state != READY:
        raise SystemExit(f"{model.name}: {status.state}: {status.reason}")
    exercise(server, model)
    stubs = stubs_of(stub_processes(server.pid).values(), model.name)
    pss = sum(pss_bytes(p.pid) for p in stubs)
    server.unload(model.name)
    deadline = time.monotonic() + 60
    while stubs_of(stub_processes(server.pid).values(), model.name):  # gone before the next
        if time.monotonic() > deadline:
            raise SystemExit(f"{model.name}'s stub processes did not exit after its unload")
        time.sleep(0.2)
    return {"pss": pss, "stubs": len(stubs), "load_seconds": seconds}


def weight_bytes(model: layout.BuiltModel) -> int:
    import torch

    state = torch.load(str(model.path / "1" / "weights.pt"), mmap=True, weights_only=True)
    return sum(t.numel() * t.element_size() for t in state.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="torchvision:resnet50")
    p.add_argument("--instances", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="shared_weights")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repo = Path(tempfile.mkdtemp(prefix="shared-weights-")) / "repo"
    names = {}
    for setting, flag in SETTINGS.items():
        for kind, source in (("model", args.model), ("tiny", TINY)):
            names[setting, kind] = f"{kind}_{setting}"
            build(repo, source, names[setting, kind], args.instances, [flag])
    models = {key: layout.BuiltModel(repo / f"{name}_python") for key, name in names.items()}
    weights = weight_bytes(models["mapped", "model"])
    rounds = []
    with EmbeddedServer(repo, Ports(*free_ports(3)), log_path=out / "tritonserver.log") as server:
        for r in range(args.rounds):
            row = {}
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            for setting in order:
                got = {kind: measure(server, models[setting, kind]) for kind in ("model", "tiny")}
                row[setting] = {**got, "copies": (got["model"]["pss"] - got["tiny"]["pss"])
                                / weights}
                print(f"round {r + 1} {setting}: weights add {row[setting]['copies']:.2f} copies;"
                      f" load {got['model']['load_seconds']:.1f} s", flush=True)
            rounds.append(row)
    med = {s: {"copies": statistics.median(r[s]["copies"] for r in rounds),
               "load": statistics.median(r[s]["model"]["load_seconds"] for r in rounds)}
           for s in SETTINGS}
    lines = [f"{args.model}, {args.instances} CPU instances, weights {weights / 2**20:.1f} MiB;"
             f" medians of {args.rounds} rounds (settings alternating)", "",
             "| weights | memory the weights add to the instances (copies of the weights) |"
             " load to READY (s) |", "|---|---|---|"]
    for s in SETTINGS:
        lines.append(f"| {s} | {med[s]['copies']:.2f} | {med[s]['load']:.1f} |")
    lines += ["", f"mapped / archive: memory {med['mapped']['copies'] / med['archive']['copies']:.2f}x,"
              f" load time {med['mapped']['load'] / med['archive']['load']:.2f}x"]
    (out / "results.json").write_text(json.dumps({"model": args.model, "weights": weights,
                                                  "instances": args.instances,
                                                  "rounds": rounds}, indent=1))
    (out / "shared_weights.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
