"""gen-repo pack-env: pack a Python environment (torch, numpy, ...) into Python-backend models."""

from __future__ import annotations


from .. import table
from ..errors import SpecError
from ..repository.s3 import is_s3_url
from ..status import PACKED
from ..repository.selection import select_models
from .common import add_repo_args
from .parser import DefaultsHelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pack-env", help="pack a Python environment into the Python-backend models",
        description="Build a self-contained Python environment (by default torch, torchvision"
                    " and numpy at the versions each model was built with) inside a container of"
                    " the image that will serve, put it into each Python-backend model directory"
                    " and set EXECUTION_ENV_PATH in its config.pbtxt, so an image without torch"
                    " (the stock NGC tritonserver image) serves those models. Environments are"
                    " cached under ~/.cache/gen-repo/envs, keyed by image and requirements."
                    " Needs a docker engine.",
        formatter_class=DefaultsHelpFormatter)
    add_repo_args(p)
    p.add_argument("--image", default=None, metavar="IMAGE",
                   help="required: the image that will serve the models (e.g."
                        " nvcr.io/nvidia/tritonserver:24.12-py3): its python3, whose version its"
                        " Python-backend stub matches, is copied into the environment")
    p.add_argument("--requirement", action="append", default=[], metavar="REQ",
                   help="a package to install instead of the recorded torch/torchvision/numpy"
                        " versions; repeatable (e.g. --requirement torch==2.15.0"
                        " --requirement 'numpy<2')")
    p.add_argument("--wheels", default=None, metavar="DIR",
                   help="a directory of wheels pip may use (mounted read-only, --find-links)")
    p.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                   help="extra pip install argument, e.g. --pip-arg=--index-url=URL; repeatable")
    p.add_argument("--format", dest="fmt", default="tar.gz", choices=("tar.gz", "dir"),
                   help="tar.gz: one file the server extracts at load; dir: unpacked in the model"
                        " (loads faster, many files)")
    p.add_argument("--rebuild", action="store_true",
                   help="build the environment again even when it is cached")
    p.add_argument("--remove", action="store_true",
                   help="remove the packed environment and the config parameter instead")
    p.add_argument("--pull", default="missing", choices=("missing", "never"),
                   help="pull the image when the engine lacks it, or never")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..ship.packenv import PackOptions, human, pack_models, remove_env

    if is_s3_url(args.repo):
        raise SpecError("pack-env writes into the model directories, so --repo must be local.",
                        "Run pack-env on the local repository, then gen-repo push it.")
    models = select_models(args.repo, args.models)
    if args.remove:
        rows = [(m.name, "removed" if remove_env(m) else "had none") for m in models]
        print(table.format_table(("MODEL", "ENVIRONMENT"), rows), flush=True)
        return 0
    if not args.image:
        raise SpecError("pack-env needs --image: the image that will serve the models (the"
                        " environment copies its python3, which its Python-backend stub matches).",
                        "Example: --image nvcr.io/nvidia/tritonserver:24.12-py3 (its Python 3.12"
                        " suits torch 2.15), or the image you pass to serve --docker.")
    options = PackOptions(image=args.image, requirements=tuple(args.requirement),
                          wheels=args.wheels, pip_args=tuple(args.pip_arg), fmt=args.fmt,
                          rebuild=args.rebuild, pull=args.pull)
    results = pack_models(models, options)
    rows = [(r.model, r.state, r.python or "-", human(r.size) if r.size else "-",
             " ".join(r.requirements) or r.reason) for r in results]
    print(table.format_table(("MODEL", "STATUS", "PYTHON", "SIZE", "REQUIREMENTS / REASON"), rows),
          flush=True)
    if not any(r.state == PACKED for r in results):
        raise SpecError(f"no model of {args.repo} runs on the Python backend, so none needs an"
                        " environment.", "Pick Python-backend models with --models.")
    return 0
