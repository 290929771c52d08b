"""results.json: every measured point, the ceiling, and the context needed to trust them.

The schema is versioned (``SCHEMA``); readers refuse other major versions. The file is rewritten
atomically after each point, so an interrupted run keeps everything it measured.

    {"schema": "gen-repo-bench/1", "created", "finished", "complete", "stopped_by",
     "command", "machine", "versions", "server", "settings",
     "models":  [{name, base, variant, label, backend, derived_from}],
     "loads":   [{model, instances, state, reason, seconds (load request to READY),
                  first_request_ms, pss_bytes, uss_bytes, stubs (Python backend: its stub
                  processes, idle after the warm-up), peak_pss_bytes (their PSS peak during
                  the warm-up), rss_before_bytes, rss_after_bytes (a backend
                  inside the server: the server process around the load), gpu_bytes}],
     "points":  [{model, base, variant, instances, threads, batch_size, concurrency, protocol,
                  status ok|unstable|failed, stability, throughput, p50_us ... p99_us,
                  server_queue_us, server_compute_{input,infer,output}_us, ..., csv, command,
                  error}],
     "ceiling": [{model, kind, source, batch_size, threads, throughput, p50_ms, iterations}],
     "notes":   [str]}
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from ..errors import RepositoryError
from ..machine import cores
from ..repository.files import write_atomic
from ..status import POINT_FAILED

SCHEMA = "gen-repo-bench/1"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Point:
    model: str  # served model (directory) name
    base: str  # model name without the variant
    variant: str
    instances: int
    threads: int | None  # intra-op threads per instance (None: unknown, e.g. remote)
    batch_size: int
    concurrency: int
    protocol: str
    status: str  # ok | unstable | failed
    stability: float | None = None  # the threshold (%) the measurement met
    metrics: dict = field(default_factory=dict)  # parsed CSV row (throughput, p50_us, ...)
    csv: str = ""  # relative to the results directory
    command: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    def get(self, key: str, default=None):
        return self.metrics.get(key, default)

    @property
    def throughput(self) -> float | None:
        return self.metrics.get("throughput") if self.status != POINT_FAILED else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("metrics"))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Point":
        names = set(cls.__dataclass_fields__) - {"metrics"}
        return cls(**{k: v for k, v in d.items() if k in names},
                   metrics={k: v for k, v in d.items() if k not in names})


@dataclass
class Results:
    # A stage that keeps its own kind of results (tune) subclasses this: its schema name, the
    # class its points are read back as, and the command that writes it.
    schema: ClassVar[str] = SCHEMA
    point_class: ClassVar[type] = Point
    producer: ClassVar[str] = "gen-repo bench"

    command: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    models: list[dict] = field(default_factory=list)
    loads: list[dict] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    ceiling: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=now)
    finished: str | None = None
    complete: bool = False
    stopped_by: str | None = None  # why the sweep ended early (Ctrl-C, server died)

    # -- queries -------------------------------------------------------------------------------
    def model_info(self, name: str) -> dict:
        return next((m for m in self.models if m["name"] == name), {"name": name})

    def measured(self, **where) -> list[Point]:
        """Points with a number, filtered by attribute equality."""
        return [p for p in self.points if p.throughput is not None
                and all(getattr(p, k) == v for k, v in where.items())]

    def bases(self) -> list[str]:
        return list(dict.fromkeys(m.get("base", m["name"]) for m in self.models))

    # -- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"schema": self.schema, "created": self.created, "finished": self.finished,
                "complete": self.complete, "stopped_by": self.stopped_by,
                "command": self.command, "machine": self.machine, "versions": self.versions,
                "server": self.server, "settings": self.settings, "models": self.models,
                "loads": self.loads, "points": [p.to_dict() for p in self.points],
                "ceiling": self.ceiling, "notes": self.notes}

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Results":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RepositoryError(f"results {p} are unreadable: {e}.",
                                  f"Pass the results.json written by {cls.producer}.") from e
        schema = str(data.get("schema", ""))
        if schema != cls.schema and not schema.startswith(cls.schema + "."):
            raise RepositoryError(f"{p} has schema '{schema}', this gen-repo reads"
                                  f" '{cls.schema}'.",
                                  f"Rerun {cls.producer} to measure again with this version.")
        keys = {f.name for f in fields(cls)} - {"points"}
        results = cls(**{k: v for k, v in data.items() if k in keys})
        results.points = [cls.point_class.from_dict(d) for d in data.get("points", [])]
        return results


# ---------------------------------------------------------------------------------------------
# context


def machine_info() -> dict:
    info = {"cpu": _cpu_model(), "cores": cores(), "os": platform.platform(),
            "glibc": "-".join(platform.libc_ver()), "python": platform.python_version(),
            "loadavg_start": _loadavg()}
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - a dependency
        pass
    return info


def busy_at_start(machine: dict) -> tuple[float, int] | None:
    """(load average, cores) when the machine was busy as the run started (load above half
    the cores; bench itself adds 1-2 later), else None."""
    load, n = machine.get("loadavg_start"), machine.get("cores") or 1
    return (load[0], n) if load and load[0] > 0.5 * n else None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def finish_machine(machine: dict) -> None:
    machine["loadavg_end"] = _loadavg()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"gen_repo": __version__, "python": platform.python_version()}
    for dist in ("torch", "numpy", "tritonclient", "nvidia-pytriton"):
        try:
            out[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            pass
    return out
