"""gen-repo serve: start a real tritonserver on a repository, load its models, serve to Ctrl-C."""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager

from .. import progress, table
from ..errors import ServerError, SpecError
from ..serve import control
from ..status import FAILED, READY
from ..serve.triton_install import BACKEND_DIRS_ENV
from .common import add_backend_dir_arg, add_repo_args
from .parser import DefaultsHelpFormatter


MAX_DEAD_STUBS = 8  # dead, unreaped Python-backend processes before the server starts again


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model repository with a real Triton server",
        description="Start tritonserver on the repository (embedded: the server bundled with"
                    " nvidia-pytriton, Python backend only; or --docker: the NGC container), load"
                    " the models one by one, print their status, and serve until Ctrl-C."
                    " Exit code 3 when some models FAILED to load (the others are served), 1 when"
                    " none is READY.",
        formatter_class=DefaultsHelpFormatter)
    add_repo_args(p)
    p.add_argument("--http-port", type=int, default=8000, metavar="PORT")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="PORT")
    p.add_argument("--metrics-port", type=int, default=8002, metavar="PORT")
    p.add_argument("--listen", default=control.LOOPBACK, metavar="ADDRESS",
                   help="address the server listens on: 127.0.0.1 = this machine only; 0.0.0.0"
                        " = every interface (other hosts can reach it: inference, health and"
                        " metadata are open to them, model control needs the key)")
    add_backend_dir_arg(p)
    p.add_argument("--log-file", default=None, metavar="FILE",
                   help="server log (default: ~/.cache/gen-repo/logs/tritonserver-*.log)")
    p.add_argument("--max-dead-stubs", type=int, default=MAX_DEAD_STUBS, metavar="N",
                   help="start the server again when more than N of its Python-backend"
                        " processes died (Triton 24.10 never reaps them, and each keeps its"
                        " model instance's memory); 0: never")
    p.add_argument("--start-timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for the server to come up")
    d = p.add_argument_group("docker (the NGC tritonserver container)")
    d.add_argument("--docker", action="store_true", help="serve with the container instead")
    d.add_argument("--image", default=None, metavar="IMAGE",
                   help="container image (default: nvcr.io/nvidia/tritonserver:24.10-py3)")
    d.add_argument("--gpus", default=None, metavar="all|0,1", help="GPUs for the container")
    d.add_argument("--shm-size", default="1g", metavar="SIZE", help="container /dev/shm size")
    d.add_argument("--docker-network", default="host", choices=("host", "bridge"),
                   help="host: the server binds the host's ports; bridge: ports are published")
    d.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the container; repeatable")
    d.add_argument("--pull", default="missing", choices=("missing", "never"),
                   help="pull the image when the engine lacks it, or never (local images only)")
    p.set_defaults(run=run)


def docker_options(args):
    """The DockerOptions of --docker and its flags (None without --docker)."""
    if not args.docker:
        for flag in ("image", "gpus", "env"):
            if getattr(args, flag):
                raise SpecError(f"--{flag} applies to --docker only.",
                                f"Add --docker, or drop --{flag}.")
        return None
    from ..serve.docker_server import DEFAULT_IMAGE, DockerOptions

    if args.backend_directory:
        raise SpecError("--backend-directory applies to the embedded server, not --docker.",
                        "The NGC image has its backends; drop --backend-directory.")
    return DockerOptions(image=args.image or DEFAULT_IMAGE, gpus=args.gpus,
                         shm_size=args.shm_size, network=args.docker_network,
                         env=tuple(args.env), pull=args.pull)


def status_table(statuses) -> str:
    return table.format_table(("MODEL", "BACKEND", "STATUS", "REASON"),
                        [(s.name, s.backend, s.state, s.reason) for s in statuses])


def print_statuses(statuses) -> None:
    """The status table, then one ERROR/TIP paragraph for each model gen-repo can advise on."""
    print(status_table(statuses), flush=True)
    for s in statuses:
        if s.tip:
            label = "ERROR" if s.state == FAILED else "NOTE"
            print(f"{label}: {s.name} is {s.state}: {s.reason}.\nTIP: {s.tip}", file=sys.stderr,
                  flush=True)


def listening_note(server) -> str:
    """Where the server listens and who may control it."""
    where = ("this machine only" if server.listen == control.LOOPBACK else
             "every interface: other hosts can reach it" if server.listen in ("0.0.0.0", "::")
             else "that interface")
    return (f"listening on {server.listen} ({where}); inference, health and metadata are open,"
            f" model control ({', '.join(control.RESTRICTED_APIS)}) needs the header"
            f" {control.HEADER} with the key in {server.key_path} (readable by you only)")


@contextmanager
def sigterm_as_interrupt():
    """Let SIGTERM (systemd, timeout, docker stop) stop the server as cleanly as Ctrl-C does.

    The first SIGINT or SIGTERM raises KeyboardInterrupt wherever the command is (starting the
    server, loading models, serving); later ones are ignored, so that they cannot cut short the
    server's shutdown. An interrupt can land inside a library's import or constructor and
    surface as another exception: after a signal, whatever ends the block is the interrupt.
    """
    stopping = []

    def handler(signum, frame):
        if stopping:
            return
        stopping.append(signum)
        _quiet_interrupts_in_gevent_hub()
        # an object whose constructor the interrupt cut short fails again in __del__: not news
        sys.unraisablehook = lambda unraisable: None
        raise KeyboardInterrupt

    try:
        # (A shell's background job starts with SIGINT ignored: this lets kill -INT stop it too.)
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    except Exception as e:
        if stopping:
            raise KeyboardInterrupt from e
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _quiet_interrupts_in_gevent_hub() -> None:
    """tritonclient's HTTP client waits in gevent's hub; a KeyboardInterrupt raised there is
    passed on to the waiting code, but the hub prints it with a traceback first. Here it is no
    error (the command is stopping), so the hub passes it on without printing."""
    gevent = sys.modules.get("gevent")
    if gevent is not None:
        hub = gevent.get_hub()
        if KeyboardInterrupt not in hub.NOT_ERROR:
            hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)


RESTARTS, RESTART_WINDOW_S = 3, 300.0  # a server that dies more often than this stays down
# A server that has not answered its liveness check for HUNG_AFTER_S (asked every PROBE_EVERY_S)
# is hung (stopped, out of descriptors, deadlocked): it is killed and started again.
PROBE_EVERY_S, HUNG_AFTER_S = 10.0, 30.0


def _watch(server, max_dead_stubs: int = 0) -> None:
    """Serve until Ctrl-C: load again a model whose Python-backend stub died, and start the
    server again when it died or stopped answering (at most RESTARTS times within
    RESTART_WINDOW_S), and when more than ``max_dead_stubs`` of its Python-backend processes
    died unreaped (0: never). Whatever the server does, this loop reports it and goes on; only
    the restart limit ends it."""
    restarts: list[float] = []
    probed = answered = time.monotonic()
    while True:
        time.sleep(0.5)
        hung = False
        try:
            server.check_running()
            for status in server.revive():  # a Python-backend process died: reload
                print_statuses([status])
            dead = server.dead_stubs()
            if max_dead_stubs and dead > max_dead_stubs:
                progress.warn(f"{dead} Python-backend processes of the server died, and Triton"
                              " does not reap them (each keeps its model instance's memory):"
                              " starting the server again to free them (in-flight requests"
                              " fail)")
                print_statuses(server.restart())
                probed = answered = time.monotonic()
                continue
            now = time.monotonic()
            if now - probed >= PROBE_EVERY_S:
                probed = now
                if server.is_live(timeout=5.0):
                    answered = now
                elif now - answered >= HUNG_AFTER_S:
                    raise ServerError(f"it has not answered for {now - answered:.0f} s")
            continue
        except Exception as e:  # a dead, dying or hung server; any error of a reload
            if not isinstance(e, ServerError) and server.is_live():
                progress.warn(f"reloading a model failed ({_first_line(e)}); the server is"
                              " live, its other models keep serving")
                server.forget_dead_stubs()
                continue
            hung = server.exit_code() is None
            why = _first_line(e)
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(restarts) > RESTARTS:
            raise ServerError(f"{server.kind} stopped working ({why}).\nIt failed"
                              f" {len(restarts)} times within {RESTART_WINDOW_S:.0f} s, so gen-repo"
                              " serve stops.", f"Read its log at {server.log_path}.")
        progress.warn(f"{server.kind} stopped working ({why}). Starting it again and loading"
                      " its models (in-flight requests failed).")
        print_statuses(server.restart(hung=hung))
        probed = answered = time.monotonic()


def _first_line(e: BaseException) -> str:
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__
    return f"{type(e).__name__}: {first}" if not isinstance(e, ServerError) else first


def run(args) -> int:
    from .. import api

    if args.max_dead_stubs < 0:
        raise SpecError(f"--max-dead-stubs {args.max_dead_stubs} is negative.",
                        "Pass 0 to never restart for dead processes, or a count such as 8.")

    with sigterm_as_interrupt(), api.serve(
            args.repo, models=args.models, http_port=args.http_port, grpc_port=args.grpc_port,
            metrics_port=args.metrics_port, listen=args.listen,
            backend_dirs=args.backend_directory, log_file=args.log_file,
            start_timeout=args.start_timeout, docker=docker_options(args),
            progress=None) as serving:
        server, statuses = serving.server, list(serving.statuses.values())
        backends_tip = None
        if hasattr(server, "backends_note"):  # the embedded server: which backends it has
            line, backends_tip = server.backends_note(
                needs_pytorch=any(s.backend == "pytorch" for s in statuses))
            print(line, flush=True)
        print_statuses(statuses)
        if backends_tip:  # once, not per model
            print(f"TIP: {backends_tip}", file=sys.stderr, flush=True)
        if not serving.ready:
            hint = ("Python-backend models need torch inside the image (build one with"
                    " docker/Dockerfile and pass it with --image, or run gen-repo pack-env)"
                    if args.docker else
                    "libtorch models need --docker, --backend-directory or"
                    f" {BACKEND_DIRS_ENV}")
            raise ServerError(
                f"no model of {args.repo} is READY, so there is nothing to serve.",
                f"See the reasons above and the server log at {server.log_path}; {hint}.")
        failed = [s.name for s in statuses if s.state == FAILED]
        try:  # from the first line that says it serves, Ctrl-C is the way to stop: exit 0
            print(f"serving {sum(s.state == READY for s in statuses)} of {len(statuses)} models:"
                  f" HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}",
                  flush=True)
            print(listening_note(server), flush=True)
            print(f"server log: {server.log_path}", flush=True)
            print(f"check it: gen-repo verify --repo {args.repo} --http-url {server.http_url}"
                  f" --grpc-url {server.grpc_url}   (Ctrl-C stops the server)", flush=True)
            _watch(server, args.max_dead_stubs)
        except KeyboardInterrupt:
            progress.info("Ctrl-C: stopping the server")
    if failed:
        progress.warn(f"{len(failed)} model(s) failed to load: {', '.join(failed)}")
        return 3
    return 0
