"""The command line: ``gen-repo build | serve | verify | bench | tune | demo | ...``.

``main(argv) -> int`` is callable from tests. An error that ends a command (a ``GenRepoError``,
Ctrl-C, a full disk, a bug) becomes one ERROR/TIP message and its exit code here. A command that
goes on past one model's failure reports that failure itself: build and tune print it as ERROR,
and the exit code is their outcome's ``exit_code`` (build/pipeline.py, bench/runner.py,
tune/runner.py) or gen-repo serve's (3 when a model failed to load). Exit codes: 0 success;
1 failure; 2 bad usage or spec; 3 partial success (some variants or models failed, the others
were written / are fine); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from . import __version__, progress
from .commands import bench, build, demo, deploy, pack_env, push, seal, serve, tune, verify
from .commands.parser import command_parser
from .errors import GenRepoError, os_error

EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


COMMANDS = [build, serve, verify, bench, tune, demo, push, deploy, pack_env, seal]


def make_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        COMMANDS,
        description="Turn a PyTorch model into a Triton model repository (TorchScript on the"
                    " PyTorch backend + the eager model on the Python backend), serve it, verify"
                    " it over HTTP and gRPC, benchmark the variants, and tune the fastest"
                    " correct deployment.")
    parser.add_argument("--version", action="version", version=f"gen-repo {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    progress.set_quiet(args.quiet)
    try:
        return int(args.run(args) or 0)
    except GenRepoError as e:
        if args.verbose:
            traceback.print_exc()
        print(f"ERROR: {e.message}", file=sys.stderr)
        if e.tip:
            print(f"TIP: {e.tip}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ERROR: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: say so plainly, keep the traceback behind -v
        if args.verbose:
            traceback.print_exc()
        state = os_error(e)  # unless it is the machine's state (a full disk, a read-only folder)
        if state is not None:
            # objects the failed write left half-closed (a zip archive) complain again when
            # they are collected: not news
            sys.unraisablehook = lambda unraisable: None
            print(f"ERROR: {state.message}\nTIP: {state.tip}", file=sys.stderr)
            return EXIT_FAIL
        print(f"ERROR: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("TIP: this is a gen-repo bug; rerun with -v for the traceback and report it.",
              file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
