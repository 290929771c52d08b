"""The server logs gen-repo writes: capped in size, and the log folder kept to its newest files.

A server under attack or in a loop can write a log at ~13 MB/s (Triton prints one line per failed
accept() when it runs out of descriptors): ``CappedLog`` copies the server's output into its log
file and, past ``MAX_BYTES``, moves it to ``<log>.1`` (replacing an older one) and starts again,
so one log never holds more than twice the cap on disk.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

MAX_BYTES = 64 << 20
KEEP_LOGS = 50  # server logs kept in a log folder (the newest)


class CappedLog:
    """Copies a pipe (the server's stdout and stderr) into ``path`` in a thread, rotating it at
    ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES):
        self.path, self.max_bytes = Path(path), max_bytes
        self._thread: threading.Thread | None = None

    def follow(self, pipe) -> None:
        self._thread = threading.Thread(target=self._copy, args=(pipe,), name="server-log",
                                        daemon=True)
        self._thread.start()

    def _copy(self, pipe) -> None:
        out = open(self.path, "ab")
        size = out.tell()
        try:
            for chunk in iter(lambda: pipe.read1(1 << 16), b""):
                if size + len(chunk) > self.max_bytes:
                    out.close()
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                    out, size = open(self.path, "ab"), 0
                out.write(chunk)
                out.flush()
                size += len(chunk)
        except (OSError, ValueError):  # the pipe or the file went away: nothing more to copy
            pass
        finally:
            out.close()
            pipe.close()

    def wait(self, timeout: float) -> None:
        """Wait until everything the server wrote is in the file (its pipe closed)."""
        if self._thread is not None:
            self._thread.join(timeout)


def prune(folder: Path, keep: int = KEEP_LOGS, pattern: str = "tritonserver-*.log*") -> None:
    """Delete all but the ``keep`` newest logs matching ``pattern`` in ``folder``."""
    try:
        logs = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in logs[keep:]:
        try:
            old.unlink()
        except OSError:
            pass
