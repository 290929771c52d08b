"""The models of a repository, a folder or an S3 URL, as the commands and the Python API
choose them (--models / models=)."""

from __future__ import annotations

from ..errors import SpecError, did_you_mean
from .layout import BuiltModel, list_models
from .s3 import is_s3_url


def select_models(repo: str, names: str | None) -> list[BuiltModel]:
    """The repository's models, or those named by --models (directory name or model name)."""
    if is_s3_url(repo):
        from .s3 import S3Location, remote_models

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
