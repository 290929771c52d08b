"""Offline parity: each artifact loaded in a fresh process and compared with the eager model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .compare import Comparison, compare
from .samples import load_npz, save_npz
from .spec import ModelSpec
from .variants.base import RUNTIME_MODEL

TIMEOUT_S = 600


@dataclass
class CheckResult:
    ok: bool
    detail: str  # one line for the summary
    comparisons: dict[str, Comparison]  # case name -> comparison
    max_abs: float = 0.0
    tip: str | None = None
    notes: list[str] = field(default_factory=list)  # what the runtime logged while loading

LOAD_TIP = ("The artifact must load where your source code is not importable: keep model code"
            " in modules torch.package can intern, and install third-party packages on the"
            " server. Run with -v for details.")
VALUES_TIP = ("Loosen --atol/--rtol if the error is rounding; otherwise the export is wrong for"
              " this model (try --script).")


def check_artifact(spec: ModelSpec, version_dir: Path, load_params: dict[str, str], cases,
                   references, block: list[str], python_backend: bool) -> CheckResult:
    """Run the artifact in a fresh ``python -I`` process on every case; compare with references."""
    runtime = version_dir / "model.py" if python_backend else RUNTIME_MODEL
    with tempfile.TemporaryDirectory(prefix="gen-repo-check-") as tmp:
        tmp = Path(tmp)
        job_cases = []
        for case in cases:
            inp = tmp / f"{case.name}_in.npz"
            save_npz(inp, case.inputs)
            job_cases.append({"inputs": str(inp), "out": str(tmp / f"{case.name}_out.npz")})
        job = {"runtime": str(runtime), "version_dir": str(version_dir), "params": load_params,
               "block": block, "cases": job_cases, "error": str(tmp / "error.json"),
               "log": str(tmp / "log.txt"),
               "input_names": [t.name for t in spec.inputs],
               "output_names": [t.name for t in spec.outputs], "threads": os.cpu_count() or 1}
        (tmp / "job.json").write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        try:
            proc = subprocess.run([sys.executable, "-I", "-B", "-m", "generator.check_worker",
                                   str(tmp / "job.json")], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return CheckResult(False, f"loading/running the artifact took over {TIMEOUT_S} s", {},
                               tip=LOAD_TIP)
        if proc.returncode != 0:
            err_file = tmp / "error.json"
            if err_file.is_file():
                err = json.loads(err_file.read_text())
                msg = f"{err['type']}: {err['message'].strip().splitlines()[0][:400]}" \
                    if err["message"].strip() else err["type"]
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                msg = f"worker exited {proc.returncode}: {' '.join(tail)[:400]}"
            return CheckResult(False, f"fails to load/run in a fresh process: {msg}", {},
                               tip=LOAD_TIP)
        log = tmp / "log.txt"
        notes = [ln.removeprefix("gen-repo: ") for ln in log.read_text().splitlines()
                 if ln.strip()] if log.is_file() else []
        comparisons = {}
        for case, jc in zip(cases, job_cases):
            comparisons[case.name] = compare(load_npz(Path(jc["out"])), references[case.name],
                                             spec.atol, spec.rtol)
    bad = {c: r for c, r in comparisons.items() if not r.ok}
    worst = max((r.max_abs for r in comparisons.values()), default=0.0)
    if bad:
        detail = "; ".join(f"case {c}: {r.summary()}" for c, r in bad.items())
        return CheckResult(False, f"differs from eager — {detail}", comparisons, worst,
                           VALUES_TIP, notes)
    return CheckResult(True, f"matches eager on {len(cases)} inputs (max abs err {worst:.1e})",
                       comparisons, worst, notes=notes)
