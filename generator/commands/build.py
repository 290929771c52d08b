"""gen-repo build: a model -> a Triton model repository with each variant checked against eager."""

from __future__ import annotations

import argparse
import sys

from .. import spec as specmod
from ..status import OK


def add_parser(sub) -> None:
    p = sub.add_parser(
        "build", help="build a model repository from a PyTorch model",
        description="Export one model into side-by-side variants (TorchScript on the PyTorch"
                    " backend, the eager model on the Python backend), write each config.pbtxt,"
                    " and check every artifact against the eager model in a fresh process."
                    " Every flag is also a key of the --config spec file (TOML).")
    p.add_argument("source", nargs="?", default=None, metavar="SOURCE",
                   help=f"model source (default: {specmod.DEFAULT_SOURCE})")
    p.add_argument("--config", metavar="FILE", help="spec file (TOML) with any of the flags as keys")
    for opt in specmod.OPTIONS:
        if opt.key == "source":
            continue
        # Each flag's default is the spec's (argparse's is None: "not given on the command line")
        if opt.kind == "bool":
            p.add_argument(opt.flag, dest=opt.key, action=argparse.BooleanOptionalAction,
                           default=None, help=_with_default(opt.help, opt.default))
        elif opt.kind == "inputs":
            p.add_argument(opt.flag, dest=opt.key, action="append", default=None,
                           metavar=opt.metavar, help=opt.help)
        else:
            default = ",".join(map(str, opt.default)) if isinstance(opt.default, tuple) \
                else opt.default
            p.add_argument(opt.flag, dest=opt.key, default=None, metavar=opt.metavar,
                           help=_with_default(opt.help, default))
    p.set_defaults(run=run)


def _with_default(text: str, default) -> str:
    """The help text, with the spec's default unless there is none or the text gives it."""
    if default is None or default == "" or "(default" in text:
        return text
    return f"{text} (default: {default})"


def values_from_args(args) -> dict:
    """The spec options given on the command line, converted (errors name the flag)."""
    values = {}
    for opt in specmod.OPTIONS:
        raw = getattr(args, opt.key, None)
        if raw is not None:
            values[opt.key] = specmod.coerce(opt, raw, opt.flag)
    return values


def spec_from_args(args) -> specmod.ModelSpec:
    from .. import api

    return api.build_spec(args.config, **values_from_args(args))


def run(args) -> int:
    from .. import api

    values = values_from_args(args)
    report = api.build(values.pop("source", None), config=args.config, progress=None,
                       command=["gen-repo", *sys.argv[1:]], **values)
    print(report.table())
    for r in report.results:  # each refusal: one paragraph, what went wrong and what to do
        if r.status != OK:
            print(f"ERROR: variant {r.variant} refused: {r.detail}", file=sys.stderr)
            if r.tip:
                print(f"TIP: {r.tip}", file=sys.stderr)
    return report.exit_code
