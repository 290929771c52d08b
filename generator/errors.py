"""One error hierarchy. The library raises; ``generator.cli`` prints what ends a command, with the
error's ``exit_code`` (a command that goes on past one model's failure prints that one itself).

Every error carries a one-paragraph ``message`` (what went wrong, naming the field and value) and a
``tip`` (what to do about it). Subclasses also subclass the matching builtin so callers that catch
``TimeoutError`` or ``ValueError`` keep working.
"""

from __future__ import annotations

import difflib
import errno
import re
from pathlib import Path, PurePath
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


# What the operating system said, as an ERROR/TIP pair: a full disk or a read-only folder is the
# machine's state, not a gen-repo bug.
_OS_ERRORS = {
    "EROFS": ("the file system is read-only", "Write somewhere writable (e.g. --out DIR)."),
    "EACCES": ("permission denied", "Use a folder you may write to (--out DIR), or fix the"
               " folder's permissions."),
    "EPERM": ("the operation is not permitted", "Use a folder you may write to (--out DIR)."),
    "ENOSPC": ("no space is left on the device", "Free space there or write elsewhere (--out"
               " DIR): a build needs about the model's size per variant, twice while staging."),
    "EDQUOT": ("the disk quota is exceeded", "Free space within your quota or write elsewhere."),
    "EFBIG": ("a file grew past this process's file-size limit (ulimit -f)", "Raise the limit"
              " (ulimit -f unlimited) and run again."),
    "ENAMETOOLONG": ("a file name is too long", "Use a shorter --name (each model directory is"
                     " <name>_<variant>) or a shorter --out path."),
    "EXDEV": ("a rename crossed two file systems", "Write the repository within one file"
              " system (--out DIR)."),
}
# torch.save reports a failed write from C++ as a RuntimeError, without an errno.
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing file", "file write failed")


def os_error(e: BaseException) -> GenRepoError | None:
    """The machine-state error ``e`` is (an OSError by its errno, or torch.save's failed write),
    as one ERROR/TIP; None for any other exception."""
    if isinstance(e, OSError) and e.errno is not None:
        name = errno.errorcode.get(e.errno, "")
        if name in _OS_ERRORS:
            what, tip = _OS_ERRORS[name]
            where = f" {e.filename}" if e.filename else " a file"
            return GenRepoError(f"could not write{where}: {what} ({e.strerror}).", tip)
    if isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE_FAILED):
        first = str(e).strip().splitlines()[0][:200]
        return GenRepoError(f"torch.save could not write a file ({first}): the disk is full, or"
                            " a file-size limit (ulimit -f) was reached.",
                            "Free space or raise the limit, or write elsewhere (--out DIR).")
    return None


_TYPED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:")
_SOURCE = re.compile(r'File "([^"]+)", line (\d+)')


def what_failed(message: str) -> str:
    """The line of an error message that says what failed. TorchScript's interpreter puts it
    last, after "Traceback of TorchScript" and the frames; its compiler first -- often a bare
    "...:" or "Arguments for call are not valid." before the source it points at -- so the
    first place in the model's source it names follows as "(at file:line)"."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    if any(ln.startswith("Traceback of TorchScript") for ln in lines):
        typed = [ln for ln in lines if _TYPED.match(ln)]
        return (typed or lines)[-1]
    line = lines[0].rstrip(":").rstrip()
    sites = [m for m in _SOURCE.finditer(message) if "/torch/" not in m.group(1)]
    if sites and len(lines) > 1:
        line += f" (at {PurePath(sites[0].group(1)).name}:{sites[0].group(2)})"
    return line


def error_line(type_name: str, message: str, limit: int = 300) -> str:
    """``Type: what failed`` in one line (the type once, also where the line names its own)."""
    line = what_failed(message)[:limit]
    return line if _TYPED.match(line) else f"{type_name}: {line}" if line else type_name


def cause_line(e: BaseException, limit: int = 200) -> str:
    """``Type: first line`` of what raised ``e`` (the exception it wraps, else ``e`` itself)."""
    cause = e.__cause__ or e
    first = (str(cause).strip().splitlines() or [""])[0][:limit]
    return f"{type(cause).__name__}: {first}"
