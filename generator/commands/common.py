"""Helpers shared by the commands: the flags several commands take (the repository and its
models, lists of integers, perf_analyzer's windows)."""

from __future__ import annotations

from ..errors import SpecError
from ..spec import DEFAULT_REPO
from ..serve.triton_install import BACKEND_DIRS_ENV, SYSTEM_BACKENDS


def add_backend_dir_arg(p) -> None:
    p.add_argument("--backend-directory", action="append", default=None, metavar="DIR",
                   help="extra Triton backends for the embedded server (e.g. a pytorch backend);"
                        f" repeatable (default: the directories in ${BACKEND_DIRS_ENV}, separated"
                        f" by ':'; unset: {SYSTEM_BACKENDS} when it holds pytorch/)")


def add_repo_args(p) -> None:
    p.add_argument("--repo", default=DEFAULT_REPO, metavar="DIR|S3_URL",
                   help="model repository written by gen-repo build, or one gen-repo push put in"
                        " S3 (s3://HOST:PORT/BUCKET/PATH, or s3://BUCKET/PATH on AWS)")
    p.add_argument("--models", default=None, metavar="LIST",
                   help="comma-separated model directories (e.g. resnet18_python) or model names"
                        " (all their variants); default: every model in the repository")


def measurement_from_args(args, meas):
    """perf_analyzer's windows (a bench.perf_analyzer.Measurement) with the flags a command
    has among --request-count, --measurement-interval and --stability applied, checked."""
    return meas.with_windows(getattr(args, "request_count", None),
                             getattr(args, "measurement_interval", None),
                             getattr(args, "stability", None))


def int_list(text: str | None, flag: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """A flag's comma-separated positive integers, without repeats (``default`` when absent)."""
    if text is None:
        return default
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise SpecError(f"{flag} '{text}' is not a comma-separated list of integers.",
                        f"Example: {flag} 1,2,4,8") from e
    if not values or any(v < 1 for v in values):
        raise SpecError(f"{flag} '{text}' needs positive integers.", f"Example: {flag} 1,2,4,8")
    return tuple(dict.fromkeys(values))
