"""Facts about the machine gen-repo runs on. Imports nothing heavy: the server, bench and tune
use it without pulling torch in."""

from __future__ import annotations

import os


def cores() -> int:
    """CPU cores this process may run on: its affinity mask (a container's or taskset's cpuset),
    not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
