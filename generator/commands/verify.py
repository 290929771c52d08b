"""gen-repo verify: check a running server against the repository's specs and stored references."""

from __future__ import annotations

from .. import table
from ..errors import SpecError, VerifyError
from ..serve.verify import PROTOCOLS
from ..status import FAIL, OK, SKIPPED
from .common import add_repo_args
from .parser import DefaultsHelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify", help="verify a running server over HTTP and gRPC",
        description="For every model of the repository and both protocols: readiness, metadata"
                    " vs the spec, outputs vs the stored eager reference at several batch sizes,"
                    " and many concurrent requests each getting its own right answer. Start the"
                    " server first with gen-repo serve.",
        formatter_class=DefaultsHelpFormatter)
    add_repo_args(p)
    p.add_argument("--http-url", default="127.0.0.1:8000", metavar="HOST:PORT")
    p.add_argument("--grpc-url", default="127.0.0.1:8001", metavar="HOST:PORT")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), metavar="LIST",
                   help="protocols to check: http, grpc or both")
    p.add_argument("--concurrency", type=int, default=32, metavar="N",
                   help="parallel requests in the concurrency check")
    p.add_argument("--requests", type=int, default=64, metavar="N",
                   help="requests in the concurrency check (0 skips it)")
    p.add_argument("--bad-requests", action="store_true",
                   help="also send malformed requests (wrong dtype, wrong shape, missing input,"
                        " oversize batch) and check each is refused and the model stays up")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="seconds per request")
    p.set_defaults(run=run)


def parse_protocols(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    bad = [p for p in chosen if p not in PROTOCOLS]
    if bad or not chosen:
        raise SpecError(f"--protocols '{text}' must list http and/or grpc.",
                        "Example: --protocols http,grpc")
    return chosen


def report_table(report) -> str:
    rows = [(r.model, r.protocol, r.status,
             "-" if r.max_abs is None else f"{r.max_abs:.1e}", r.detail) for r in report.results]
    lines = [table.format_table(("MODEL", "PROTOCOL", "STATUS", "MAX ERR", "DETAIL"), rows)]
    lines += [f"  note: {n}" for n in report.notes]
    counts = {s: sum(r.status == s for r in report.results) for s in (OK, FAIL, SKIPPED)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def run(args) -> int:
    from .. import api

    for flag in ("concurrency", "requests"):
        if getattr(args, flag) < 0 or (flag == "concurrency" and args.concurrency == 0):
            raise SpecError(f"--{flag} {getattr(args, flag)} is out of range.",
                            f"Pass a positive --{flag}.")
    report = api.verify(args.repo, models=args.models, http_url=args.http_url,
                        grpc_url=args.grpc_url, protocols=parse_protocols(args.protocols),
                        concurrency=args.concurrency, requests=args.requests,
                        bad_requests=args.bad_requests, timeout=args.timeout, progress=None)
    print(report_table(report), flush=True)
    if report.failures:
        names = ", ".join(f"{r.model} ({r.protocol})" for r in report.failures)
        raise VerifyError(f"{len(report.failures)} of {len(report.results)} checks FAILED:"
                          f" {names}.",
                          "Read the DETAIL column; the server log (path printed by gen-repo serve)"
                          " has the model's side of it.")
    if not report.ok:
        raise VerifyError("nothing was verified: every model was SKIPPED.",
                          "Serve the models on a server that can load them (libtorch models:"
                          " gen-repo serve --docker or --backend-directory).")
    return 0
