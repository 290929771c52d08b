"""One benchmark run: ceiling, server, sweep, results.json and the report -- even when cut short.

Ctrl-C, a server that dies or a tool that fails mid-way all end the sweep the same way: what was
measured is saved, the report is written from it (saying it stopped early and why), and only
then is the interruption or error passed on.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from .. import progress
from ..errors import GenRepoError, SpecError
from ..repository.layout import BuiltModel
from ..status import FAILED, POINT_FAILED
from . import ceiling, perf_analyzer as pa, workspace
from .report import write_report
from .results import (Results, busy_at_start, finish_machine, machine_info, now,
                      package_versions)
from .sweep import Plan, Sweep
from .targets import ManagedServer, RemoteServer
from .workspace import BenchModel

OWNED_OUTPUTS = ("csv", "plots", "inputs", "results.json", "report.md", "report.html",
                 "tritonserver.log")


@dataclass(frozen=True)
class BenchOptions:
    plan: Plan
    out: Path = Path("bench_results")
    ceiling_seconds: float = 3.0  # 0: no ceiling
    python_ts: str = "auto"  # derive python-ts from libtorch: auto (when no PyTorch backend)
    backend_dirs: tuple[str, ...] | None = None  # None: GEN_REPO_BACKEND_DIRECTORY's
    url: str | None = None  # a running server; None: bench starts its own
    repo: Path = Path("model_repository")  # local models (artifacts for the ceiling, samples)
    quick: bool = False
    floor: bool = True  # serve the Python backend's floor beside the variants


QUICK = dict(concurrency=(1, 8), batch_sizes=(1,), instances=(1,),
             measurement=pa.Measurement(mode="time_windows", interval_ms=1000, stability=50.0,
                                        max_trials=3, relaxed_stability=1000.0),
             ceiling_seconds=0.5)
FULL = dict(concurrency=(1, 2, 4, 8), batch_sizes=(1,), instances=(1, 2),
            measurement=pa.Measurement(mode="time_windows", interval_ms=2000, stability=15.0,
                                       max_trials=6, relaxed_stability=100.0),
            ceiling_seconds=3.0)


@dataclass
class BenchOutcome:
    results: Results
    results_path: Path
    report_md: Path
    report_html: Path
    interrupted: bool = False
    error: GenRepoError | None = None

    @property
    def verdict(self) -> list[str]:
        """The report's verdict, one sentence per line (what gen-repo bench prints)."""
        from .analysis import verdict

        return verdict(self.results)

    @property
    def exit_code(self) -> int:
        r = self.results
        if self.interrupted:
            return 130
        if not r.measured():
            return 1
        failed = any(p.status == POINT_FAILED for p in r.points) or \
            any(entry["state"] == FAILED for entry in r.loads)
        return 3 if failed or self.error else 0


def clear_outputs(out: Path, names=OWNED_OUTPUTS) -> None:
    """Remove what an earlier run wrote into ``out`` (and nothing else)."""
    for name in names:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _ceiling_threads(models: list[BenchModel], plan: Plan, quick: bool = False) -> list[int]:
    """The intra-op thread counts the served instances use over the plan's instance counts, and
    1: on a machine shared with other work one thread is often the faster, and the ceiling is
    the best this machine can do (a --quick look measures the served counts only)."""
    from ..runtime.model import threads_for

    counts = [i for i in plan.instances if i] or [1]
    found = set()
    for m in models:
        if m.built.backend != "python":
            continue
        params = workspace.config_parameters(m.built)
        found |= {threads_for(params, [{"kind": "KIND_CPU", "count": n}]) for n in counts}
    if not found:
        found = {threads_for({}, [{"kind": "KIND_CPU", "count": 1}])}
    return sorted(found if quick else found | {1}, reverse=True)


def _max_execution_batch(m: BenchModel) -> int:
    c = m.built.config
    return c.max_batch_size if c.max_batch_size > 0 and c.HasField("dynamic_batching") else 0


def _model_rows(models: list[BenchModel], plan: Plan) -> list[dict]:
    return [{"name": m.name, "base": m.base_name, "variant": m.variant, "label": m.label,
             "backend": m.built.backend, "derived_from": m.derived_from,
             "max_execution_batch": _max_execution_batch(m),
             "batch_sizes": plan.batch_sizes_for(m)} for m in models]


def _ceiling_batch_sizes(models: list[BenchModel], plan: Plan) -> list[int]:
    """The plan's batch sizes, plus the largest batch the dynamic batcher may form."""
    sizes = set(plan.batch_sizes) | {_max_execution_batch(m) for m in models}
    return sorted(s for s in sizes if s > 0)


def _managed(opts: BenchOptions, models: list[BuiltModel], work: Path):
    copy_dir = work / "repo"
    copies = workspace.copy_models(models, copy_dir)
    target = ManagedServer(copy_dir, opts.out / "tritonserver.log", opts.backend_dirs)
    derive = opts.python_ts == "yes" or (
        opts.python_ts == "auto" and target.missing_backend_reason("pytorch") is not None)
    if derive:
        bench_models, notes = workspace.with_python_ts(copies, copy_dir)
    else:
        bench_models, notes = [BenchModel(c) for c in copies], []
    if opts.floor and target.missing_backend_reason("python") is None:
        bench_models, floor_notes = workspace.with_floor(bench_models, copy_dir)
        notes += floor_notes
    return target, bench_models, notes


def _remote(opts: BenchOptions, names: list[str], work: Path):
    target = RemoteServer(opts.url, opts.plan.protocol)
    names = names or target.ready_models()
    if not names:
        raise SpecError(f"the server at {opts.url} has no READY model to measure.",
                        "Load one there, or name it with --models.")
    models, notes = [], []
    for name in names:
        local = opts.repo / name
        if (local / "config.pbtxt").is_file():
            models.append(BenchModel(BuiltModel(local)))
        else:
            models.append(BenchModel(workspace.stub_from_server(name, target.model_config(name),
                                                                work / "stubs")))
            notes.append(f"{name}: not in {opts.repo}, so perf_analyzer sends random inputs and"
                         " there is no in-process ceiling for it")
    return target, models, notes


def _ceiling(models: list[BenchModel], plan: Plan, seconds: float, quick: bool) -> list[dict]:
    arts = ceiling.artifacts_of(models)
    if not arts:
        return []
    points = ceiling.measure(arts, _ceiling_batch_sizes(models, plan),
                             _ceiling_threads(models, plan, quick), seconds)
    return [p.to_dict() for p in points]


def _new_results(opts: BenchOptions, plan: Plan, tool: pa.PerfAnalyzer, command) -> Results:
    versions = package_versions()
    versions["perf_analyzer"] = tool.version()
    results = Results(command=list(command or []), machine=machine_info(), versions=versions,
                      settings={**plan.to_dict(), "quick": opts.quick,
                                "ceiling_seconds": opts.ceiling_seconds,
                                "python_ts": opts.python_ts})
    busy = busy_at_start(results.machine)
    if busy:
        progress.warn(f"the machine is busy (load average {busy[0]:.1f} on {busy[1]} cores): the"
                      " numbers will be noisy and low; the report says so.")
    return results


def stopped(e: BaseException, results, outcome, hint: str = "") -> None:
    """A measuring run ended by Ctrl-C or an error keeps what it measured: ``results`` records why
    it stopped, ``outcome`` whether it was interrupted or the error (bench's and tune's rule)."""
    if isinstance(e, KeyboardInterrupt):
        outcome.interrupted = True
        results.stopped_by = "interrupted (Ctrl-C)"
        progress.warn("interrupted: keeping what was measured" + hint)
    else:
        outcome.error = e
        results.stopped_by = e.message.splitlines()[0]
        progress.warn(f"stopped early: {results.stopped_by}")


def run_bench(opts: BenchOptions, models: list[BuiltModel] | None = None,
              names: list[str] | None = None, command: list[str] | None = None) -> BenchOutcome:
    """Measure ``models`` (local, bench's own server) or ``names`` (on the server at opts.url)."""
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    tool = pa.locate()
    plan = opts.plan if not opts.url else replace(opts.plan, instances=(None,))
    results = _new_results(opts, plan, tool, command)
    results_path = out / "results.json"
    outcome = BenchOutcome(results, results_path, out / "report.md", out / "report.html")
    with tempfile.TemporaryDirectory(prefix=".gen-repo-bench-", dir=out) as tmp:
        work = Path(tmp)
        if opts.url:
            target, bench_models, notes = _remote(opts, names or [], work)
        else:
            target, bench_models, notes = _managed(opts, models or [], work)
        clear_outputs(out)  # only now: a run that cannot start keeps the previous results
        results.models = _model_rows(bench_models, plan)
        results.notes += notes
        results.save(results_path)
        try:
            if opts.ceiling_seconds > 0:
                results.ceiling = _ceiling(bench_models, plan, opts.ceiling_seconds, opts.quick)
                results.save(results_path)
            with target:
                results.server = target.describe()
                results.save(results_path)
                Sweep(target, tool, plan, results, out, results_path, work).run(bench_models)
            results.complete = True
        except (KeyboardInterrupt, GenRepoError) as e:
            stopped(e, results, outcome)
        finally:
            results.finished = now()
            finish_machine(results.machine)
            results.save(results_path)
        with progress.step("writing the report"):
            outcome.report_md, outcome.report_html = write_report(results, out)
    return outcome
