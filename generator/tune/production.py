"""The production repository: each model's winner only, served under the model's own name.

Each winner is copied from the source repository (artifacts hard-linked) into a staging
repository beside the output, its config rewritten for the candidate (config.pbtxt last) and its
gen_repo.json recording the served spec and what tune searched, chose and measured. The staged
models are served on an embedded tritonserver and verified over HTTP and gRPC against the stored
eager references (serve.verify); only a model that passes is renamed into the output repository
(build's swap-in: an existing model is moved aside, then deleted). Nothing half-written is left
behind: the staging repository goes whatever happens.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .. import progress
from ..repository import layout, manifest
from ..repository import staging as stage_dirs
from ..repository.config import record_spec, write_config
from ..repository.files import link_or_copy
from ..repository.layout import BuiltModel
from ..errors import RepositoryError, VerifyError
from ..serve.ports import Ports, free_ports
from ..serve.server import EmbeddedServer
from ..serve.verify import OK, VerifyOptions, verify_repository
from ..status import READY
from .candidate import Candidate, configure, served_spec

RECORD_KEY = "tune"  # gen_repo.json's entry for what tune did


@dataclass
class Written:
    base: str
    candidate: Candidate
    path: Path | None  # where it was written; None: not written
    detail: str  # what verify said
    error: VerifyError | None = None


def check_out(out: Path, names: Sequence[str], force: bool) -> None:
    """Refuse, before anything is measured, to replace models of ``out`` without --force."""
    if out.exists() and not out.is_dir():
        raise RepositoryError(f"--out '{out}' exists and is not a directory.",
                              "Choose another --out.")
    taken = [n for n in names if (out / n).exists()]
    if taken and not force:
        raise RepositoryError(
            f"'{out}' already holds {', '.join(taken)}; tune does not replace models without"
            " --force.", "Pass --force to replace them with this tune's winners, or choose"
            " another --out.")


def stage_model(source: BuiltModel, c: Candidate, name: str, staging: Path,
                tune_record: dict) -> BuiltModel:
    """The winner as a model directory ``staging/name``, config.pbtxt written last."""
    target = staging / name
    shutil.copytree(source.path, target, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__", layout.CONFIG, layout.RECORD))
    config = configure(source, c, name=name)
    record = dict(source.record)
    spec = served_spec(source, c)
    load_params = dict(record.get("load_params") or {})
    for key, value in config.parameters.items():
        if key in load_params:  # e.g. python-compile's warm-up batch sizes
            load_params[key] = value.string_value
    record.update(model_name=name, spec=record_spec(spec), load_params=load_params,
                  **{RECORD_KEY: {**tune_record, "source": str(source.path.resolve()),
                                  "created": dt.datetime.now(dt.timezone.utc).isoformat(
                                      timespec="seconds")}})
    (target / layout.RECORD).write_text(json.dumps(record, indent=2) + "\n")
    manifest.update(target, layout.RECORD)
    write_config(target, config, f"Written by gen-repo tune: {c.describe()} ({c.key}).")
    return BuiltModel(target)


def write(winners: list[tuple[str, BuiltModel, Candidate, dict]], out: Path,
          backend_dirs: Sequence[str] | None, log_path: Path) -> list[Written]:
    """Stage, verify and swap in each (name, source, candidate, tune record)."""
    out = Path(out)
    if out.parent.is_dir():
        for p in stage_dirs.clean_stale_staging(out):
            progress.info(f"removed {p.name}, left by an interrupted run")
    staging = stage_dirs.staging_dir(out, "tune")
    written: list[Written] = []
    try:
        staged = [(name, c, stage_model(source, c, name, staging, record))
                  for name, source, c, record in winners]
        verdicts = verify_staged(staging, [m for _, _, m in staged], backend_dirs, log_path)
        for name, c, model in staged:
            ok, detail = verdicts[name]
            if not ok:
                written.append(Written(name, c, None, detail, VerifyError(
                    f"{name}: the winner ({c.describe()}) did not pass verify on the server:"
                    f" {detail}", f"It was not written. The server log is {log_path}; the"
                    " search's results stay in the results directory.")))
                continue
            stage_dirs.swap_in(model.path, out / name)
            written.append(Written(name, c, out / name, detail))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def verify_staged(staging: Path, models: list[BuiltModel], backend_dirs, log_path: Path
                  ) -> dict[str, tuple[bool, str]]:
    """Serve the staged models on an embedded server; {name: (passed, detail)}."""
    out: dict[str, tuple[bool, str]] = {}
    with EmbeddedServer(staging, Ports(*free_ports(3)), log_path=log_path,
                        backend_dirs=backend_dirs) as server:
        statuses = {s.name: s for s in server.load(models)}
        ready = [m for m in models if statuses[m.name].state == READY]
        for m in models:
            if m not in ready:
                s = statuses[m.name]
                out[m.name] = (False, f"{s.state}: {s.reason}")
        report = verify_repository(ready, server.http_url, server.grpc_url, VerifyOptions(),
                                   repo_hint="the staged production repository")
    for m in ready:
        results = [r for r in report.results if r.model == m.name]
        passed = bool(results) and all(r.status == OK for r in results)
        out[m.name] = (passed, "; ".join(f"{r.protocol} {r.status}: {r.detail}"
                                         for r in results))
    return out
