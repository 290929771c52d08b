"""Plain-text tables for command output: aligned columns, the last one left ragged."""

from __future__ import annotations

from typing import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column (free text) is not padded."""
    table = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    return "\n".join("  ".join([c.ljust(w) for c, w in zip(r, widths)] + r[len(widths):]).rstrip()
                     for r in table)


# The old name, still used by build/pipeline.py and commands/serve.py.
