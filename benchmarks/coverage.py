"""Real-world coverage: `gen-repo build` over the corpus (benchmarks/corpus: torchvision, timm,
HuggingFace transformers; random weights, no downloads), then each built model served on the
embedded tritonserver and checked two ways, and one outcome per model and variant.

    .venv/bin/python benchmarks/coverage.py [--corpus torchvision,timm,hf] [--only NAME,...]
        [--limit N] [--budget-min 120] [--model-timeout-s 900] [--out coverage] [--fresh]

Each model runs in a child process (one model's crash, hang or memory cannot touch the others):
it builds the libtorch, python, python-ts and python-aoti variants, serves all but libtorch
(python-ts serves the TorchScript artifact the libtorch variant holds: no PyTorch backend here;
python-aoti the torch.export + AOTInductor package), and runs

- ``gen-repo verify`` over HTTP and gRPC (the build's own cases, concurrency), and
- an independent check, over HTTP and gRPC: inputs of a batch size (2) and a length (11 for each
  -1 axis) the build never used, made here from the entry's own input specs; references from
  the corpus' own copy of the model (same weights) called by forward()'s parameter names — not
  the build's binding or samples; every served shape checked against the model's metadata.

Outcomes, per variant: ``served right`` (both checks pass over both protocols); ``refused: CAUSE``
(the build refused it for a cause of CAUSES, the fixed list documented in docs/coverage.md);
``defect: KIND`` (a wrong answer or a shape its metadata contradicts after an OK build, an
internal error or traceback, or a refusal that names none of CAUSES); ``timed out`` (past
--model-timeout-s). The libtorch variant is ``built`` when its check passed (its artifact is
served through python-ts). Results go to ``<out>/results.json`` (kept between runs: a model
already there is not run again unless --fresh) and ``<out>/coverage.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from corpus import CORPORA, Entry, entries  # noqa: E402

VARIANTS = ("libtorch", "python", "python-ts", "python-aoti")
SERVED = ("python", "python-ts", "python-aoti")
SERVED_RIGHT, BUILT, TIMED_OUT, NOT_BUILT = "served right", "built", "timed out", "not built"
NEW_BATCH, NEW_LENGTH = 2, 11  # the build's cases use batches 4, 3, 1 and lengths 8, 5, 1, 7, 13, 2, 32
VERIFY = dict(requests=16, concurrency=8)  # gen-repo verify's concurrency check, made shorter
TOLERANCE = 1e-3  # of the largest reference value (at least 1): deep random-init nets round

# The fixed list of causes a refusal may name: key -> (what it means, a pattern of the message).
CAUSES = {
    "batch-size dependent": (
        "a row's answer changes with the batch size though not with the other rows (kernels"
        " that round differently per batch size, or code that tests the batch size)",
        r"changes with the batch size"),
    "a TorchScript module": (
        "the model is TorchScript already: no Python code for the eager variant to carry (the"
        " TorchScript variants serve it)", r"is a TorchScript module"),
    "op the server lacks": (
        "the artifact calls an op that the model's own code registers when imported"
        " (torch.library); a fresh process, as the server's, has no such op",
        r"Unknown builtin op|Could not find schema for|torch\.library"),
    "value-dependent branch": (
        "forward() takes a branch by the values of its inputs; a trace records one path",
        r"branch|data-dependent|depends on the values|value-dependent|values of its inputs"),
    "batch-coupled rows": (
        "a row's answer depends on the other rows of its batch",
        r"rows? (of a batch )?depend|depends on (the other rows|its batch)|batch-?mates"
        r"|mix(es|ing) (its|the) batch|per-batch"),
    "ragged output": (
        "an output whose size differs per row or per request (a detector's boxes per image)",
        r"one dict per image|ragged|size depends on|per image|differs from row to row"),
    "unsupported output type": (
        "an output that is no tensor, or a tensor type Triton has no type for",
        r"return(s)? (only )?tensors|not a tensor|unsupported (output|dtype|type)"
        r"|complex|Cache object|past_key_values|use_cache|no BF16"),
    "batch layout": (
        "the model takes no batch axis, or its inputs carry the batch on different dims",
        r"takes no batch axis|batch on dim|batch dims differ"),
    "output rank changes": (
        "an output loses or moves its batch axis (or another axis) at some batch size or"
        " length, so it has no one shape to declare",
        r"loses (its batch axis|an axis)|first axis is not the batch axis"),
    "randomness in forward": ("forward() draws random numbers", r"random"),
    "autograd in forward": ("forward() takes gradients, which TorchScript and torch.export do"
                            " not carry (the python variant serves it under no_grad)",
                            r"autograd|gradients"),
    "not exportable": ("torch.export cannot make one graph of the model, or fixes an axis the"
                       " inputs vary (the python variant can serve it)",
                       r"torch\.export|AOTInductor"),
    "not scriptable or traceable": (
        "TorchScript can neither script nor trace the model correctly (the python variant can)",
        r"TorchScript|torch\.jit|script|trac(e|ing)|TracerWarning"),
    "not packageable": ("torch.package cannot pack the model for the Python backend",
                        r"torch\.package|package|pickl"),
    "input too short": ("the model needs longer inputs than the checks gave it",
                        r"too short|--check-lengths|minimum length"),
    "model fails on its inputs": (
        "the model raises on the inputs it was given (the entry's inputs are wrong)",
        r"fails on (the )?sample|raised on the sample|Check --input"),
}


def classify(message: str) -> str | None:
    """The first cause of CAUSES whose pattern ``message`` matches (the refusal's message is
    read before its tip: a tip names other variants' tools)."""
    for cause, (_, pattern) in CAUSES.items():
        if re.search(pattern, message, re.IGNORECASE):
            return cause
    return None


# ---------------------------------------------------------------- the child: one model
def _tensors(entry: Entry, batch: int | None, length: int, seed: int) -> dict:
    """Inputs for ``entry`` from its own --input specs (NAME:DTYPE:DIMS[:LOW..HIGH]), ``batch``
    rows each (None: without batching, the dims as given)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    found = {}
    for text in entry.inputs:
        name, dtype, dims, *rest = text.split(":")
        sizes = [] if dims == "scalar" else re.split(r"[x,]", dims)
        shape = ([batch] if batch else []) + [length if d == "-1" else int(d) for d in sizes]
        if dtype == "float32":
            found[name] = rng.standard_normal(shape).astype(np.float32)
        elif dtype == "bool":
            found[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            low, high = (int(v) for v in rest[0].split("..")) if rest else (0, 10)
            found[name] = rng.integers(low, high, shape).astype(dtype)
    return found


def new_length(entry: Entry) -> int:
    """A length of -1 axes the build never used: NEW_LENGTH, or past the entry's own
    check_lengths (a model with a minimum length)."""
    lengths = entry.options.get("check_lengths")
    return max(int(v) for v in lengths.split(",")) + 7 if lengths else NEW_LENGTH


def _flat(out) -> list:
    """Every tensor of a model's output, in the order of a depth-first walk (dict: insertion)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):  # transformers' ModelOutput is one; it leaves out None fields
        return [t for v in out.values() if v is not None for t in _flat(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flat(v)]
    return []


def _fits(shape, dims) -> bool:
    return len(shape) == len(dims) and all(d in (-1, s) for s, d in zip(shape, dims))


def _call(entry: Entry, eager, arrays: dict):
    """``eager`` on ``arrays``: one input by position (its parameter's name is the model's
    business), several by forward()'s parameter names, as the corpus names them -- or in the
    entry's --input order where its forward() has no names (inputs_by_position)."""
    import torch

    tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}  # a model may write
    # into its inputs (x.sub_(mean)): the arrays sent to the server stay as they were
    if len(tensors) == 1 or entry.options.get("inputs_by_position"):
        return eager(*tensors.values())
    return eager(**tensors)


def independent_check(entry: Entry, model, eager, url: str, protocol: str) -> str | None:
    """None when the served model answers the new batch size and length as eager does, and every
    answer's shape fits its metadata; else what differed."""
    import numpy as np
    import torch
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    from generator.serve.protocols import as_numpy

    client_mod = httpclient if protocol == "http" else grpcclient
    client = client_mod.InferenceServerClient(url)
    if protocol == "http":
        meta, config = client.get_model_metadata(model), client.get_model_config(model)
    else:  # as JSON: the same fields (int64 values as strings)
        meta = client.get_model_metadata(model, as_json=True)
        config = client.get_model_config(model, as_json=True)["config"]
    batching = int(config.get("max_batch_size", 0)) > 0
    # Without batching the model's inputs carry their own batch axis, as the entry gives it.
    arrays = _tensors(entry, NEW_BATCH if batching else None, new_length(entry), seed=11)
    with torch.no_grad():
        want = [t.detach().float().numpy() if t.dtype in (torch.bfloat16, torch.float16)
                else t.detach().numpy()
                for t in _flat(_call(entry, eager, arrays))]
    inputs = []
    for name, array in arrays.items():
        t = client_mod.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array)
        inputs.append(t)
    outputs = [o["name"] for o in meta["outputs"]]
    answer = client.infer(model, inputs)
    client.close()
    if len(outputs) != len(want):
        return f"{len(outputs)} outputs served, eager has {len(want)}"
    for o, w in zip(meta["outputs"], want):
        got = as_numpy(answer, o["name"])
        dims = [int(d) for d in o["shape"]]
        if not _fits(got.shape, dims):
            return f"{o['name']}: served shape {list(got.shape)}, its metadata says {dims}"
        if got.shape != w.shape:
            return f"{o['name']}: served shape {list(got.shape)}, eager {list(w.shape)}"
        if w.dtype == bool or np.issubdtype(w.dtype, np.integer):
            if not np.array_equal(got, w):
                return f"{o['name']}: served values differ from eager's"
            continue
        scale = max(1.0, float(np.abs(w).max()) if w.size else 1.0)
        err = float(np.abs(got.astype(np.float64) - w).max()) if w.size else 0.0
        if not np.isfinite(got).all() == np.isfinite(w).all() or err > TOLERANCE * scale:
            return f"{o['name']}: max abs err {err:.2e} against eager (largest value {scale:.2e})"
    return None


def run_one(entry: Entry, work: Path, variants=VARIANTS) -> dict:
    """Build ``variants`` of one corpus entry, serve and check them; outcomes by variant."""
    import gen_repo
    from generator.errors import GenRepoError
    from generator.repository import layout
    from generator.serve.ports import Ports, free_ports
    from generator.serve.server import EmbeddedServer
    from generator.serve.verify import VerifyOptions, verify_repository
    from generator.status import READY

    repo = work / "repo"
    row = {"key": entry.key, "corpus": entry.corpus, "family": entry.family, "variants": {}}
    start = time.perf_counter()
    try:
        report = gen_repo.build(entry.source, input=list(entry.inputs), out=repo,
                                name=entry.model_name, variants=",".join(variants), force=True,
                                **entry.options)
    except GenRepoError as e:
        text = f"{e.message} {e.tip or ''}".strip()
        cause = classify(e.message) or classify(e.tip or "")
        outcome = f"refused: {cause}" if cause else "defect: refusal without a known cause"
        row["variants"] = {v: {"outcome": outcome, "message": text} for v in variants}
        row["build_s"] = time.perf_counter() - start
        return row
    except Exception as e:  # a traceback out of the build: gen-repo's defect, whatever the cause
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
        row["variants"] = {v: {"outcome": "defect: internal error", "message": text,
                               "traceback": traceback.format_exc()[-3000:]} for v in variants}
        row["build_s"] = time.perf_counter() - start
        return row
    row["build_s"] = time.perf_counter() - start
    served = []
    for r in report.results:
        text = f"{r.detail} {r.tip or ''}".strip()
        if r.status != "OK":
            if "internal error" in text.lower() or "Traceback" in text:
                outcome = "defect: internal error"
            else:
                cause = classify(r.detail) or classify(r.tip or "")
                outcome = f"refused: {cause}" if cause else "defect: refusal without a known cause"
            row["variants"][r.variant] = {"outcome": outcome, "message": text}
        else:
            row["variants"][r.variant] = {"outcome": BUILT if r.variant not in SERVED else None,
                                          "detail": r.detail}
            if r.variant in SERVED:
                served.append(r)
    if not served:
        return row
    start = time.perf_counter()
    models = [layout.BuiltModel(repo / r.model) for r in served]
    eager = entry.make().eval()
    with EmbeddedServer(repo, Ports(*free_ports(3)), log_path=work / "server.log") as server:
        statuses = {s.name: s for s in server.load(models)}
        checks = verify_repository(models, server.http_url, server.grpc_url,
                                   VerifyOptions(**VERIFY))
        for r, model in zip(served, models):
            cell = row["variants"][r.variant]
            status = statuses[model.name]
            if status.state != READY:
                cell.update(outcome="defect: OK build does not load", message=status.reason)
                continue
            failed = [f"{c.protocol}: {c.detail}" for c in checks.results
                      if c.model == model.name and c.status != "OK"]
            for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                try:
                    wrong = independent_check(entry, model.name, eager, url, protocol)
                except Exception as e:
                    wrong = f"the request failed: {str(e).splitlines()[0][:300]}"
                if wrong:
                    failed.append(f"{protocol} (independent): {wrong}")
            if failed:
                kind = ("shape contradicts metadata" if any("metadata" in f for f in failed)
                        else "wrong answer")
                cell.update(outcome=f"defect: {kind}", message="; ".join(failed)[:2000])
            else:
                cell["outcome"] = SERVED_RIGHT
    row["serve_s"] = time.perf_counter() - start
    return row


def child(key: str, work: Path, result: Path, variants: tuple[str, ...]) -> int:
    import warnings

    warnings.filterwarnings("ignore")
    (entry,) = [e for e in entries([key.split("/")[0]]) if e.key == key]
    row = run_one(entry, work, variants)
    result.write_text(json.dumps(row))
    return 0


# ---------------------------------------------------------------- the parent: the corpus
def run_entry(entry: Entry, timeout_s: float, variants=VARIANTS) -> dict:
    with tempfile.TemporaryDirectory(prefix="coverage-") as tmp:
        work, result = Path(tmp), Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", entry.key,
               "--variants", ",".join(variants),
               "--work", str(work), "--result", str(result)]
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        try:
            stdout, stderr = child.communicate(timeout=timeout_s)
            proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            kill_tree(child)
            row = {"key": entry.key, "corpus": entry.corpus, "family": entry.family,
                   "variants": {v: {"outcome": TIMED_OUT} for v in variants}}
        else:
            if result.is_file():
                row = json.loads(result.read_text())
            else:  # the child died outside run_one's handlers
                tail = (proc.stderr or proc.stdout)[-1500:]
                row = {"key": entry.key, "corpus": entry.corpus, "family": entry.family,
                       "variants": {v: {"outcome": "defect: internal error",
                                        "message": f"exit {proc.returncode}: {tail}"}
                                    for v in variants}}
        row["seconds"] = time.perf_counter() - start
        return row


def kill_tree(child: subprocess.Popen) -> None:
    """Kill ``child`` and every process it started (the embedded tritonserver, in a session of
    its own, and the server's Python-backend stubs), and reap it."""
    import psutil

    try:
        procs = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    child.communicate()


def outcome_of(row: dict, variant: str) -> str:
    if variant not in row["variants"]:
        return NOT_BUILT  # a result from a run that did not build the variant
    return row["variants"][variant].get("outcome") or "defect: no outcome"


def summary(rows: list[dict], left: list[Entry], too_large: list, seconds: float) -> str:
    """The markdown report: counts per corpus and outcome, causes, defects, one row per model."""
    lines = ["# gen-repo coverage", "",
             f"{len(rows)} models run in {seconds / 60:.0f} min (this machine: {os.cpu_count()}"
             f" cores); variants built: {', '.join(VARIANTS)}; served: {', '.join(SERVED)}.", ""]
    lines += ["| corpus | models | python served right | python refused | python-ts served right"
              " | libtorch built | python-aoti served right | defects (any variant) | timed out |",
              "|---|---|---|---|---|---|---|---|---|"]
    for corpus in CORPORA:
        mine = [r for r in rows if r["corpus"] == corpus]
        if not mine:
            continue
        py = [outcome_of(r, "python") for r in mine]
        right = sum(o == SERVED_RIGHT for o in py)
        defects = sum(any(outcome_of(r, v).startswith("defect") for v in VARIANTS) for r in mine)
        lines.append(
            f"| {corpus} | {len(mine)} | {right} ({100 * right / len(mine):.0f} %) |"
            f" {sum(o.startswith('refused') for o in py)} |"
            f" {sum(outcome_of(r, 'python-ts') == SERVED_RIGHT for r in mine)} |"
            f" {sum(outcome_of(r, 'libtorch') == BUILT for r in mine)} |"
            f" {sum(outcome_of(r, 'python-aoti') == SERVED_RIGHT for r in mine)} | {defects} |"
            f" {sum(o == TIMED_OUT for o in py)} |")
    causes: dict[str, int] = {}
    for r in rows:
        for v in VARIANTS:
            o = outcome_of(r, v)
            if o.startswith(("refused", "defect")):
                causes[f"{v}: {o}"] = causes.get(f"{v}: {o}", 0) + 1
    lines += ["", "| variant: outcome | count |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in sorted(causes.items())]
    if left:
        lines += ["", f"Not run within the time budget ({len(left)}): "
                  + ", ".join(e.key for e in left) + "."]
    if too_large:
        lines += ["", "Left out for their size (more than 100 M parameters): "
                  + ", ".join(f"{n} ({p / 1e6:.0f} M)" for n, p in too_large) + "."]
    lines += ["", "| model | family | " + " | ".join(VARIANTS) + " | time |",
              "|---|---|" + "---|" * len(VARIANTS) + "---|"]
    for r in rows:
        lines.append(f"| {r['key']} | {r['family']} | " + " | ".join(outcome_of(r, v) for v in VARIANTS)
                     + f" | {r.get('seconds', 0):.0f} s |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=",".join(CORPORA))
    p.add_argument("--only", default="", help="entries to run, by name or corpus/name")
    p.add_argument("--limit", type=int, default=0, help="at most N entries per corpus (0: all)")
    p.add_argument("--budget-min", type=float, default=120.0, help="stop starting models after")
    p.add_argument("--model-timeout-s", type=float, default=900.0)
    p.add_argument("--out", default="coverage")
    p.add_argument("--fresh", action="store_true", help="run every model again")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="variants to build (default: all four)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, Path(args.work), Path(args.result),
                     tuple(args.variants.split(",")))
    corpora = [c for c in args.corpus.split(",") if c]
    todo = entries(corpora)
    if args.only:
        wanted = set(args.only.split(","))
        todo = [e for e in todo if e.name in wanted or e.key in wanted]
    if args.limit:
        todo = [e for c in corpora for e in [x for x in todo if x.corpus == c][:args.limit]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    done = {} if args.fresh or not results_path.is_file() else \
        {r["key"]: r for r in json.loads(results_path.read_text())["models"]}
    start = time.perf_counter()
    left = []
    for i, entry in enumerate(todo, 1):
        if entry.key in done:
            continue
        if time.perf_counter() - start > args.budget_min * 60:
            left = [e for e in todo[i - 1:] if e.key not in done]
            break
        row = run_entry(entry, args.model_timeout_s, tuple(args.variants.split(",")))
        done[entry.key] = row
        print(f"[{i}/{len(todo)}] {entry.key}: " + ", ".join(
            f"{v} {outcome_of(row, v)}" for v in VARIANTS) + f" ({row['seconds']:.0f} s)",
              flush=True)
        results_path.write_text(json.dumps({"models": list(done.values())}, indent=1))
    from corpus.torchvision_models import too_large

    rows = [done[e.key] for e in todo if e.key in done]
    text = summary(rows, left, too_large() if "torchvision" in corpora else [],
                   sum(r.get("seconds", 0) for r in rows))
    (out / "coverage.md").write_text(text)
    print(text)
    defects = [r["key"] for r in rows if any(outcome_of(r, v).startswith("defect") for v in VARIANTS)]
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
