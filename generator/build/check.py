"""Offline parity: the artifacts loaded in a fresh process and compared with the eager model.

Each variant of a build is checked in a fresh ``python -I`` process of its own (as each server
instance's process imports only its own artifact), through the runtime ``model.py`` the server
will run, with the user's modules unimportable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..machine import cores
from ..repository.staging import remove_orphans
from ..repository.compare import Comparison, compare
from ..repository.config import tensor_entries
from .check_worker import setting_suffix
from .samples import load_npz, save_npz
from ..spec import ModelSpec
from ..variants.base import RUNTIME_MODEL, forward_parameters
from ..errors import error_line
from ..variants.packaging import demangle
from .diagnosis import fresh_process_tip

TIMEOUT_S = 900
WORKER = Path(__file__).resolve().parent / "check_worker.py"
LOAD_TIP = ("The artifact must load where your source code is not importable: keep model code"
            " in modules torch.package can intern, and install third-party packages on the"
            " server. Run with -v for details.")
ROUNDING = "Loosen --atol/--rtol if the error is rounding; otherwise "
VALUES_TIPS = {  # by the artifact's loader: what a wrong artifact of that kind means
    "torchscript": ROUNDING + "the TorchScript export is wrong for this model (try --script).",
    "aoti": ROUNDING + "AOTInductor (torch.export + Inductor's compiled code) got this model"
            " wrong at that case's input sizes, which differ from the first sample's the export"
            " saw: serve it with a variant that does not compile it (python: the eager model;"
            " python-ts: TorchScript).",
    "package": ROUNDING + "the archived model answers differently in a fresh process than in"
               " the build: it depends on state outside its module (a global, a file, the"
               " default dtype) that torch.package does not carry.",
}


@dataclass
class CheckJob:
    version_dir: Path
    load_params: dict[str, str]
    python_backend: bool  # check through the model.py copied beside the artifact
    time_threads: dict | None = None  # threads.plan(): also time the forward pass per thread count


@dataclass
class CheckResult:
    ok: bool
    detail: str  # one line for the summary
    comparisons: dict[str, Comparison]  # case name -> comparison
    max_abs: float = 0.0
    tip: str | None = None
    notes: list[str] = field(default_factory=list)  # what the runtime logged while loading
    # {memory format: {threads: {batch: ms}}} when the job asked for them (formats whose answers
    # match eager only)
    thread_timings: dict | None = None


CRASH_TIP = ("A process killed by {signal} while it loads or runs an artifact crashed inside"
             " PyTorch's native code for this kind of artifact (errors in a model's Python code"
             " raise exceptions, not signals). The other variants are not affected: build"
             " without this one (--variants), or try another torch version.")
OOM_TIP = ("SIGKILL while loading or running the artifacts is most often the kernel's"
           " out-of-memory killer: free memory (or build on a larger machine) and build again.")


CHECK_PREFIX = "gen-repo-check-"  # + pid<N>-: the build that made the folder


def die_with_parent() -> None:
    """preexec_fn of a worker: the kernel kills it (SIGKILL) when the build that started it
    dies, whatever killed the build (Linux's parent-death signal; elsewhere nothing)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def worker_crash(returncode: int, output: str) -> tuple[str, str]:
    """(what ended the check worker, the tip) for a worker that exited abnormally: a signal
    (a negative return code) is named, with a tip that fits it; else the exit code and the last
    lines it printed."""
    last = " ".join(output.strip().splitlines()[-3:])[:400]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        tip = OOM_TIP if name == "SIGKILL" else CRASH_TIP.format(signal=name)
        return f"the check process was killed by {name}" + (f" ({last})" if last else ""), tip
    return f"worker exited {returncode}: {last}", LOAD_TIP


def _worker_error(path: Path, block: list[str]) -> tuple[str, str]:
    """(one line: the error and where in the archive's code it happened, the tip)."""
    err = json.loads(path.read_text())
    line = error_line(err["type"], demangle(err["message"]), 400)  # the line that says what
    frame = err.get("archive_frame")
    if frame:
        line += f" (at {frame['file']}:{frame['line']}" + \
            (f": `{frame['code']}`)" if frame["code"] else ")")
    return line, fresh_process_tip(err, frame, block)  # by the cause, and the stage it failed


def check_artifacts(spec: ModelSpec, jobs: list[CheckJob], cases, references,
                    block: list[str]) -> list[CheckResult]:
    """Run each artifact on every case in a fresh process of its own (what one variant's
    import does to a process -- a custom op registered, the default dtype set -- never helps
    another pass), up to ``cores()`` at once; compare with the references."""
    remove_orphans(Path(tempfile.gettempdir()).glob(f"{CHECK_PREFIX}pid*"))
    with tempfile.TemporaryDirectory(prefix=f"{CHECK_PREFIX}pid{os.getpid()}-") as tmp:
        tmp = Path(tmp)
        inputs = {}
        for case in cases:
            inputs[case.name] = tmp / f"{case.name}_in.npz"
            save_npz(inputs[case.name], case.inputs)
        worker_jobs = []
        for i, job in enumerate(jobs):
            runtime = job.version_dir / "model.py" if job.python_backend else RUNTIME_MODEL
            worker_jobs.append({
                "runtime": str(runtime), "version_dir": str(job.version_dir),
                "params": {**job.load_params, **forward_parameters(spec)},
                "error": str(tmp / f"{i}_error.json"),
                "log": str(tmp / f"{i}_log.txt"), "timing": str(tmp / f"{i}_timing.json"),
                "time_threads": job.time_threads and {**job.time_threads,
                                                      "batching": spec.batching},
                "cases": [{"inputs": str(inputs[c.name]), "out": str(tmp / f"{i}_{c.name}.npz")}
                          for c in cases]})
        shared = {"block": block, "threads": spec.threads or os.cpu_count() or 1,  # as served
                  "inputs": tensor_entries(spec.inputs, spec.batching),
                  "output_names": [t.name for t in spec.outputs]}
        paths = []
        for i, wj in enumerate(worker_jobs):
            paths.append(tmp / f"job_{i}.json")
            paths[-1].write_text(json.dumps({**shared, "jobs": [wj]}))
        with ThreadPoolExecutor(max_workers=max(1, min(len(paths), cores()))) as pool:
            crashes = list(pool.map(lambda path: _run_worker(path, tmp), paths))
        return [_result(spec, wj, cases, references, crashed, block)
                for wj, crashed in zip(worker_jobs, crashes)]


def _run_worker(job_file: Path, cwd: Path) -> tuple[str, str] | None:
    """Run the check worker on one job file; (what ended it, the tip) when it crashed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        # By path, not -m: the worker imports nothing of gen-repo, so the check runs this
        # checkout's worker even where another checkout is the installed one.
        proc = subprocess.run([sys.executable, "-I", "-B", str(WORKER), str(job_file)],
                              cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S, preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        return f"loading/running the artifact took over {TIMEOUT_S} s", LOAD_TIP
    return None if proc.returncode in (0, 3) else \
        worker_crash(proc.returncode, proc.stderr or proc.stdout)


SETTINGS_TIP = (
    "Kernels split their sums by thread count and memory layout and round accordingly; at these"
    " values that rounding is above --atol/--rtol. If it is close enough, build with a larger"
    " --rtol (ten times the max rel err above); or set the served thread count with --threads"
    " N (the checks then run at N threads).")


def _agreeing(timings: dict, spec, wj, cases, references) -> tuple[dict, list[tuple[str, str]]]:
    """``timings`` ({memory format: {threads: ...}}) without the settings whose answers to the
    cases (check_worker.setting_suffix) are outside the tolerances; and (setting, how its answers
    differ) for each of those."""
    kept, off = {}, []
    for fmt, by_threads in timings.items():
        for threads, row in by_threads.items():
            suffix = setting_suffix(fmt, threads) + ".npz"
            results = [compare(load_npz(Path(c["out"].replace(".npz", suffix))),
                               references[case.name], spec.atol, spec.rtol)
                       for case, c in zip(cases, wj["cases"])]
            if all(r.ok for r in results):
                kept.setdefault(fmt, {})[threads] = row
            else:  # faster is no use if it answers differently
                off.append((f"{fmt} layout at {threads} thread(s)",
                            "; ".join(r.summary() for r in results if not r.ok)))
    return kept, off


def _result(spec, wj, cases, references, crashed, block) -> CheckResult:
    log = Path(wj["log"])
    notes = [ln.removeprefix("gen-repo: ") for ln in log.read_text().splitlines()
             if ln.strip()] if log.is_file() else []
    if Path(wj["error"]).is_file():
        error, tip = _worker_error(Path(wj["error"]), block)
        return CheckResult(False, "fails to load/run in a fresh process: " + error, {}, tip=tip,
                           notes=notes)
    missing = [c for c in wj["cases"] if not Path(c["out"]).is_file()]
    if missing:
        detail, tip = crashed or ("no output", LOAD_TIP)
        return CheckResult(False, f"fails in a fresh process: {detail}", {}, tip=tip,
                           notes=notes)
    comparisons = {case.name: compare(load_npz(Path(c["out"])), references[case.name],
                                      spec.atol, spec.rtol)
                   for case, c in zip(cases, wj["cases"])}
    bad = {c: r for c, r in comparisons.items() if not r.ok}
    worst = max((r.max_abs for r in comparisons.values()), default=0.0)
    if bad:
        detail = "; ".join(f"case {c}: {r.summary()}" for c, r in bad.items())
        tip = VALUES_TIPS.get(wj["params"].get("loader"), VALUES_TIPS["torchscript"])
        return CheckResult(False, f"differs from eager — {detail}", comparisons, worst, tip,
                           notes)
    timing = Path(wj["timing"])
    timings = json.loads(timing.read_text()) if timing.is_file() else None
    if timings:
        timings, off = _agreeing(timings, spec, wj, cases, references)
        if not timings:  # the server would run one of them
            return CheckResult(
                False, "answers outside the tolerances at every thread count and layout it may"
                f" be served with ({' / '.join(f'{s}: {d}' for s, d in off)})", comparisons,
                worst, SETTINGS_TIP, notes)
        notes += [f"{s} answers outside the tolerances: not used ({d})" for s, d in off]
    return CheckResult(True, f"matches eager on {len(cases)} inputs (max abs err {worst:.1e})",
                       comparisons, worst, notes=notes, thread_timings=timings)
