"""Progress output for long steps: one line when a step starts, one when it ends, with timings.

Everything goes to stderr so that stdout stays for results (tables, paths).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

_quiet = False  # no progress lines (gen-repo -q)
_silent = False  # nothing at all, warnings included (the Python API unless asked)


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = value


@contextmanager
def shown(progress: bool | None):
    """Within the block: progress lines and warnings only when ``progress`` (the Python API's
    switch; None: as they are); the previous setting is back after it."""
    global _quiet, _silent
    before = _quiet, _silent
    if progress is not None:
        _quiet, _silent = not progress, not progress
    try:
        yield
    finally:
        _quiet, _silent = before


def info(msg: str) -> None:
    if not _quiet:
        print(f"[gen-repo] {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    if not _silent:
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)


@contextmanager
def step(label: str):
    """Print `label ...` then `label: done in 1.2 s` (or `failed after`)."""
    info(f"{label} ...")
    start = time.perf_counter()
    timing = {"seconds": 0.0}
    try:
        yield timing
    except BaseException:
        timing["seconds"] = time.perf_counter() - start
        info(f"{label}: failed after {timing['seconds']:.1f} s")
        raise
    timing["seconds"] = time.perf_counter() - start
    info(f"{label}: done in {timing['seconds']:.1f} s")


def duration(seconds: float) -> str:
    """``42 s`` or ``3 min 05 s``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"
