"""Helpers shared by the commands that read a built repository (serve, verify)."""

from __future__ import annotations

from ..errors import SpecError, did_you_mean
from ..serve.triton_install import BACKEND_DIRS_ENV
from ..build.layout import BuiltModel, list_models
from ..ship.s3 import is_s3_url

DEFAULT_REPO = "model_repository"


def add_backend_dir_arg(p) -> None:
    p.add_argument("--backend-directory", action="append", default=None, metavar="DIR",
                   help="extra Triton backends for the embedded server (e.g. a pytorch backend);"
                        f" repeatable (default: the directories in ${BACKEND_DIRS_ENV}, separated"
                        " by ':')")


def add_repo_args(p) -> None:
    p.add_argument("--repo", default=DEFAULT_REPO, metavar="DIR|S3_URL",
                   help="model repository written by gen-repo build, or one gen-repo push put in"
                        " S3 (s3://HOST:PORT/BUCKET/PATH, or s3://BUCKET/PATH on AWS)")
    p.add_argument("--models", default=None, metavar="LIST",
                   help="comma-separated model directories (e.g. resnet18_python) or model names"
                        " (all their variants); default: every model in the repository")


def select_models(repo: str, names: str | None) -> list[BuiltModel]:
    """The repository's models, or those named by --models (directory name or model name)."""
    if is_s3_url(repo):
        from ..ship.s3 import S3Location, remote_models

        models = remote_models(S3Location.parse(repo))
    else:
        models = list_models(repo)
    if not names:
        return models
    chosen: list[BuiltModel] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        hits = [m for m in models
                if name in (m.name, (m.record.get("spec") or {}).get("name"))]
        if not hits:
            known = [m.name for m in models]
            raise SpecError(f"--models: '{name}' is not a model of {repo}"
                            f"{did_you_mean(name, known)}.",
                            f"Models there: {', '.join(known)}.")
        chosen += [m for m in hits if m not in chosen]
    return chosen
