"""One error hierarchy. The library only raises; ``generator.cli`` prints and picks exit codes.

Every error carries a one-paragraph ``message`` (what went wrong, naming the field and value) and a
``tip`` (what to do about it). Subclasses also subclass the matching builtin so callers that catch
``TimeoutError`` or ``ValueError`` keep working.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable


class GenRepoError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = 1

    def __init__(self, message: str, tip: str | None = None):
        super().__init__(message)
        self.message = message
        self.tip = tip

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class SpecError(GenRepoError, ValueError):
    """A flag, spec-file key or value is invalid."""

    exit_code = 2


class SourceError(GenRepoError, ImportError):
    """The model source could not be imported or constructed."""


class ExportError(GenRepoError, RuntimeError):
    """A variant could not be exported (trace, script, package)."""


class ParityError(GenRepoError, AssertionError):
    """An artifact does not answer like the eager model."""


class RepositoryError(GenRepoError, OSError):
    """The output repository is missing, empty, or would be overwritten."""


class ServerError(GenRepoError, RuntimeError):
    """The inference server could not be started or talked to."""


class ServerTimeoutError(ServerError, TimeoutError):
    """The server did not become ready in time."""


class PortInUseError(ServerError, OSError):
    """A port the server needs is already taken."""


class ToolError(GenRepoError, FileNotFoundError):
    """An external tool (perf_analyzer, docker engine, library) is missing or failed."""


class VerifyError(GenRepoError, AssertionError):
    """Served answers differ from the reference."""


class BudgetError(GenRepoError, ValueError):
    """No measured config meets a budget (p99 latency, memory, time)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file, to quote in an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
