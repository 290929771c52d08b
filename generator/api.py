"""gen-repo from Python: build a repository from the model in memory, serve it, verify it.

    import gen_repo
    report = gen_repo.build(model, {"tokens": tokens, "mask": mask}, name="ranker",
                            dynamic_axes={"tokens": [1], "mask": [1]}, out="model_repository")
    with gen_repo.serve("model_repository", models=["ranker"]) as served:
        result = gen_repo.verify("model_repository", served=served)

    outcome = gen_repo.bench("model_repository", models=["ranker"], quick=True)

The command line is a layer over these functions: gen-repo build, serve, verify, bench and tune
turn their flags into these keywords and print what comes back. They print nothing unless
``progress=True`` (None: as the command line set it), and raise the typed errors of
``generator.errors`` (``.message``: the cause, ``.tip``: what to do). They return what the
command line prints: a BuildReport, a Serving (the running server and each model's status), a
VerifyReport, a BenchOutcome, a TuneOutcome (docs/api.md).
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from . import progress as progress_lines
from . import spec as specmod
from .build.pipeline import BuildReport
from .errors import SpecError, did_you_mean
from .serve.lifecycle import ModelStatus, TritonServer
from .serve.verify import VerifyOptions, VerifyReport
from .status import READY

__all__ = ["build", "build_spec", "serve", "verify", "bench", "bench_options", "tune",
           "tune_settings", "Serving", "BuildReport", "VerifyReport", "ModelStatus"]

DEFAULT_REPO = specmod.DEFAULT_REPO


def _names(models: str | Sequence[str] | None) -> str | None:
    if models is None or isinstance(models, str):
        return models
    return ",".join(models)


def spec_values(options: dict[str, Any], where: str = "gen_repo.build") -> dict[str, Any]:
    """Spec option values by key (as OPTIONS names them), each checked and converted."""
    known = {o.key: o for o in specmod.OPTIONS}
    out = {}
    for key, value in options.items():
        if key not in known:
            raise SpecError(f"{where}: unknown option {key!r}{did_you_mean(key, known)}.",
                            f"Options: {', '.join(sorted(known))}.")
        out[key] = specmod.coerce(known[key], value, f"{where}({key}=...)")
    return out


def build(model=None, inputs=None, *, name: str | None = None,
          out: str | Path | None = None,
          dynamic_axes: dict[str, Sequence[int]] | None = None,
          value_ranges: dict[str, tuple[int, int]] | None = None,
          config: str | Path | None = None, progress: bool | None = False,
          command: Sequence[str] | None = None, **options) -> BuildReport:
    """Build the model's variants into the repository ``out`` (default: model_repository), each
    checked against eager in a fresh process.

    ``model``: an ``nn.Module`` object (also one whose class the running script defines), a
    factory to call for one, or a source string as the command line takes it
    (``torchvision:resnet18``, ``pkg.module:factory``, ``path/to/file.py:factory``); None: the
    ``source`` of ``config``. ``inputs``: example tensors, batch first (unless
    ``max_batch_size=0``): one tensor, a tuple (in forward()'s parameter order) or a dict by
    forward() parameter name; they become the inputs' names, dtypes and dims, and the first
    sample case. ``dynamic_axes``: {input: axes of its example that vary} (the batch axis
    always does); ``value_ranges``: {input: (low, high)} for integer inputs (default: the
    example's min .. max + 1). Without ``inputs``, give them as the command line does:
    ``input=["x:float32:16"]``. ``config``: a spec file (TOML or YAML), which keyword options
    override. Every other option of ``gen-repo build`` by its spec key: ``variants``,
    ``max_batch_size``, ``cpu_instances``, ``gpu_instances``, ``dtype``, ``atol``, ``force``,
    ... (docs/api.md). A variant that fails its check is FAILED in the report
    (``report.exit_code``: 0 all written, 3 some, 1 none); a bad spec or model raises.
    """
    from .build.pipeline import build_repository

    obj, source = _model(model)
    with progress_lines.shown(progress), tempfile.TemporaryDirectory(
            prefix="gen-repo-inputs-") as tmp:
        spec = build_spec(config, source=source, name=name, out=out, **options)
        if obj is not None and not name and spec.name == specmod.default_name(source):
            spec = spec.with_(name=type(obj).__name__.lower())
        if inputs is not None:
            specs, example = _example_inputs(obj, inputs, spec.batching, dynamic_axes,
                                             value_ranges, Path(tmp))
            spec = spec.with_(inputs=specs, example_inputs=example)
            specmod.validate(spec)
        elif dynamic_axes or value_ranges:
            raise SpecError("dynamic_axes and value_ranges describe example tensors, and no"
                            " inputs were given.", "Pass the example tensors as inputs.")
        return build_repository(spec, list(command or ["gen_repo.build"]), model=obj)


def build_spec(config: str | Path | None = None, **options) -> specmod.ModelSpec:
    """The ModelSpec a build uses: the spec file ``config`` (if any), overridden by ``options``
    (spec keys; None values are left out), checked."""
    values = spec_values({k: v for k, v in options.items() if v is not None})
    file_values = specmod.load_spec_file(config) if config else {}
    return specmod.build_spec(specmod.merge_values(file_values, values))


def _model(model) -> tuple[Any, str | None]:
    """(the nn.Module to build or None, the source string the spec records)."""
    import torch

    if model is None or isinstance(model, str):
        return None, model
    if callable(model) and not isinstance(model, torch.nn.Module):
        model = model()
    if not isinstance(model, torch.nn.Module):
        raise SpecError(f"gen_repo.build: the model is a {type(model).__name__}.",
                        "Pass an nn.Module, a factory that returns one, or a source string"
                        " (path/to/file.py:factory).")
    from .build.objects import source_name

    return model, source_name(model)


def _example_inputs(obj, inputs, batching: bool, dynamic_axes, value_ranges, folder: Path):
    import numpy as np

    from .build.objects import example_inputs

    if obj is None and not isinstance(inputs, dict):
        raise SpecError("with a source string, example inputs must be a dict by forward()"
                        " parameter name (gen-repo has not loaded the model to read them).",
                        "Pass {'name': tensor, ...}, or the nn.Module itself.")
    specs, arrays = example_inputs(obj, inputs, batching, dynamic_axes, value_ranges)
    path = folder / "example_inputs.npz"
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return specs, str(path)


@dataclass
class Serving:
    """A running server and what it loaded (gen_repo.serve)."""

    server: TritonServer
    statuses: dict[str, ModelStatus] = field(default_factory=dict)  # by model directory name

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    @property
    def metrics_url(self) -> str:
        return self.server.metrics_url

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    @property
    def ready(self) -> list[str]:
        return [name for name, s in self.statuses.items() if s.state == READY]


@contextmanager
def serve(repo: str | Path = DEFAULT_REPO, *, models: str | Sequence[str] | None = None,
          http_port: int | None = None, grpc_port: int | None = None,
          metrics_port: int | None = None, listen: str = "127.0.0.1",
          backend_dirs: Sequence[str] | None = None, log_file: str | Path | None = None,
          start_timeout: float = 120.0, docker=None, env: dict[str, str] | None = None,
          progress: bool = False) -> Iterator[Serving]:
    """Start a tritonserver on ``repo`` (a folder or an s3:// URL), load ``models`` (model
    directories or model names; default: all) and yield a Serving: its URLs and each model's
    status (READY, FAILED with the reason, SKIPPED). The server stops when the block ends, also
    on an exception. Ports: free ones unless given. ``docker``: a
    ``generator.serve.docker_server.DockerOptions`` to serve with the NGC container instead of
    the embedded server. A model that does not load is a status, not an exception: look at
    ``serving.ready``.
    """
    from .repository.selection import select_models
    from .repository.s3 import is_s3_url, triton_env
    from .serve import control
    from .serve.ports import Ports, free_ports

    with progress_lines.shown(progress):
        chosen = select_models(str(repo), _names(models))
        given = (http_port, grpc_port, metrics_port)
        free = iter(free_ports(sum(p is None for p in given)))
        ports = Ports(*(p if p is not None else next(free) for p in given))
        ports.validate()
        common = dict(log_path=log_file, start_timeout=start_timeout,
                      listen=control.check_address(listen),
                      env={**(triton_env() if is_s3_url(repo) else {}), **(env or {})})
        if docker is None:
            from .serve.server import EmbeddedServer

            server = EmbeddedServer(repo, ports, backend_dirs=backend_dirs, **common)
        else:
            from .serve.docker_server import DockerServer

            if backend_dirs:
                raise SpecError("backend_dirs apply to the embedded server, not docker.",
                                "The NGC image has its backends; drop backend_dirs.")
            from .serve.docker_server import compatibility_warnings

            for warning in compatibility_warnings(chosen, docker.image):
                progress_lines.warn(warning)
            server = DockerServer(repo, ports, options=docker, **common)
        with server:
            serving = Serving(server, {s.name: s for s in server.load(chosen)})
            yield serving


def verify(repo: str | Path = DEFAULT_REPO, *, served: Serving | None = None,
           http_url: str = "127.0.0.1:8000", grpc_url: str = "127.0.0.1:8001",
           models: str | Sequence[str] | None = None,
           protocols: Sequence[str] = ("http", "grpc"), concurrency: int = 32,
           requests: int = 64, bad_requests: bool = False, timeout: float = 300.0,
           progress: bool = False) -> VerifyReport:
    """Check each model of ``repo`` on a running server (``served``, or the one at
    ``http_url``/``grpc_url``) over each protocol: readiness, metadata against the spec, the
    stored samples against the eager references at several batch sizes, ``requests``
    concurrent requests each answered with its own rows, and with ``bad_requests`` malformed
    requests refused. Returns the VerifyReport (``report.ok``, ``report.failures``); a FAIL is
    a result, not an exception."""
    from .repository.selection import select_models
    from .serve.protocols import PROTOCOLS
    from .serve.verify import verify_repository

    chosen = tuple(dict.fromkeys(p.lower() for p in protocols))
    if not chosen or any(p not in PROTOCOLS for p in chosen):
        raise SpecError(f"protocols {list(protocols)} must name http and/or grpc.",
                        "Example: protocols=('http', 'grpc')")
    if concurrency < 1 or requests < 0:
        raise SpecError(f"concurrency={concurrency}, requests={requests}: concurrency must be"
                        " positive and requests at least 0.", "Example: concurrency=8,"
                        " requests=64 (requests=0 skips the concurrency check)")
    if served is not None:
        http_url, grpc_url = served.http_url, served.grpc_url
    options = VerifyOptions(protocols=chosen, concurrency=concurrency, requests=requests,
                            bad_requests=bad_requests, timeout=timeout)
    with progress_lines.shown(progress):
        return verify_repository(select_models(str(repo), _names(models)), http_url, grpc_url,
                                 options, repo_hint=f"repository {repo}")


def _counts(values: Sequence[int] | None, what: str) -> tuple[int, ...] | None:
    """Positive integers, without repeats (None: the default)."""
    if values is None:
        return None
    if isinstance(values, int):
        values = (values,)
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise SpecError(f"{what} {list(values)} must be positive integers.",
                        f"Example: {what}=(1, 2, 4, 8)")
    return tuple(dict.fromkeys(values))


def bench_options(*, repo: str | Path = DEFAULT_REPO, out: str | Path = "bench_results",
                  quick: bool = False, concurrency: Sequence[int] | None = None,
                  batch_sizes: Sequence[int] | None = None,
                  instances: Sequence[int] | None = None, protocol: str = "grpc",
                  url: str | None = None, measurement_interval: int | None = None,
                  request_count: int | None = None, stability: float | None = None,
                  ceiling_seconds: float | None = None, ceiling: bool = True,
                  floor: bool = True, python_ts: str = "auto",
                  backend_dirs: Sequence[str] | None = None):
    """The BenchOptions of bench()'s keywords (None: the preset's, quick or full), checked."""
    from .bench.runner import FULL, QUICK, BenchOptions
    from .bench.sweep import Plan

    preset = QUICK if quick else FULL
    if protocol not in ("grpc", "http"):
        raise SpecError(f"protocol {protocol!r} is neither grpc nor http.", "protocol='grpc'")
    if python_ts not in ("auto", "yes", "no"):
        raise SpecError(f"python_ts {python_ts!r} is not auto, yes or no.", "python_ts='auto'")
    if url and instances:
        raise SpecError("--instances needs bench's own server (instances= in Python): it"
                        " rewrites instance_group in a private copy of the repository, which a"
                        " running server (--url) does not read.",
                        "Drop --url to let bench start its server, or drop --instances.")
    meas = preset["measurement"].with_windows(request_count, measurement_interval, stability)
    plan = Plan(concurrency=_counts(concurrency, "concurrency") or preset["concurrency"],
                batch_sizes=_counts(batch_sizes, "batch_sizes") or preset["batch_sizes"],
                instances=_counts(instances, "instances") or preset["instances"],
                protocol=protocol, measurement=meas)
    seconds = 0.0 if not ceiling else (
        ceiling_seconds if ceiling_seconds is not None else preset["ceiling_seconds"])
    return BenchOptions(plan=plan, out=Path(out), ceiling_seconds=seconds, python_ts=python_ts,
                        backend_dirs=tuple(backend_dirs) if backend_dirs else None, url=url,
                        repo=Path(repo), quick=quick, floor=floor)


def bench(repo: str | Path = DEFAULT_REPO, *, models: str | Sequence[str] | None = None,
          progress: bool | None = False, command: Sequence[str] | None = None, **options):
    """Measure the repository's variants with perf_analyzer (what ``gen-repo bench`` does):
    concurrency x batch size x instance count on bench's own embedded server over a private
    copy (or on the running server at ``url``: no instance scaling), the in-process ceiling
    (``ceiling=False`` skips it), the Python backend's floor; write results.json and
    report.md/html into ``out`` (default bench_results). ``options``: bench_options' keywords
    -- quick, concurrency, batch_sizes, instances, protocol, url, measurement_interval,
    request_count, stability, ceiling_seconds, ceiling, floor, python_ts, backend_dirs.
    Defaults: concurrency 1,2,4,8, batch 1, instances 1,2, 2 s windows (``quick=True``: 1,8 /
    1 / 1 / 1 s). Returns the BenchOutcome (``.results``, ``.verdict``, ``.report_md``,
    ``.exit_code``: 3 when some points or models failed); raises when nothing could be
    measured."""
    from .bench.runner import run_bench
    from .repository.selection import select_models

    opts = bench_options(repo=repo, **options)
    command = list(command or ["gen_repo.bench"])
    with progress_lines.shown(progress):
        if opts.url:
            names = [n.strip() for n in (_names(models) or "").split(",") if n.strip()]
            outcome = run_bench(opts, names=names, command=command)
        else:
            outcome = run_bench(opts, models=select_models(str(repo), _names(models)),
                                command=command)
        if outcome.error is not None and not outcome.results.measured():
            raise outcome.error
        if outcome.error is not None:
            progress_lines.warn(f"{outcome.error.message} TIP: {outcome.error.tip}")
    return outcome


def tune_settings(*, objective: str | None = None, p99_budget_ms: float | None = None,
                  memory_budget_gb: float | None = None,
                  concurrency: Sequence[int] | None = None, batch_size: int | None = None,
                  instances: Sequence[int] | None = None, threads: Sequence[int] | None = None,
                  queue_delays_us: Sequence[int | str] | None = None,
                  max_batch_sizes: Sequence[int] | None = None, preferred: bool | None = None,
                  strategy: str | None = None, protocol: str | None = None,
                  measurement_interval: int | None = None, stability: float | None = None):
    """(tune's Settings, the options given: command-line flag -> value as results.json stores
    it). None: the default."""
    from .tune.objective import MAX_THROUGHPUT, MIN_LATENCY, Objective, default_concurrency
    from .tune.settings import MEASUREMENT, SEARCH_OPTIONS, STAGED, Settings
    from .tune.space import DEFAULT_DELAYS_US, OFF, Space

    flags = {keyword: flag for keyword, flag, _ in SEARCH_OPTIONS}
    given = {k: v for k, v in locals().items() if k in flags and v is not None}
    for key in ("p99_budget_ms", "memory_budget_gb"):
        if given.get(key) is not None and not given[key] > 0:
            raise SpecError(f"{flags[key]} {given[key]:g} must be positive.",
                            f"Example: {flags[key]} 60")
    if batch_size is not None and batch_size < 1:
        raise SpecError(f"--batch-size {batch_size} must be at least 1.", "Example: --batch-size 1")
    kind = (objective or MAX_THROUGHPUT).replace("_", "-")
    if kind not in (MAX_THROUGHPUT, MIN_LATENCY):
        raise SpecError(f"objective {objective!r} is neither {MAX_THROUGHPUT} nor {MIN_LATENCY}.",
                        f"objective='{MAX_THROUGHPUT}'")
    goal = Objective(kind, p99_budget_ms, memory_budget_gb)
    delays = DEFAULT_DELAYS_US
    if queue_delays_us is not None:
        delays = tuple(dict.fromkeys(OFF if str(d).lower() == "off" else d
                                     for d in queue_delays_us))
        if not delays or any(d != OFF and (isinstance(d, bool) or not isinstance(d, int)
                                           or d < 0) for d in delays):
            raise SpecError(f"--queue-delays-us {list(queue_delays_us)}: each is 'off' or a"
                            " number of microseconds.", "Example: --queue-delays-us"
                            " off,0,100,2000")
    space = Space(instances=_counts(instances, "instances") or (),
                  threads=_counts(threads, "threads") or (), delays_us=delays,
                  max_batch_sizes=_counts(max_batch_sizes, "max_batch_sizes") or (),
                  preferred=preferred is not False)
    settings = Settings(goal, tuple(sorted(_counts(concurrency, "concurrency") or
                                           default_concurrency(goal.kind, goal.p99_budget_ms))),
                        batch_size or 1, space, strategy or STAGED, protocol or "grpc",
                        MEASUREMENT.with_windows(None, measurement_interval, stability))
    flat = settings.flat()
    keys = {keyword: key for keyword, _, key in SEARCH_OPTIONS}
    return settings, {flags[k]: flat[keys[k]] for k in given}


def tune(repo: str | Path = DEFAULT_REPO, *, models: str | Sequence[str] | None = None,
         out: str | Path = "prod_repository", results: str | Path = "tune_results",
         resume: bool = False, force: bool = False, budget_minutes: float | None = None,
         backend_dirs: Sequence[str] | None = None, progress: bool | None = False,
         command: Sequence[str] | None = None, **search):
    """Find each model's fastest correct deployment on this machine (what ``gen-repo tune``
    does) and write it, verified over HTTP and gRPC, into the production repository ``out``
    under the model's name. ``search``: the options of tune_settings (objective,
    p99_budget_ms, memory_budget_gb, concurrency, batch_size, instances, threads,
    queue_delays_us, max_batch_sizes, preferred, strategy, protocol, measurement_interval,
    stability). ``resume=True`` goes on with the search stored in ``results``. Returns the
    TuneOutcome (``.results.decisions``, ``.report_md``, ``.exit_code``: 3 when some models got
    no winner, 1 when none did, with ``.errors`` saying why)."""
    from .repository.s3 import is_s3_url
    from .repository.selection import select_models
    from .tune.runner import TuneOptions, resumed_selection, run_tune

    if is_s3_url(repo):
        raise SpecError(f"repository {repo}: tune measures and rewrites a local repository.",
                        "Run it on the built repository (gen-repo build --out DIR), then"
                        " gen-repo push the production repository.")
    if budget_minutes is not None and not budget_minutes > 0:
        raise SpecError(f"--budget-minutes {budget_minutes:g} must be positive.",
                        "Example: --budget-minutes 10")
    settings, given = tune_settings(**search)
    opts = TuneOptions(settings=settings, out=Path(out), results_dir=Path(results),
                       budget_minutes=budget_minutes,
                       backend_dirs=tuple(backend_dirs) if backend_dirs else None, force=force,
                       resume=resume, resume_flags=tuple(given.items()))
    names = _names(models)
    if resume:  # the stored search's repository and models, unless given
        stored_repo, stored_names = resumed_selection(Path(results))
        if str(repo) == DEFAULT_REPO and stored_repo:
            repo = stored_repo
        if names is None and stored_names:
            names = ",".join(stored_names)
    with progress_lines.shown(progress):
        return run_tune(opts, select_models(str(repo), names), list(command or ["gen_repo.tune"]))
