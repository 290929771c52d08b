"""gen-repo bench: perf_analyzer sweeps of the served variants, the in-process ceiling, a report."""

from __future__ import annotations

import sys
from pathlib import Path

from ..repository.selection import select_models
from .common import add_backend_dir_arg, add_repo_args, int_list
from .parser import DefaultsHelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark the served variants with perf_analyzer",
        description="Serve every variant of the repository (bench starts its own embedded"
                    " tritonserver on a private copy, or measures a running server with --url),"
                    " drive perf_analyzer through concurrency x batch size x instance count,"
                    " measure the same artifacts in-process as the ceiling, and write"
                    " results.json, the raw CSVs, and report.md/report.html with plots. Ctrl-C"
                    " keeps what was measured. Exit code 3 when some points or models failed,"
                    " 130 when interrupted.",
        formatter_class=DefaultsHelpFormatter)
    add_repo_args(p)
    p.add_argument("--quick", action="store_true",
                   help="a first look in under a minute: concurrency 1,8, batch 1, 1 instance,"
                        " 1 s windows, a short ceiling")
    p.add_argument("--concurrency", default=None, metavar="LIST",
                   help="concurrency levels (default 1,2,4,8; --quick 1,8)")
    p.add_argument("--batch-size", default=None, metavar="LIST",
                   help="request batch sizes (default 1)")
    p.add_argument("--instances", default=None, metavar="LIST",
                   help="instance counts per variant, set by rewriting instance_group in the"
                        " private copy and reloading (default 1,2; --quick 1)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--out", default="bench_results", metavar="DIR",
                   help="where results.json, csv/, plots/ and report.md/html go")
    p.add_argument("--url", default=None, metavar="HOST:PORT",
                   help="measure a running server at this endpoint of --protocol instead of"
                        " starting one (no instance scaling)")
    p.add_argument("--measurement-interval", type=int, default=None, metavar="MS",
                   help="perf_analyzer time window (default 2000; --quick 1000)")
    p.add_argument("--request-count", type=int, default=None, metavar="N",
                   help="use count windows of at least N requests instead of time windows")
    p.add_argument("--stability", type=float, default=None, metavar="PCT",
                   help="the last 3 windows must agree within PCT%% (default 15; --quick 50)")
    p.add_argument("--ceiling-seconds", type=float, default=None, metavar="S",
                   help="in-process ceiling: seconds per setting (default 3; --quick 0.5)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the in-process ceiling")
    p.add_argument("--no-floor", action="store_true",
                   help="do not serve the Python backend's floor (an identity model, no torch)"
                        " beside the variants")
    p.add_argument("--python-ts", choices=("auto", "yes", "no"), default="auto",
                   help="serve a libtorch model's model.pt through the Python backend too (auto:"
                        " when the server has no PyTorch backend)")
    add_backend_dir_arg(p)
    p.add_argument("--report-only", default=None, metavar="RESULTS_JSON",
                   help="only (re)write the report from an earlier results.json")
    p.set_defaults(run=run)


def options_from_args(args) -> dict:
    """api.bench_options' keywords from the flags."""
    return dict(out=args.out, quick=args.quick,
                concurrency=int_list(args.concurrency, "--concurrency", None),
                batch_sizes=int_list(args.batch_size, "--batch-size", None),
                instances=int_list(args.instances, "--instances", None), protocol=args.protocol,
                url=args.url, measurement_interval=args.measurement_interval,
                request_count=args.request_count, stability=args.stability,
                ceiling_seconds=args.ceiling_seconds, ceiling=not args.no_ceiling,
                floor=not args.no_floor, python_ts=args.python_ts,
                backend_dirs=args.backend_directory)


def run(args) -> int:
    from .. import api
    from ..bench.analysis import verdict
    from ..bench.report import write_report
    from ..bench.results import Results

    if args.report_only:
        results = Results.load(args.report_only)
        md, page = write_report(results, Path(args.report_only).resolve().parent)
        print("\n".join(verdict(results)))
        print(f"report: {md}\n        {page}")
        return 0
    command = ["gen-repo", *sys.argv[1:]] if sys.argv and "gen-repo" in sys.argv[0] else \
        ["gen-repo", "bench"]
    outcome = api.bench(args.repo, models=args.models, progress=None, command=command,
                        **options_from_args(args))
    lines = verdict(outcome.results)
    print("\n".join(lines) if lines else "nothing was measured")
    print(f"results: {outcome.results_path}\nreport:  {outcome.report_md}\n"
          f"         {outcome.report_html}")
    if outcome.interrupted:
        raise KeyboardInterrupt
    return outcome.exit_code
