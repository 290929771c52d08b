"""gen-repo demo: the whole story on one model — build → serve → verify → bench → the verdict.

What ``scripts/demo.sh`` runs on a fresh machine. Each step is the real command (same code, same
output); the server of the verify step is the embedded one, started and stopped here.
"""

from __future__ import annotations


from .. import progress
from . import bench, build, verify
from .common import add_backend_dir_arg
from .parser import command_parser
from ..serve.ports import Ports, free_ports, port_is_free
from ..serve.server import EmbeddedServer
from ..serve.triton_install import BACKEND_DIRS_ENV
from ..spec import DEFAULT_REPO, DEFAULT_SOURCE
from ..status import READY
from .parser import DefaultsHelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="build, serve, verify and benchmark the default model in one go",
        description="Run the main job end to end: gen-repo build (default model: "
                    f"{DEFAULT_SOURCE}), serve it on the embedded tritonserver, verify every"
                    " servable variant over HTTP and gRPC, then gen-repo bench, and print where"
                    " the report is and its verdict.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("source", nargs="?", default=DEFAULT_SOURCE, help="model source")
    p.add_argument("--repo", default=DEFAULT_REPO, help="repository to (re)build")
    p.add_argument("--bench-out", default="bench_results", help="bench output directory")
    p.add_argument("--full", action="store_true",
                   help="the full bench (a few minutes) instead of --quick (under a minute)")
    add_backend_dir_arg(p)
    p.set_defaults(run=run)


def _ports() -> Ports:
    default = Ports()
    if all(port_is_free(p) for _, p in default.items()):
        return default
    return Ports(*free_ports(3))


def run(args) -> int:
    from .build import spec_from_args
    from ..repository.selection import select_models
    from .serve import print_statuses

    parser = command_parser([build, verify, bench])
    quiet = ["-q"] if args.quiet else []

    progress.info("step 1/3: build")
    step = parser.parse_args([*quiet, "build", args.source, "--out", args.repo, "--force"])
    name = spec_from_args(step).name  # the rest of the demo is about this model only
    build_code = step.run(step)
    if build_code not in (0, 3):
        return build_code

    progress.info("step 2/3: serve on the embedded tritonserver and verify over HTTP and gRPC")
    ports = _ports()
    server = EmbeddedServer(args.repo, ports, backend_dirs=args.backend_directory)
    if server.missing_backend_reason("pytorch") is None:
        progress.info("a PyTorch backend is available: the libtorch variant is served, verified"
                      " and benchmarked for real")
    else:
        progress.info(f"no PyTorch backend (set {BACKEND_DIRS_ENV} or pass --backend-directory):"
                      " the libtorch variant is skipped, and bench measures its TorchScript"
                      " through the Python backend (python-ts) instead")
    with server:
        statuses = server.load(select_models(args.repo, name))
        print_statuses(statuses)
        print(f"server log: {server.log_path}", flush=True)
        if any(s.state == READY for s in statuses):
            step = parser.parse_args([*quiet, "verify", "--repo", args.repo, "--models", name,
                                      "--http-url", server.http_url, "--grpc-url",
                                      server.grpc_url])
            step.run(step)  # a FAIL raises VerifyError: the demo stops with its message
    progress.info("step 3/3: bench (perf_analyzer; bench starts its own server)")
    backends = [a for d in args.backend_directory or () for a in ("--backend-directory", d)]
    step = parser.parse_args([*quiet, "bench", "--repo", args.repo, "--models", name,
                              "--out", args.bench_out,
                              *backends, *([] if args.full else ["--quick"])])
    bench_code = step.run(step)
    return max(build_code, bench_code)
