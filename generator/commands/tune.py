"""gen-repo tune: find the fastest correct deployment of each model on this machine and write
it as the production repository."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SpecError
from ..repository.s3 import is_s3_url
from ..repository.selection import select_models
from .common import (DEFAULT_REPO, add_backend_dir_arg, add_repo_args, int_list,
                     measurement_from_args)
from .parser import DefaultsHelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune", help="search variant x instances x threads x batching for the fastest"
                     " correct config; write the production repository",
        description="For each model of the repository, search every variant that loads on the"
                    " server (libtorch with a PyTorch backend, python, python-ts, python-aoti,"
                    " python-compile) x instance count x intra-op threads x dynamic batching"
                    " (queue delay, preferred batch size, max batch size), each candidate"
                    " served alone on the embedded tritonserver and measured by perf_analyzer"
                    " at the stated load. A staged search (threads x instances on the default"
                    " variant, the other variants at the best setting, their own settings for"
                    " those still in the race, then batching around the best) drops what"
                    " cannot beat the incumbent and"
                    " stops within --budget-minutes. The winner of each model is rewritten into"
                    " --out under the model's name, verified over HTTP and gRPC against the"
                    " stored eager references before it is swapped in, with a report (md +"
                    " html, throughput-vs-p99 plot). Every point is kept in --results;"
                    " --resume goes on after Ctrl-C without measuring anything twice. Exit code"
                    " 3 when some models got no winner, 1 when none did, 130 when interrupted.",
        formatter_class=DefaultsHelpFormatter)
    add_repo_args(p)
    p.add_argument("--out", default="prod_repository", metavar="DIR",
                   help="the production repository: each model's winner, under the model's"
                        " name")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="where results.json, csv/, plots/ and report.md/html go (default"
                        " tune_results)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="go on with the tune whose results are in DIR (a killed or interrupted"
                        " one), on its repository and models: stored points are reused, only"
                        " what is missing is measured")
    p.add_argument("--force", action="store_true",
                   help="replace models already in --out")
    g = p.add_argument_group("what is best")
    g.add_argument("--objective", choices=("max-throughput", "min-latency"), default=None,
                   help="max-throughput: the highest throughput over the --concurrency levels;"
                        " min-latency: the lowest p99 (at its worst over the levels)"
                        " (default max-throughput)")
    g.add_argument("--p99-budget-ms", type=float, default=None, metavar="MS",
                   help="only points whose p99 stays within MS count (with max-throughput: the"
                        " highest throughput inside the budget)")
    g.add_argument("--memory-budget-gb", type=float, default=None, metavar="GB",
                   help="instances x the model's memory per instance (the server's resident"
                        " memory, measured) must fit")
    g.add_argument("--concurrency", default=None, metavar="LIST",
                   help="requests in flight to optimise for (default 8; min-latency: 1; with"
                        " --p99-budget-ms: 1,4,8)")
    g.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="rows per request (default 1)")
    s = p.add_argument_group("the search")
    s.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help="measurement time for the whole search (default 10; with --resume: the"
                        " stored one)")
    s.add_argument("--strategy", choices=("staged", "grid"), default=None,
                   help="staged: threads x instances, variants, then batching around the"
                        " best; grid: every candidate of the space (for comparisons)"
                        " (default staged)")
    s.add_argument("--instances", default=None, metavar="LIST",
                   help="instance counts (default 1, 2, 4 ... up to the cores; per GPU: 1,2)")
    s.add_argument("--threads", default=None, metavar="LIST",
                   help="intra-op threads per instance (default 1, 2, 4 ... up to cores /"
                        " instances)")
    s.add_argument("--queue-delays-us", default=None, metavar="LIST",
                   help="dynamic batching: 'off' and/or max queue delays in µs (default"
                        " off,0,100,1000,5000)")
    s.add_argument("--max-batch-sizes", default=None, metavar="LIST",
                   help="max batch sizes, at most the one the model was built for (default: that"
                        " one and half of it)")
    s.add_argument("--no-preferred-batch-sizes", dest="preferred", action="store_const",
                   const=False, default=None,
                   help="do not try a preferred batch size of half the max batch size")
    m = p.add_argument_group("measuring")
    m.add_argument("--protocol", choices=("grpc", "http"), default=None,
                   help="perf_analyzer's protocol (default grpc)")
    m.add_argument("--measurement-interval", type=int, default=None, metavar="MS",
                   help="perf_analyzer time window (default 1000)")
    m.add_argument("--stability", type=float, default=None, metavar="PCT",
                   help="the last 3 windows must agree within PCT%% (default 20)")
    add_backend_dir_arg(p)
    p.set_defaults(run=run)


def _delays(text: str | None):
    """--queue-delays-us: 'off' (no dynamic batching) and delays in microseconds."""
    from ..tune.space import DEFAULT_DELAYS_US, OFF

    if text is None:
        return DEFAULT_DELAYS_US
    out = []
    for item in (x.strip().lower() for x in text.split(",") if x.strip()):
        if item == "off":
            out.append(OFF)
        elif item.isdigit():
            out.append(int(item))
        else:
            raise SpecError(f"--queue-delays-us '{text}': '{item}' is neither 'off' nor a"
                            " number of microseconds.",
                            "Example: --queue-delays-us off,0,100,2000")
    if not out:
        raise SpecError(f"--queue-delays-us '{text}' lists nothing.",
                        "Example: --queue-delays-us off,0,100,2000")
    return tuple(dict.fromkeys(out))


def _positive(value, flag: str, example: str):
    if value is not None and not value > 0:
        raise SpecError(f"{flag} {value:g} must be positive.", f"Example: {flag} {example}")
    return value


def settings_from_args(args):
    """(Settings, the search flags given explicitly: flag -> value as results.json stores it)."""
    from ..tune.objective import MAX_THROUGHPUT, Objective, default_concurrency
    from ..tune.settings import FLAG_KEYS, MEASUREMENT, STAGED, Settings
    from ..tune.space import Space

    _positive(args.p99_budget_ms, "--p99-budget-ms", "60")
    _positive(args.memory_budget_gb, "--memory-budget-gb", "4")
    _positive(args.budget_minutes, "--budget-minutes", "10")
    if args.batch_size is not None and args.batch_size < 1:
        raise SpecError(f"--batch-size {args.batch_size} must be at least 1.",
                        "Example: --batch-size 1")
    objective = Objective(args.objective or MAX_THROUGHPUT, args.p99_budget_ms,
                          args.memory_budget_gb)
    concurrency = int_list(args.concurrency, "--concurrency",
                           default_concurrency(objective.kind, objective.p99_budget_ms))
    space = Space(instances=int_list(args.instances, "--instances", ()),
                  threads=int_list(args.threads, "--threads", ()),
                  delays_us=_delays(args.queue_delays_us),
                  max_batch_sizes=int_list(args.max_batch_sizes, "--max-batch-sizes", ()),
                  preferred=args.preferred is not False)
    settings = Settings(objective, tuple(sorted(concurrency)), args.batch_size or 1, space,
                        args.strategy or STAGED, args.protocol or "grpc",
                        measurement_from_args(args, MEASUREMENT))
    flat = settings.flat()
    given = {flag: flat[key] for flag, key in FLAG_KEYS.items()
             if getattr(args, _dest(flag)) is not None}
    return settings, given


def _dest(flag: str) -> str:
    return "preferred" if flag == "--no-preferred-batch-sizes" else \
        flag.lstrip("-").replace("-", "_")


def run(args) -> int:
    from ..tune.runner import TuneOptions, resumed_selection, run_tune

    if is_s3_url(args.repo):
        raise SpecError(f"--repo {args.repo}: tune measures and rewrites a local repository.",
                        "Run it on the built repository (gen-repo build --out DIR), then"
                        " gen-repo push the production repository.")
    if args.resume and args.results and Path(args.resume) != Path(args.results):
        raise SpecError(f"--resume {args.resume} and --results {args.results} name two"
                        " directories.", "--resume DIR reads and goes on writing DIR: drop"
                        " --results.")
    settings, given = settings_from_args(args)
    results_dir = Path(args.resume or args.results or "tune_results")
    opts = TuneOptions(settings=settings, out=Path(args.out), results_dir=results_dir,
                       budget_minutes=args.budget_minutes,
                       backend_dirs=args.backend_directory, force=args.force,
                       resume=bool(args.resume), resume_flags=tuple(given.items()))
    command = ["gen-repo", *sys.argv[1:]] if sys.argv and "gen-repo" in sys.argv[0] else \
        ["gen-repo", "tune"]
    repo, names = args.repo, args.models
    if args.resume:  # the stored search's repository and models, unless given
        stored_repo, stored_names = resumed_selection(results_dir)
        if repo == DEFAULT_REPO and stored_repo:
            repo = stored_repo
        if names is None and stored_names:
            names = ",".join(stored_names)
    outcome = run_tune(opts, select_models(repo, names), command)
    for d in outcome.results.decisions:
        print(d["sentence"])
        if d.get("written"):
            print(f"  written: {d['written']} (verified over HTTP and gRPC)")
    print(f"results: {outcome.results_path}")
    if outcome.report_md:
        print(f"report:  {outcome.report_md}\n         {outcome.report_html}")
    if outcome.interrupted:
        raise KeyboardInterrupt
    problems = list(outcome.errors)
    if outcome.error is not None:
        problems.append(outcome.error)
    if outcome.exit_code == 1 and problems:
        for e in problems[1:]:
            _print_error(e)
        raise problems[0]
    for e in problems:
        _print_error(e)
    return outcome.exit_code


def _print_error(e) -> None:
    """A model's own failure, when others were written (the run's exit code is then 3)."""
    print(f"ERROR: {e.message}" + (f"\nTIP: {e.tip}" if e.tip else ""), file=sys.stderr,
          flush=True)
