"""Compare outputs with a reference: by name, then dtype, then shape, then tolerance.

Used by the offline parity check (build) and by served parity (verify), so both apply one rule.
All mismatches are reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mismatch:
    output: str
    problem: str  # missing | extra | dtype | shape | values
    detail: str
    max_abs: float = 0.0
    max_rel: float = 0.0

    def __str__(self) -> str:
        return f"{self.output}: {self.problem} — {self.detail}"


@dataclass(frozen=True)
class Comparison:
    mismatches: tuple[Mismatch, ...]
    max_abs: float  # largest abs error over all outputs compared by value

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def structural(self) -> bool:
        """A name/dtype/shape mismatch (fails a build regardless of tolerance)."""
        return any(m.problem != "values" for m in self.mismatches)

    def summary(self) -> str:
        if self.ok:
            return f"OK (max abs err {self.max_abs:.2e})"
        return "; ".join(str(m) for m in self.mismatches)


def compare(actual: dict[str, np.ndarray], reference: dict[str, np.ndarray], atol: float,
            rtol: float) -> Comparison:
    problems: list[Mismatch] = []
    worst = 0.0
    for name in reference:
        if name not in actual:
            problems.append(Mismatch(name, "missing", "output not returned"))
    for name in actual:
        if name not in reference:
            problems.append(Mismatch(name, "extra", "output not in the reference"))
    for name, ref in reference.items():
        got = actual.get(name)
        if got is None:
            continue
        got = np.asarray(got)
        if got.dtype != ref.dtype:
            problems.append(Mismatch(name, "dtype", f"{got.dtype} vs reference {ref.dtype}"))
            continue
        if got.shape != ref.shape:
            problems.append(Mismatch(name, "shape", f"{list(got.shape)} vs reference"
                                                    f" {list(ref.shape)}"))
            continue
        if ref.dtype == np.bool_ or np.issubdtype(ref.dtype, np.integer):
            diff = int(np.count_nonzero(got != ref))
            if diff:
                problems.append(Mismatch(name, "values", f"{diff} of {ref.size} elements differ",
                                         float(diff), 0.0))
            continue
        g = got.astype(np.float64)
        r = ref.astype(np.float64)
        if not np.array_equal(np.isnan(g), np.isnan(r)):
            problems.append(Mismatch(name, "values", "NaN in different places"))
            continue
        finite = ~np.isnan(r)
        abs_err = np.abs(g - r)[finite]
        max_abs = float(abs_err.max()) if abs_err.size else 0.0
        rel = abs_err / np.maximum(np.abs(r[finite]), 1e-12)
        max_rel = float(rel.max()) if rel.size else 0.0
        worst = max(worst, max_abs)
        bad = abs_err > atol + rtol * np.abs(r[finite])
        if bad.any():
            problems.append(Mismatch(
                name, "values",
                f"{int(bad.sum())} of {ref.size} elements outside atol={atol:g} rtol={rtol:g};"
                f" max abs err {max_abs:.3e}, max rel err {max_rel:.3e}", max_abs, max_rel))
    return Comparison(tuple(problems), worst)
