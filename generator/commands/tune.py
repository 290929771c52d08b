"""gen-repo tune: find the fastest correct deployment of each model on this machine and write
it as the production repository."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SpecError
from .common import add_backend_dir_arg, add_repo_args, int_list
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
    if text is None:
        return None
    items = [x.strip().lower() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x != "off" and not x.isdigit()]
    if bad or not items:
        raise SpecError(f"--queue-delays-us '{text}': "
                        + (f"'{bad[0]}' is neither 'off' nor a number of microseconds."
                           if bad else "lists nothing."),
                        "Example: --queue-delays-us off,0,100,2000")
    return [x if x == "off" else int(x) for x in items]


def search_from_args(args) -> dict:
    """tune's search options (api.tune_settings' keywords) from the flags (None: not given)."""
    return dict(objective=args.objective, p99_budget_ms=args.p99_budget_ms,
                memory_budget_gb=args.memory_budget_gb,
                concurrency=int_list(args.concurrency, "--concurrency", None),
                batch_size=args.batch_size,
                instances=int_list(args.instances, "--instances", None),
                threads=int_list(args.threads, "--threads", None),
                queue_delays_us=_delays(args.queue_delays_us),
                max_batch_sizes=int_list(args.max_batch_sizes, "--max-batch-sizes", None),
                preferred=args.preferred, strategy=args.strategy, protocol=args.protocol,
                measurement_interval=args.measurement_interval, stability=args.stability)


def run(args) -> int:
    from .. import api

    if args.resume and args.results and Path(args.resume) != Path(args.results):
        raise SpecError(f"--resume {args.resume} and --results {args.results} name two"
                        " directories.", "--resume DIR reads and goes on writing DIR: drop"
                        " --results.")
    command = ["gen-repo", *sys.argv[1:]] if sys.argv and "gen-repo" in sys.argv[0] else \
        ["gen-repo", "tune"]
    outcome = api.tune(args.repo, models=args.models, out=args.out,
                       results=args.resume or args.results or "tune_results",
                       resume=bool(args.resume), force=args.force,
                       budget_minutes=args.budget_minutes, backend_dirs=args.backend_directory,
                       progress=None, command=command, **search_from_args(args))
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
