"""What one tune searches, for which load and how it measures: stored in results.json, so that
``--resume`` goes on with the same search (and refuses flags that would change it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..bench import perf_analyzer as pa
from ..bench.sweep import Plan
from ..errors import SpecError
from .objective import Objective
from .space import Space

STAGED, GRID = "staged", "grid"
# Windows of 1 s, a point stable when its last 3 windows agree within 20%; a noisy one is
# measured again with 2 s windows at 1000% and marked unstable (bench --quick's threshold: on a
# shared machine a rough figure serves the search better than none). Bench's rules with shorter
# windows, since tune measures many more configs than bench.
MEASUREMENT = pa.Measurement(mode="time_windows", interval_ms=1000, stability=20.0,
                             max_trials=6, relaxed_stability=1000.0)


@dataclass(frozen=True)
class Settings:
    objective: Objective
    concurrency: tuple[int, ...]
    batch_size: int = 1  # rows per request
    space: Space = field(default_factory=Space)
    strategy: str = STAGED
    protocol: str = "grpc"
    measurement: pa.Measurement = MEASUREMENT

    def plan(self) -> Plan:
        """The plan bench's point driver measures with (one batch size, no instance sweep)."""
        return Plan(concurrency=tuple(sorted(self.concurrency)), batch_sizes=(self.batch_size,),
                    instances=(None,), protocol=self.protocol, measurement=self.measurement)

    def load_text(self) -> str:
        conc = ",".join(map(str, sorted(self.concurrency)))
        return (f"concurrency {conc}, {self.batch_size} row{'s' if self.batch_size > 1 else ''}"
                f" per request, {self.protocol}")

    def flat(self) -> dict:
        """to_dict with the objective, space and measurement keys at the top (what the search
        flags map to)."""
        d = self.to_dict()
        return {**d, **d["objective"], **d["space"], **d["measurement"]}

    def to_dict(self) -> dict:
        return {"objective": self.objective.to_dict(), "concurrency": list(self.concurrency),
                "batch_size": self.batch_size, "space": self.space.to_dict(),
                "strategy": self.strategy, "protocol": self.protocol,
                "measurement": self.measurement.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Settings":
        m = d.get("measurement") or {}
        meas = pa.Measurement(mode=m.get("mode", MEASUREMENT.mode),
                              request_count=m.get("request_count", MEASUREMENT.request_count),
                              interval_ms=m.get("interval_ms", MEASUREMENT.interval_ms),
                              stability=m.get("stability_percentage", MEASUREMENT.stability),
                              max_trials=m.get("max_trials", MEASUREMENT.max_trials),
                              relaxed_stability=m.get("relaxed_stability_percentage",
                                                      MEASUREMENT.relaxed_stability))
        return cls(Objective.from_dict(d.get("objective") or {}),
                   tuple(d.get("concurrency") or ()), int(d.get("batch_size", 1)),
                   Space.from_dict(d.get("space") or {}), d.get("strategy", STAGED),
                   d.get("protocol", "grpc"), meas)


def check_resumable(stored: Settings, asked: dict, where: str) -> None:
    """``asked``: the settings the flags gave explicitly (flag -> value as stored). A resumed
    tune continues the search it started; a flag that would change it is refused."""
    flat = stored.flat()
    for flag, value in asked.items():
        key = FLAG_KEYS[flag]
        if flat.get(key) != value:
            raise SpecError(
                f"{flag} differs from the search stored in {where} ({key}: {flat.get(key)!r},"
                f" now {value!r}): --resume continues that search, and its measurements were"
                " made for it.",
                f"Drop {flag} to resume it, or start a new tune with another --results DIR.")


# Each search option: its keyword in gen_repo.tune, its command-line flag, its key in the
# settings results.json stores (what a resumed search compares).
SEARCH_OPTIONS = (
    ("objective", "--objective", "kind"), ("p99_budget_ms", "--p99-budget-ms", "p99_budget_ms"),
    ("memory_budget_gb", "--memory-budget-gb", "memory_budget_gb"),
    ("concurrency", "--concurrency", "concurrency"), ("batch_size", "--batch-size", "batch_size"),
    ("instances", "--instances", "instances"), ("threads", "--threads", "threads"),
    ("queue_delays_us", "--queue-delays-us", "delays_us"),
    ("max_batch_sizes", "--max-batch-sizes", "max_batch_sizes"),
    ("preferred", "--no-preferred-batch-sizes", "preferred"),
    ("strategy", "--strategy", "strategy"), ("protocol", "--protocol", "protocol"),
    ("measurement_interval", "--measurement-interval", "interval_ms"),
    ("stability", "--stability", "stability_percentage"))
FLAG_KEYS = {flag: key for _, flag, key in SEARCH_OPTIONS}
