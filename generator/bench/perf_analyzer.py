"""perf_analyzer: find the binary and the two libraries it needs, run one point, parse its CSV.

The ``perf_analyzer`` bundled in the ``tritonclient[all]==2.50.0`` wheel links ``libb64.so.0d`` and
``libcudart.so.12``, which a plain machine lacks. Copies of both ship (under mangled names) in the
``nvidia_pytriton.libs`` directory of the ``nvidia-pytriton`` wheel; pip's
``nvidia-cuda-runtime-cu12`` and Debian's ``libb64-0d`` are accepted too. The first copy found of
each is linked under its real name into ``~/.cache/gen-repo/perf-libs``, which goes first on
``LD_LIBRARY_PATH``; ``ldd`` confirms the binary then resolves everything.

Every measurement is written with ``-f`` to a CSV and read from there, never from stdout.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SpecError, ToolError
from ..machine import cache_dir

BINARY = "perf_analyzer"
LIB_TIP = ("Install the two libraries perf_analyzer links: `apt-get install libb64-0d` and"
           " `pip install nvidia-cuda-runtime-cu12` (or reinstall nvidia-pytriton==0.7.0, which"
           " bundles copies of both: bash scripts/setup.sh).")


@dataclass(frozen=True)
class NeededLib:
    soname: str  # what the binary asks for
    bundled: str  # glob of the mangled copy in nvidia_pytriton.libs
    pip_dirs: tuple[str, ...] = ()  # site-packages sub-directories of pip wheels holding it


NEEDED_LIBS = (
    NeededLib("libb64.so.0d", "libb64-*.so.0d"),
    NeededLib("libcudart.so.12", "libcudart-*.so.12*", ("nvidia/cuda_runtime/lib",)),
)


# ---------------------------------------------------------------------------------------------
# locating the tool


@dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    lib_dir: Path  # goes first on LD_LIBRARY_PATH

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        ld = [str(self.lib_dir)] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
        env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(ld))
        return env

    def version(self) -> str:
        """The tritonclient wheel it came with (its own --version prints no number)."""
        try:
            from importlib.metadata import version

            return f"tritonclient {version('tritonclient')}"
        except Exception:  # pragma: no cover - tritonclient is a dependency
            return "unknown"


def find_binary() -> Path:
    candidates = [Path(sys.prefix) / "bin" / BINARY, Path(sys.executable).parent / BINARY]
    which = shutil.which(BINARY)
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ToolError(
        f"{BINARY} was not found (looked in {candidates[0].parent} and on PATH).",
        "Install the project's environment (bash scripts/setup.sh), or"
        " `pip install tritonclient[all]==2.50.0`, the newest wheel whose bundled perf_analyzer"
        " runs on glibc 2.36.")


def missing_libs(binary: Path, env: dict[str, str] | None = None) -> list[str]:
    """Sonames ``ldd`` reports as 'not found' for the binary."""
    try:
        out = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True,
                             timeout=30).stdout
    except FileNotFoundError as e:
        raise ToolError("`ldd` is not installed, so the libraries of perf_analyzer cannot be"
                        " checked.", "Install libc-bin (it provides ldd).") from e
    return re.findall(r"^\s*(\S+)\s+=>\s+not found", out, flags=re.M)


def _site_packages() -> list[Path]:
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return [Path(p) for p in sorted(paths)]


def _system_copy(soname: str) -> Path | None:
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(rf"^\s*{re.escape(soname)}\s.*=>\s*(\S+)$", out, flags=re.M)
    return Path(m.group(1)) if m else None


def find_lib(lib: NeededLib) -> Path | None:
    """A copy of ``lib``: system (ldconfig), pip wheel, or the one bundled by nvidia-pytriton."""
    system = _system_copy(lib.soname)
    if system and system.exists():
        return system
    for sp in _site_packages():
        for sub in lib.pip_dirs:
            p = sp / sub / lib.soname
            if p.exists():
                return p
        found = sorted((sp / "nvidia_pytriton.libs").glob(lib.bundled))
        if found:
            return found[0]
    return None


def link_libs(target: Path) -> None:
    """Link each needed library under its real soname into ``target`` (idempotent)."""
    target.mkdir(parents=True, exist_ok=True)
    for lib in NEEDED_LIBS:
        src = find_lib(lib)
        if src is None:
            continue
        link = target / lib.soname
        if link.is_symlink() and link.resolve() == src.resolve():
            continue
        tmp = target / f".{lib.soname}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(src.resolve())
        os.replace(tmp, link)


def locate(lib_dir: Path | None = None) -> PerfAnalyzer:
    """Find perf_analyzer and make its libraries resolvable; ToolError (with TIP) otherwise."""
    binary = find_binary()
    tool = PerfAnalyzer(binary, lib_dir or cache_dir() / "perf-libs")
    if missing_libs(binary, tool.env):
        link_libs(tool.lib_dir)
        still = missing_libs(binary, tool.env)
        if still:
            raise ToolError(
                f"{binary} cannot run: the libraries {', '.join(still)} were not found (not on"
                " the system, not in a pip wheel, not among the copies bundled in"
                " nvidia_pytriton.libs).", LIB_TIP)
    return tool


# ---------------------------------------------------------------------------------------------
# one measurement point


@dataclass(frozen=True)
class Measurement:
    """How perf_analyzer decides a point is measured: windows and a stability threshold."""

    mode: str = "count_windows"  # or "time_windows"
    request_count: int = 100  # count_windows: at least this many requests per window
    interval_ms: int = 2000  # time_windows: window length
    stability: float = 10.0  # max/min of the last 3 windows within this %
    max_trials: int = 8  # windows before giving up
    relaxed_stability: float = 100.0  # second attempt when the first does not stabilise

    def flags(self, stability: float | None = None, scale: int = 1) -> list[str]:
        """perf_analyzer flags; ``scale`` lengthens the windows (a retry of a noisy point)."""
        flags = ["--measurement-mode", self.mode]
        if self.mode == "count_windows":
            flags += ["--measurement-request-count", str(self.request_count * scale)]
        else:
            flags += ["--measurement-interval", str(self.interval_ms * scale)]
        return flags + ["--stability-percentage", f"{stability or self.stability:g}",
                        "--max-trials", str(self.max_trials)]

    def with_windows(self, request_count: int | None = None, interval_ms: int | None = None,
                     stability: float | None = None) -> "Measurement":
        """These windows with a request count (count windows), a time window or a stability
        threshold given by the user (None: as they are), each checked."""
        from dataclasses import replace

        meas = self
        if request_count is not None:
            if request_count < 1:
                raise SpecError(f"--request-count {request_count} (request_count=) must be"
                                " positive.", "Example: --request-count 200")
            meas = replace(meas, mode="count_windows", request_count=request_count)
        if interval_ms is not None:
            if interval_ms < 100:
                raise SpecError(f"--measurement-interval {interval_ms} ms (measurement_interval=)"
                                " is too short for stable numbers.", "Use 500 ms or more.")
            meas = replace(meas, interval_ms=interval_ms)
        if stability is not None:
            if not 0 < stability <= 1000:
                raise SpecError(f"--stability {stability} (stability=) is not a percentage in"
                                " (0, 1000].", "Example: --stability 15 (the last 3 windows"
                                " within 15%).")
            meas = replace(meas, stability=stability,
                           relaxed_stability=max(meas.relaxed_stability, stability))
        return meas

    def to_dict(self) -> dict:
        return {"mode": self.mode, "request_count": self.request_count,
                "interval_ms": self.interval_ms, "stability_percentage": self.stability,
                "max_trials": self.max_trials, "relaxed_stability_percentage":
                    self.relaxed_stability}


@dataclass(frozen=True)
class Target:
    """What to load: a model on a server, reached by one protocol."""

    model: str
    url: str  # host:port of the protocol's endpoint
    protocol: str = "grpc"  # grpc | http
    input_data: Path | None = None  # JSON made by write_input_data, else perf_analyzer's random


def command(tool: PerfAnalyzer, target: Target, batch_size: int, concurrency: int,
            measurement: Measurement, csv_path: Path, stability: float | None = None,
            scale: int = 1) -> list[str]:
    cmd = [str(tool.binary), "-m", target.model, "-u", target.url, "-i", target.protocol,
           "-b", str(batch_size), "--concurrency-range", f"{concurrency}:{concurrency}",
           *measurement.flags(stability, scale), "-f", str(csv_path), "--verbose-csv"]
    if target.input_data:
        cmd += ["--input-data", str(target.input_data)]
    return cmd


@dataclass
class RunOutcome:
    command: list[str]
    returncode: int
    rows: list[dict] = field(default_factory=list)
    log: str = ""
    stability: float = 10.0

    @property
    def retryable(self) -> bool:
        """Failed for want of agreeing or long-enough windows (not for a broken model)."""
        text = self.log.lower()
        return self.returncode != 0 and any(w in text for w in RETRYABLE)


RETRYABLE = ("stable measurement", "larger time window", "no valid requests")


def run_point(tool: PerfAnalyzer, target: Target, batch_size: int, concurrency: int,
              measurement: Measurement, csv_path: Path, timeout: float = 300.0) -> RunOutcome:
    """Measure one (batch size, concurrency) point; retry a noisy one once.

    perf_analyzer exits non-zero and writes no CSV row when its windows do not agree within the
    threshold (or hold too few requests); the retry uses windows twice as long and the relaxed
    threshold, and ``stability`` records which threshold the number met.
    """
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.with_suffix(".log").unlink(missing_ok=True)
    outcome = _run(tool, target, batch_size, concurrency, measurement, csv_path, None, 1,
                   timeout)
    if outcome.retryable:
        outcome = _run(tool, target, batch_size, concurrency, measurement, csv_path,
                       max(measurement.relaxed_stability, measurement.stability), 2, timeout)
    return outcome


def warm_up(tool: PerfAnalyzer, target: Target, batch_size: int, concurrency: int,
            work_dir: Path, timeout: float = 120.0) -> None:
    """A short unrecorded run, so that no measured point pays for first calls (allocations,
    TorchScript's profiling passes, the dynamic batcher's first batch shapes)."""
    quick = Measurement(mode="count_windows", request_count=max(4, concurrency),
                        stability=100.0, max_trials=3, relaxed_stability=100.0)
    (work_dir / "warm-up.log").unlink(missing_ok=True)  # _run appends: keep only this one
    _run(tool, target, batch_size, concurrency, quick, work_dir / "warm-up.csv", None, 1,
         timeout)


def _run(tool, target, batch_size, concurrency, measurement, csv_path, stability, scale,
         timeout):
    """One perf_analyzer run; its output is appended to the point's .log (both attempts)."""
    csv_path.unlink(missing_ok=True)
    cmd = command(tool, target, batch_size, concurrency, measurement, csv_path, stability, scale)
    log_path = csv_path.with_suffix(".log")
    start = 0
    try:
        with open(log_path, "a") as log:
            start = log.tell()  # this attempt's output starts here
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.run(cmd, env=tool.env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = 124
    except OSError as e:
        raise ToolError(f"could not run {tool.binary}: {e}.", LIB_TIP) from e
    log_text = _read_from(log_path, start)
    if code == 124:
        log_text += f"\n(gen-repo stopped perf_analyzer after {timeout:.0f} s)"
    rows = parse_csv(csv_path) if code == 0 and csv_path.exists() else []
    return RunOutcome(cmd, code, rows, log_text, stability or measurement.stability)


def _read_from(path: Path, offset: int) -> str:
    """This attempt's part of the log: its command line, then what perf_analyzer printed."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").removeprefix("$ ")
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# the CSV

# CSV header -> our key. All times in microseconds, throughput in inferences per second.
COLUMNS = {
    "Concurrency": "concurrency",
    "Request Rate": "request_rate",
    "Inferences/Second": "throughput",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_us",
    "p90 latency": "p90_us",
    "p95 latency": "p95_us",
    "p99 latency": "p99_us",
    "Avg latency": "avg_us",
    "request/response": "client_marshal_us",
    "response wait": "client_response_wait_us",
}
REQUIRED = ("throughput", "p50_us", "p99_us")


def parse_csv(path: Path) -> list[dict]:
    """perf_analyzer's ``-f`` CSV -> one dict per measured point, sorted by concurrency.

    Known columns get stable keys (COLUMNS); unknown ones are kept under their header so a newer
    perf_analyzer loses nothing. Raises ToolError when a needed column is absent.
    """
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            raw_rows = [r for r in reader if any((v or "").strip() for v in r.values())]
    except OSError as e:
        raise ToolError(f"perf_analyzer's CSV {path} is unreadable: {e}.",
                        "Rerun the benchmark; check the disk is not full.") from e
    keys = {COLUMNS.get(h.strip(), h.strip()) for h in header}
    absent = [k for k in REQUIRED if k not in keys]
    if absent:
        raise ToolError(f"perf_analyzer's CSV {path} lacks the columns {absent} (header:"
                        f" {header}).", "Use perf_analyzer from tritonclient[all]==2.50.0.")
    rows = []
    for raw in raw_rows:
        row = {}
        for h, v in raw.items():
            if h is None:
                continue
            row[COLUMNS.get(h.strip(), h.strip())] = _number(v)
        rows.append(row)
    return sorted(rows, key=lambda r: (r.get("concurrency") or 0, r.get("request_rate") or 0))


def _number(text):
    text = (text or "").strip()
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


# ---------------------------------------------------------------------------------------------
# input data


def write_input_data(samples: dict[str, np.ndarray], batching: bool, path: Path) -> Path:
    """perf_analyzer's --input-data JSON holding one request's worth of the model's samples.

    Real sample values keep integer ids inside their embedding tables and give dynamic axes a
    shape; for a batching model the first row is used (perf_analyzer repeats it -b times). The
    stored samples are shaped as clients send them, so a per-row scalar's row is [1].
    """
    entry = {}
    for name, array in samples.items():
        a = np.asarray(array[0] if batching else array)
        content = a.reshape(-1).tolist()
        entry[name] = {"content": content, "shape": list(a.shape)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": [entry]}))
    return path
