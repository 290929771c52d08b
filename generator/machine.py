"""Facts about the machine gen-repo runs on. Imports nothing heavy: the server, bench and tune
use it without pulling torch in."""

from __future__ import annotations

import os
from pathlib import Path


def cores() -> int:
    """CPU cores this process may run on: its affinity mask (a container's or taskset's cpuset),
    not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cache_dir() -> Path:
    """Where gen-repo keeps what it downloads, builds once and logs ($XDG_CACHE_HOME/gen-repo)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gen-repo"
