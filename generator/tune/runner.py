"""One tune run, as the command and the benchmark script use it: the plan, the search on bench's
server (a private copy of the repository), the decision, the report and the production
repository -- and, when cut short, what was measured and the report so far.

Ctrl-C or a server that dies end the search the same way: results.json holds every point
measured, the report is written from it (saying the run stopped early), the production
repository is not touched, and ``--resume`` goes on from there.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import progress
from ..bench import perf_analyzer as pa
from ..bench.results import finish_machine, machine_info, now, package_versions, busy_at_start
from ..bench.runner import OWNED_OUTPUTS, clear_outputs, stopped
from ..bench.targets import ManagedServer
from ..bench.workspace import BenchModel, copy_models
from ..repository.layout import BuiltModel
from ..errors import GenRepoError, RepositoryError
from ..status import SKIPPED
from . import decision, production
from .measure import Measurer
from .report import write_report
from .results import TuneResults
from .search import Outcome, Search, no_winner_error, plan_lines
from .settings import Settings, check_resumable
from .space import model_space

DEFAULT_BUDGET_MINUTES = 10.0
RESULTS = "results.json"
VERIFY_LOG = "verify-tritonserver.log"  # the server that verifies the winners
OUTPUTS = (*OWNED_OUTPUTS, VERIFY_LOG)  # what a new tune clears from its results directory


@dataclass(frozen=True)
class TuneOptions:
    settings: Settings
    out: Path = Path("prod_repository")
    results_dir: Path = Path("tune_results")
    budget_minutes: float | None = None  # None: DEFAULT_BUDGET_MINUTES, or the resumed run's
    backend_dirs: tuple[str, ...] | None = None  # None: GEN_REPO_BACKEND_DIRECTORY's
    force: bool = False  # replace models already in --out
    resume: bool = False  # go on with the search stored in results_dir
    resume_flags: tuple[tuple[str, object], ...] = ()  # search flags given with --resume
    write: bool = True  # write the production repository (the benchmark's grid does not)


@dataclass
class TuneOutcome:
    results: TuneResults
    results_path: Path
    report_md: Path | None = None
    report_html: Path | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    written: list[production.Written] = field(default_factory=list)
    errors: list[GenRepoError] = field(default_factory=list)  # per model: no winner, verify
    interrupted: bool = False
    error: GenRepoError | None = None  # what stopped the search (a server that died)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        done = [w for w in self.written if w.path] if self.written else \
            [o for o in self.outcomes if o.winner]
        if not done:
            return 1
        return 3 if self.errors or self.error else 0


def base_of(model: BuiltModel) -> str:
    return (model.record.get("spec") or {}).get("name") or model.name


def group(models: list[BuiltModel]) -> dict[str, list[BuiltModel]]:
    out: dict[str, list[BuiltModel]] = {}
    for m in models:
        if not m.built_by_gen_repo:
            raise RepositoryError(
                f"{m.path} was not built by gen-repo (no gen_repo.json): tune needs its build"
                " record (spec, stored samples and eager references) to measure and verify it.",
                "Build it with gen-repo build, or leave it out with --models.")
        out.setdefault(base_of(m), []).append(m)
    return out


def _repo_of(models: list[BuiltModel]) -> str | None:
    roots = {str(m.path.resolve().parent) for m in models}
    return roots.pop() if len(roots) == 1 else None


def fingerprints(models: list[BuiltModel]) -> dict[str, dict]:
    """Each model directory's artifacts (name -> SHA-256), from its build record: a resumed
    search must measure the same artifacts."""
    return {m.name: m.record.get("artifacts", {}) for m in models}


def _start(opts: TuneOptions, models: list[BuiltModel], command) -> tuple[TuneResults, Settings]:
    path = opts.results_dir / RESULTS
    if opts.resume:
        if not path.is_file():
            raise RepositoryError(f"--resume {opts.results_dir}: there is no {RESULTS} there.",
                                  "Pass the --results directory of the tune to resume, or start"
                                  " a new tune without --resume.")
        results = TuneResults.load(path)
        settings = Settings.from_dict(results.search)
        check_resumable(settings, dict(opts.resume_flags), str(path))
        stored = results.search.get("models", {})
        if stored != fingerprints(models):
            raise RepositoryError(
                f"the models to tune ({', '.join(sorted(m.name for m in models))}) are not the"
                f" ones the search in {path} measured ({', '.join(sorted(stored))}), or their"
                " artifacts changed since (rebuilt).",
                "Resume with the same --repo and --models, or start a new tune with another"
                " --results DIR.")
        if opts.budget_minutes is not None:
            results.search["budget_minutes"] = opts.budget_minutes
        results.complete, results.stopped_by, results.finished = False, None, None
        results.command = list(command or [])
        return results, settings
    settings = opts.settings
    versions = package_versions()
    results = TuneResults(command=list(command or []), machine=machine_info(),
                          versions=versions, settings=settings.plan().to_dict(),
                          search={**settings.to_dict(), "budget_minutes": opts.budget_minutes
                                  or DEFAULT_BUDGET_MINUTES, "models": fingerprints(models),
                                  "repo": _repo_of(models)})
    return results, settings


def resumed_selection(results_dir: Path) -> tuple[str | None, list[str]]:
    """(the repository, the model directories) of the search stored in ``results_dir``: what
    --resume tunes unless --repo / --models say otherwise."""
    path = results_dir / RESULTS
    if not path.is_file():
        return None, []
    search = TuneResults.load(path).search
    return search.get("repo"), sorted(search.get("models", {}))


def _outcomes(server: ManagedServer, groups: dict[str, list[BuiltModel]],
              copies: dict[str, BenchModel], settings: Settings,
              results: TuneResults) -> tuple[list[Outcome], list[GenRepoError]]:
    outcomes, errors = [], []
    for base, models in groups.items():
        spaces = []
        for m in models:
            reason = server.cannot_load_reason(copies[m.name])
            if reason:
                results.loads.append({"model": m.name, "instances": None, "state": SKIPPED,
                                      "reason": reason, "seconds": 0.0})
                progress.info(f"{m.name}: {SKIPPED} ({reason.split(':')[0]})")
                continue
            spaces.append(model_space(m, settings.space, settings.batch_size))
        if spaces:
            outcomes.append(Outcome(base, spaces))
        else:
            errors.append(RepositoryError(
                f"{base}: none of its variants ({', '.join(m.name for m in models)}) loads on"
                " this server.", "Serve libtorch models with a PyTorch backend"
                " (--backend-directory DIR or GEN_REPO_BACKEND_DIRECTORY), or build a"
                " Python-backend variant (gen-repo build --variants python)."))
    return outcomes, errors


def run_tune(opts: TuneOptions, models: list[BuiltModel],
             command: Sequence[str] | None = None) -> TuneOutcome:
    groups = group(models)
    if opts.write:
        production.check_out(opts.out, list(groups), opts.force)
    out = opts.results_dir
    out.mkdir(parents=True, exist_ok=True)
    results, settings = _start(opts, models, command)
    budget_s = float(results.search["budget_minutes"]) * 60
    tool = pa.locate()
    results.versions["perf_analyzer"] = tool.version()
    path = out / RESULTS
    if not opts.resume:
        if path.is_file():
            progress.info(f"replacing the results of an earlier tune in {out} (--resume {out}"
                          " continues one instead)")
        clear_outputs(out, OUTPUTS)
    run = len(results.runs) + 1
    results.runs.append({"run": run, "started": now(), "budget_minutes":
                         results.search["budget_minutes"]})
    busy = busy_at_start(results.machine if run == 1 else machine_info())
    if busy:
        progress.warn(f"the machine is busy (load average {busy[0]:.1f} on {busy[1]} cores):"
                      " figures will be noisy and low; the report says so.")
    outcome = TuneOutcome(results, path)
    with tempfile.TemporaryDirectory(prefix=".gen-repo-tune-", dir=out) as tmp:
        work = Path(tmp)
        copies = {c.name: BenchModel(c) for c in copy_models(models, work / "repo")}
        server = ManagedServer(work / "repo", out / "tritonserver.log", opts.backend_dirs)
        outcomes, outcome.errors = _outcomes(server, groups, copies, settings, results)
        outcome.outcomes = outcomes
        results.models = [{"name": m.name, "base": base_of(m), "variant": m.variant,
                           "label": m.record.get("label", ""), "backend": m.backend}
                          for m in models]
        results.save(path)
        for line in plan_lines(outcomes, settings, budget_s):
            progress.info(f"plan: {line}")
        measurer = Measurer(server, tool, settings.plan(), results, out, path, work, copies,
                            run)
        search = Search(settings, measurer, budget_s)
        try:
            if outcomes:
                with server:
                    results.server = server.describe()
                    results.save(path)
                    measurer.prime({s.model.backend for o in outcomes for s in o.spaces})
                    search.run(outcomes)
            results.complete = True
        except (KeyboardInterrupt, GenRepoError) as e:
            stopped(e, results, outcome, " (--resume goes on from here)")
        finally:
            _record_decisions(search, outcomes, results, settings, outcome)
            results.runs[-1].update(finished=now(), measured_points=measurer.measured_points,
                                    reused_points=measurer.reused_points,
                                    stopped_by=results.stopped_by)
            results.finished = now()
            finish_machine(results.machine)
            results.save(path)
            with progress.step("writing the report"):
                outcome.report_md, outcome.report_html = write_report(results, out)
    if results.complete and opts.write:
        _write_production(opts, outcome, groups, search)
    return outcome


def _record_decisions(search: Search, outcomes: list[Outcome], results: TuneResults,
                      settings: Settings, outcome: TuneOutcome) -> None:
    for o in outcomes:
        if not o.measured:
            continue
        search.decide(o)
        error = None
        if o.winner is None and results.complete:
            e = no_winner_error(o, settings.objective, settings.load_text())
            outcome.errors.append(e)
            error = e.message
        results.set_decision(decision.entry(search, o, error))


def _write_production(opts: TuneOptions, outcome: TuneOutcome,
                      groups: dict[str, list[BuiltModel]], search: Search) -> None:
    results = outcome.results
    winners = []
    for o in outcome.outcomes:
        if o.winner is None:
            continue
        c = o.winner.candidate
        source = next(m for m in groups[o.base] if m.name == c.model)
        d = results.decision(o.base)
        record = {"searched": {"objective": results.search["objective"],
                               "load": {"concurrency": results.search["concurrency"],
                                        "batch_size": results.search["batch_size"],
                                        "protocol": results.search["protocol"]},
                               "strategy": results.search["strategy"],
                               "variants": d["variants"], "space": d["space"],
                               "measured": d["measured"],
                               "measured_seconds": d["measured_seconds"]},
                  "winner": d["winner"], "runner_up": d["runner_up"], "default": d["default"],
                  "ratio_to_default": d["ratio"], "decision": d["sentence"],
                  "results": str(outcome.results_path.resolve())}
        winners.append((o.base, source, c, record))
    if not winners:
        return
    with progress.step(f"verifying and writing {', '.join(w[0] for w in winners)} into"
                       f" {opts.out}"):
        outcome.written = production.write(winners, opts.out, opts.backend_dirs,
                                           opts.results_dir / VERIFY_LOG)
    for w in outcome.written:
        d = results.decision(w.base)
        if w.path:
            d["written"] = str(w.path)
        else:
            outcome.errors.append(w.error)
            d["error"] = w.error.message
    results.save(outcome.results_path)
    outcome.report_md, outcome.report_html = write_report(results, opts.results_dir)
