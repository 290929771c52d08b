"""Offline-check worker, run as ``python -I check_worker.py JOB.json`` in a fresh process.

It loads each artifact exactly as the server will (through the runtime ``model.py`` that ships in
the model directory), with the user's own modules made unimportable, runs it on the sample cases
and writes the outputs. The parent (generator.build.check) compares them with the eager references. A
failing artifact writes its error and the next one is still checked.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import re
import shutil
import sys
import traceback

PASSES = 3  # over the thread counts when timing the forward pass


class _Block(importlib.abc.MetaPathFinder):
    """Make the user's modules unimportable: the archive must carry its own code."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is blocked: not importable on the server",
                                      name=fullname)
        return None


def _archive_frame(tb):
    """The innermost frame of code from a torch.package archive: {file, line, code} or None."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith("<torch_package_")]
    if not frames:
        return None
    f = frames[-1]
    return {"file": re.sub(r"^<torch_package_\d+>\.", "", f.filename), "line": f.lineno,
            "code": (f.line or "").strip()}


def _run_cases(runtime, model, job, input_names, output_names, suffix="") -> None:
    """Run ``model`` on every case, each call on fresh tensors of the case's stored inputs (a
    model that changes its inputs in place cannot change the next call's), in the forward
    pass's context; save its outputs beside the case's (``suffix``: a trial's own files)."""
    import numpy as np

    with runtime.forward_context(job["params"].get(runtime.FORWARD_MODE)):
        for case in job["cases"]:
            with np.load(case["inputs"], allow_pickle=False) as data:
                tensors = runtime.fresh_tensors([data[n] for n in input_names])
            outs = runtime.run_batch(model, tensors)
            if len(outs) != len(output_names):
                raise RuntimeError(f"model returned {len(outs)} outputs, config declares"
                                   f" {len(output_names)}")
            with open(case["out"].replace(".npz", f"{suffix}.npz"), "wb") as f:
                np.savez(f, **{n: runtime.to_numpy(o) for n, o in zip(output_names, outs)})


def _run_job(job, inputs, output_names) -> None:
    import numpy as np
    import torch

    spec = importlib.util.spec_from_file_location(f"gen_repo_runtime_{id(job)}", job["runtime"])
    runtime = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime)

    def log(msg):
        with open(job["log"], "a") as f:
            f.write(msg.replace("\n", " ") + "\n")

    job["stage"] = "loading"  # what failed, for the tip: loading, running, timing
    model = runtime.load_model(job["version_dir"], job["params"], "cpu", inputs, log)
    input_names = [i["name"] for i in inputs]
    job["stage"] = "running"
    _run_cases(runtime, model, job, input_names, output_names)
    if job.get("time_threads"):
        job["stage"] = "timing"
        timings = {"contiguous": _time_threads(runtime, model, job, input_names, output_names,
                                               "contiguous", torch, np, answered=True)}
        if job["params"].get("loader") == "package" and runtime.has_conv_weights(model):
            try:  # an optional trial: a model the layout breaks (x.view) keeps the default one
                cl = runtime.to_channels_last(
                    runtime.load_model(job["version_dir"], job["params"], "cpu", inputs, log))
                timings[runtime.CHANNELS_LAST] = _time_threads(
                    runtime, cl, job, input_names, output_names, runtime.CHANNELS_LAST, torch, np)
            except Exception as e:
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                log(f"channels_last weights, tried for speed, fail on this model"
                    f" ({type(e).__name__}: {lines[0][:300] if lines else ''}): it keeps the"
                    " default layout")
        with open(job["timing"], "w") as f:
            json.dump(timings, f)


def setting_suffix(memory_format: str, threads) -> str:
    """The suffix of the files a timed setting's answers go to (beside each case's outputs)."""
    return f"_{memory_format}_{threads}t"


def _time_threads(runtime, model, job, input_names, output_names, memory_format, torch,
                  np, answered=False) -> dict:
    """Time the forward pass with each thread count at each batch size (rows of the first case,
    repeated): {threads: {batch: ms per call}}, for the build to choose from. Three passes over
    the thread counts, the fastest of each kept: a burst of other work on the machine then does
    not decide for one count alone. Then the cases' answers at each thread count, for the build
    to check before choosing it (kernels split their sums by thread count, and round
    accordingly: a setting is served only where it answers as eager does); ``answered``: the
    cases' own outputs are ``model``'s at the current thread count, and are copied for it."""
    plan = job["time_threads"]
    with np.load(job["cases"][0]["inputs"], allow_pickle=False) as data:
        arrays = [np.ascontiguousarray(data[n]) for n in input_names]
    timings = {}
    before = torch.get_num_threads()
    try:
        with runtime.forward_context(job["params"].get(runtime.FORWARD_MODE)):
            for threads in plan["threads"] * PASSES:
                torch.set_num_threads(threads)
                row = timings.setdefault(str(threads), {})
                for batch in plan["batch_sizes"]:
                    if plan["batching"]:
                        tensors = [torch.from_numpy(np.ascontiguousarray(
                            np.concatenate([a] * -(-batch // a.shape[0]))[:batch]))
                            for a in arrays]
                    else:
                        tensors = [torch.from_numpy(a) for a in arrays]
                    n, elapsed, _ = runtime.time_forward(model, tensors,
                                                         plan["seconds"] / PASSES)
                    ms = elapsed / n * 1e3
                    row[str(batch)] = min(ms, row.get(str(batch), ms))
        for threads in plan["threads"]:
            suffix = setting_suffix(memory_format, threads)
            if answered and threads == before:
                for case in job["cases"]:
                    shutil.copyfile(case["out"], case["out"].replace(".npz", f"{suffix}.npz"))
                continue
            torch.set_num_threads(threads)
            _run_cases(runtime, model, job, input_names, output_names, suffix)
    finally:
        torch.set_num_threads(before)
    return timings


def main(job_path: str) -> int:
    with open(job_path) as f:
        spec = json.load(f)
    sys.meta_path.insert(0, _Block(spec["block"]))
    for name in list(sys.modules):
        if name.split(".")[0] in spec["block"]:
            del sys.modules[name]
    import torch

    torch.set_num_threads(max(1, int(spec.get("threads", 1))))
    failed = 0
    for job in spec["jobs"]:
        try:
            _run_job(job, spec["inputs"], spec["output_names"])
        except BaseException as e:  # report to the parent; it turns this into a clear error
            failed += 1
            with open(job["error"], "w") as f:
                message = str(e)  # its end too: TorchScript says what failed last
                json.dump({"type": type(e).__name__, "stage": job.get("stage"),
                           "loader": job["params"].get("loader"),
                           "message": message if len(message) <= 2000 else
                           f"{message[:1000]}\n...\n{message[-1000:]}",
                           "traceback": traceback.format_exc()[-4000:],
                           "archive_frame": _archive_frame(e.__traceback__)}, f)
            if isinstance(e, KeyboardInterrupt):
                raise
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
