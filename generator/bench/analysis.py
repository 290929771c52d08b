"""From measured points to the few numbers people read: ratios, the ceiling, scaling, and why.

Everything the verdict says is computed here from ``Results`` (the report only formats it), so
the benchmark script and the tests read the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..status import POINT_UNSTABLE, READY
from ..variants.base import EAGER, TORCHSCRIPT
from . import footprint
from .results import Point, Results
from .workspace import FLOOR  # the Python backend's own cost (workspace.derive_floor)

FLOOR_WORDS = "the Python backend's floor (an identity model, no torch)"
BREAKDOWN = (("server_queue_us", "queue"), ("server_compute_input_us", "compute input"),
             ("server_compute_infer_us", "compute infer"),
             ("server_compute_output_us", "compute output"))


def _registry():
    """The variant registry, imported on first use: it loads every variant's code, torch with
    it, which importing bench does not."""
    from ..variants import registry

    return registry


def words(variant: str) -> str:
    """How a sentence names a variant (or the floor)."""
    return FLOOR_WORDS if variant == FLOOR else _registry().words(variant)


def eager_variant() -> str:
    """The variant that serves the model as written: what the verdict compares the others with."""
    return _registry().by_artifact(EAGER)[0]


def artifact_of(variant: str) -> str | None:
    """The in-process artifact a variant is compared with (None: the best of any)."""
    return _registry().artifact_of(variant)


@dataclass
class Comparison:
    """Eager against TorchScript for one model at one batch size and instance count."""

    base: str
    batch_size: int
    instances: int
    eager: str | None = None  # model (directory) names
    torchscript: str | None = None
    torchscript_variant: str | None = None
    concurrency: int | None = None  # where throughput is compared (8, or the highest measured)
    low_concurrency: int | None = None  # where p50 is compared (1, or the lowest)
    throughput_ratio: float | None = None  # eager / TorchScript
    p50_ratio: float | None = None  # eager / TorchScript
    eager_point: Point | None = None
    torchscript_point: Point | None = None
    unstable: bool = False  # one of the compared points only met the relaxed threshold


@dataclass
class CeilingRatio:
    model: str
    variant: str
    batch_size: int
    served: float  # best served throughput at this batch size (any concurrency / instances)
    served_point: Point
    ceiling: float  # best in-process throughput at this batch size
    ceiling_point: dict
    ratio: float
    own_ceiling_point: dict | None = None  # the best in-process point of this variant's artifact

    @property
    def own_ratio(self) -> float | None:
        p = self.own_ceiling_point
        return self.served / p["throughput"] if p else None


@dataclass
class FloorShare:
    """A Python-backend variant against the floor: the backend's own cost, the forward pass, and
    what the variant's model.py adds (latency at low concurrency), and throughput at the top."""

    model: str
    variant: str
    batch_size: int
    instances: int
    concurrency: int  # where throughput is compared
    low_concurrency: int  # where p50 is split
    throughput_ratio: float | None  # variant / floor
    p50_ratio: float | None  # variant / floor
    floor_p50_ms: float
    p50_ms: float
    forward_ms: float | None  # one forward pass in-process at the request's batch and threads
    unstable: bool = False

    @property
    def overhead_ms(self) -> float | None:
        """What the variant adds beyond the backend's floor and its forward pass."""
        if self.forward_ms is None:
            return None
        return self.p50_ms - self.floor_p50_ms - self.forward_ms


@dataclass
class MemoryRow:
    """One model at one instance count: what it costs besides speed (footprint.py), beside the
    Python backend's floor at the same instance count (its fixed cost)."""

    model: str
    variant: str
    instances: int
    memory: int | None  # bytes attributable to the model (footprint.attributable)
    measured_as: str  # footprint.PSS or footprint.RSS_GROWTH
    stubs: int | None
    uss: int | None
    gpu: int | None
    load_seconds: float | None
    first_request_ms: float | None
    throughput: float | None  # best over concurrency at the smallest batch measured
    floor: int | None = None  # the floor's memory at the same instance count
    peak: int | None = None  # a Python-backend model's stubs: the PSS peak during the warm-up

    @property
    def per_instance(self) -> float | None:
        return self.memory / self.instances if self.memory is not None else None

    @property
    def gpu_per_instance(self) -> float | None:
        return self.gpu / self.instances if self.gpu is not None else None

    @property
    def floor_per_instance(self) -> float | None:
        return self.floor / self.instances if self.floor is not None else None

    @property
    def over_floor(self) -> float | None:
        """Per instance, what the model takes beyond the Python backend's fixed cost."""
        if self.variant == FLOOR or self.measured_as != footprint.PSS or self.floor is None:
            return None
        return self.per_instance - self.floor_per_instance


@dataclass
class ModelSummary:
    base: str
    comparisons: list[Comparison] = field(default_factory=list)
    ceiling_ratios: list[CeilingRatio] = field(default_factory=list)
    floor_shares: list[FloorShare] = field(default_factory=list)
    scaling: dict[str, dict[int, float]] = field(default_factory=dict)  # model -> inst -> best
    shortfalls: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------


def models_of(results: Results, base: str) -> dict[str, str]:
    """variant -> model name for the measured models of ``base``."""
    out = {}
    for m in results.models:
        if m.get("base") == base and results.measured(model=m["name"]):
            out.setdefault(m["variant"], m["name"])
    return out


def served_variants(results: Results, base: str) -> dict[str, str]:
    """models_of without the floor (a yardstick, not a way to serve the model)."""
    return {v: m for v, m in models_of(results, base).items() if v != FLOOR}


def floor_shares(results: Results, base: str, batch: int, inst: int,
                 target_concurrency: int = 8) -> list[FloorShare]:
    """Each Python-backend variant of ``base`` against its floor at one batch and instance count."""
    variants = models_of(results, base)
    floor = variants.get(FLOOR)
    if not floor:
        return []
    floor_conc = {p.concurrency for p in results.measured(model=floor, batch_size=batch,
                                                         instances=inst)}
    out = []
    for variant, model in variants.items():
        if variant == FLOOR or results.model_info(model).get("backend") != "python":
            continue
        both = sorted(floor_conc & {p.concurrency for p in results.measured(
            model=model, batch_size=batch, instances=inst)})
        if not both:
            continue
        hi = target_concurrency if target_concurrency in both else max(both)
        lo = min(both)
        f_hi, v_hi = _at(results, floor, batch, inst, hi), _at(results, model, batch, inst, hi)
        f_lo, v_lo = _at(results, floor, batch, inst, lo), _at(results, model, batch, inst, lo)
        forward = [c["p50_ms"] for c in results.ceiling if c["model"] == base
                   and c["kind"] == artifact_of(variant) and c["batch_size"] == batch
                   and c["threads"] == v_lo.threads]
        out.append(FloorShare(
            model, variant, batch, inst, hi, lo, _ratio(v_hi.throughput, f_hi.throughput),
            _ratio(v_lo.get("p50_us"), f_lo.get("p50_us")), (f_lo.get("p50_us") or 0) / 1000,
            (v_lo.get("p50_us") or 0) / 1000, forward[0] if forward else None,
            any(p.status == POINT_UNSTABLE for p in (f_hi, v_hi, f_lo, v_lo))))
    return out


def torchscript_of(variants: dict[str, str]) -> tuple[str | None, str | None]:
    """The TorchScript variant the verdict compares: the registry's first one measured."""
    for v in _registry().by_artifact(TORCHSCRIPT):
        if v in variants:
            return variants[v], v
    return None, None


def _at(results: Results, model: str, batch: int, inst: int, conc: int) -> Point | None:
    pts = results.measured(model=model, batch_size=batch, instances=inst, concurrency=conc)
    return pts[0] if pts else None


def compare(results: Results, base: str, batch: int, inst: int,
            target_concurrency: int = 8) -> Comparison:
    variants = models_of(results, base)
    ts, ts_variant = torchscript_of(variants)
    c = Comparison(base, batch, inst, variants.get(eager_variant()), ts, ts_variant)
    if not (c.eager and c.torchscript):
        return c
    both = sorted({p.concurrency for p in results.measured(model=c.eager, batch_size=batch,
                                                             instances=inst)}
                  & {p.concurrency for p in results.measured(model=c.torchscript,
                                                             batch_size=batch, instances=inst)})
    if not both:
        return c
    hi = target_concurrency if target_concurrency in both else max(both)
    lo = min(both)
    c.concurrency, c.low_concurrency = hi, lo
    e, t = _at(results, c.eager, batch, inst, hi), _at(results, c.torchscript, batch, inst, hi)
    c.eager_point, c.torchscript_point = e, t
    c.throughput_ratio = _ratio(e.throughput, t.throughput)
    e1, t1 = _at(results, c.eager, batch, inst, lo), _at(results, c.torchscript, batch, inst, lo)
    c.p50_ratio = _ratio(e1.get("p50_us"), t1.get("p50_us"))
    c.unstable = any(p.status == POINT_UNSTABLE for p in (e, t, e1, t1))
    return c


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def max_execution_batch(results: Results, base: str) -> int:
    """The largest batch the server may run for ``base``: max_batch_size with the dynamic
    batcher on (requests are merged), else 0 (each request runs at its own size)."""
    return max((m.get("max_execution_batch", 0) for m in results.models
                if m.get("base") == base), default=0)


def best_ceiling(results: Results, base: str, batch: int, kind: str | None = None) -> dict | None:
    """The best in-process point among the batch sizes the server may execute for requests of
    ``batch`` rows: ``batch`` itself, and up to max_batch_size when the dynamic batcher merges
    requests -- the fair "what this machine can do" for those requests. ``kind`` limits it to
    one artifact (eager, torchscript)."""
    top = max(batch, max_execution_batch(results, base))
    pts = [p for p in results.ceiling if p["model"] == base and batch <= p["batch_size"] <= top
           and kind in (None, p["kind"])]
    return max(pts, key=lambda p: p["throughput"]) if pts else None


def ceiling_ratios(results: Results, base: str) -> list[CeilingRatio]:
    out = []
    for variant, model in served_variants(results, base).items():
        for batch in sorted({p.batch_size for p in results.measured(model=model)}):
            ceiling = best_ceiling(results, base, batch)
            if not ceiling:
                continue
            best = max(results.measured(model=model, batch_size=batch),
                       key=lambda p: p.throughput)
            out.append(CeilingRatio(model, variant, batch, best.throughput, best,
                                    ceiling["throughput"], ceiling,
                                    best.throughput / ceiling["throughput"],
                                    best_ceiling(results, base, batch,
                                                 artifact_of(variant))))
    return out


def scaling(results: Results, base: str, batch: int) -> dict[str, dict[int, float]]:
    """model -> {instances: best throughput over concurrency} at one batch size."""
    out: dict[str, dict[int, float]] = {}
    for model in served_variants(results, base).values():
        for p in results.measured(model=model, batch_size=batch):
            row = out.setdefault(model, {})
            row[p.instances] = max(row.get(p.instances, 0.0), p.throughput)
    return out


def memory_rows(results: Results, base: str) -> list[MemoryRow]:
    """Every READY load of ``base``'s models that has a memory figure, by variant and instance
    count, the floor last."""
    names = {m["name"]: m.get("variant", "") for m in results.models if m.get("base") == base}
    batches = [p.batch_size for p in results.measured() if p.model in names]
    entries = {(e["model"], e["instances"]): e for e in results.loads
               if e["model"] in names and e["state"] == READY}
    floor = {inst: footprint.attributable(e)[0] for (model, inst), e in entries.items()
             if names[model] == FLOOR}
    rows = []
    for (model, inst), e in entries.items():
        memory, how = footprint.attributable(e)
        if memory is None:
            continue
        best = [p.throughput for p in results.measured(model=model, instances=inst,
                                                       batch_size=min(batches, default=1))]
        rows.append(MemoryRow(model, names[model], inst, memory, how, e.get("stubs"),
                              e.get("uss_bytes"), e.get("gpu_bytes"), e.get("seconds"),
                              e.get("first_request_ms"), max(best, default=None),
                              floor.get(inst), e.get("peak_pss_bytes")))
    return sorted(rows, key=lambda r: (r.variant == FLOOR, r.variant, r.instances))


def summarize(results: Results, base: str) -> ModelSummary:
    s = ModelSummary(base)
    measured = [p for p in results.points if p.base == base and p.throughput is not None]
    if not measured:
        return s
    batches = sorted({p.batch_size for p in measured})
    instances = sorted({p.instances for p in measured})
    for b in batches:
        for i in instances:
            c = compare(results, base, b, i)
            if c.throughput_ratio is not None:
                s.comparisons.append(c)
    s.ceiling_ratios = ceiling_ratios(results, base)
    s.floor_shares = floor_shares(results, base, batches[0], instances[0])
    s.scaling = scaling(results, base, batches[0])
    s.shortfalls = shortfalls(results, s)
    return s


# ---------------------------------------------------------------------------------------------
# verdict sentences


def _x(r: float) -> str:
    return f"{r:.2f}×"


def verdict(results: Results) -> list[str]:
    """A few sentences, computed from the data, for the top of the report."""
    lines = []
    for base in results.bases():
        s = summarize(results, base)
        if s.comparisons:
            c = s.comparisons[0]  # smallest batch size, fewest instances
            lines.append(
                f"{base}: at concurrency {c.concurrency} (batch {c.batch_size},"
                f" {c.instances} instance{'s' if c.instances > 1 else ''}) {words(eager_variant())}"
                f" reaches {_x(c.throughput_ratio)} the throughput of"
                f" {words(c.torchscript_variant)}; its p50 latency at concurrency"
                f" {c.low_concurrency} is {_x(c.p50_ratio)} TorchScript's"
                + (" (from points marked unstable: rough numbers)." if c.unstable else "."))
        elif models_of(results, base):
            have = ", ".join(models_of(results, base).values())
            lines.append(f"{base}: only {have} measured, so there is no eager-vs-TorchScript"
                         " comparison.")
        for f in s.floor_shares:
            if f.variant != eager_variant():
                continue
            split = (f"the floor's {f.floor_p50_ms:.2f} ms + {f.forward_ms:.2f} ms for the forward"
                     f" pass in a hot in-process loop + {f.overhead_ms:.2f} ms more (model.py's"
                     " tensor conversions, and the forward pass running with caches cold after"
                     " each wait for a request)"
                     if f.forward_ms is not None else f"{_x(f.p50_ratio)} the floor's")
            lines.append(
                f"{base}: {words(FLOOR)} bounds every Python-backend model; at"
                f" concurrency {f.concurrency} {words(f.variant)} reaches"
                f" {_x(f.throughput_ratio)} its throughput, and its p50 at concurrency"
                f" {f.low_concurrency} ({f.p50_ms:.2f} ms) is {split}"
                + (" (from points marked unstable: rough numbers)." if f.unstable else "."))
            bound = _floor_bound(results, base, f)
            if bound:
                lines.append(bound)
        for r in s.ceiling_ratios:
            if r.batch_size == min(x.batch_size for x in s.ceiling_ratios):
                lines.append(
                    f"{base}: {words(r.variant)} serves {r.served:.1f} infer/s at best (batch"
                    f" {r.batch_size}), {_x(r.ratio)} the in-process ceiling of"
                    f" {r.ceiling:.1f} infer/s ({r.ceiling_point['kind']}, batch"
                    f" {r.ceiling_point['batch_size']}, {r.ceiling_point['threads']} thread(s),"
                    " no server).")
        for model, per in s.scaling.items():
            if len(per) > 1:
                lo, hi = min(per), max(per)
                variant = results.model_info(model).get("variant", model)
                lines.append(f"{base}: {words(variant)} with {hi} instances reaches"
                             f" {_x(per[hi] / per[lo])} its throughput with {lo}.")
        lines += _memory_line(results, base)
    return lines


def mib(n: float | None) -> str:
    """Bytes as MiB for a sentence or a table cell ('' for None)."""
    return f"{n / 2**20:,.0f}" if n is not None else ""


def _memory_line(results: Results, base: str) -> list[str]:
    """The eager variant's memory per instance against the floor's, its load and first
    request, at its fewest instances."""
    rows = [r for r in memory_rows(results, base) if r.variant == eager_variant()]
    if not rows:
        return []
    r = rows[0]
    text = (f"{base}: {words(r.variant)} takes {mib(r.per_instance)} MiB per instance"
            f" ({r.measured_as} of {r.instances} stub process(es) idle after the warm-up)")
    if r.over_floor is not None:
        text += (f", {mib(r.floor_per_instance)} MiB of it the Python backend's fixed cost (the"
                 f" floor's) and {mib(r.over_floor)} MiB the model's own")
    if r.load_seconds is not None:
        text += f"; it loads in {r.load_seconds:.1f} s"
    if r.first_request_ms is not None:
        text += f" and answers its first request in {r.first_request_ms:.0f} ms"
    return [text + "."]


def _floor_bound(results: Results, base: str, f: FloorShare) -> str:
    """Where the TorchScript variant outside the Python backend (libtorch) serves more than the
    floor: no Python-backend model can match it here, whatever its model.py does."""
    variants = models_of(results, base)
    name, libtorch = next(((v, m) for v, m in variants.items() if artifact_of(v) == TORCHSCRIPT
                           and results.model_info(m).get("backend") != "python"), (None, None))
    floor = variants.get(FLOOR)
    lt = _at(results, libtorch, f.batch_size, f.instances, f.concurrency) if libtorch else None
    fl = _at(results, floor, f.batch_size, f.instances, f.concurrency)
    if not lt or not fl or not lt.throughput or fl.throughput >= lt.throughput:
        return ""
    return (f"{base}: the {name} variant serves {lt.throughput:.0f} infer/s at concurrency"
            f" {f.concurrency}, more than the floor's {fl.throughput:.0f}: no Python-backend"
            f" model can reach more than {_x(fl.throughput / lt.throughput)} of it here (the"
            " PyTorch backend runs the model inside the server process; the Python backend"
            " hands every request to a stub process and back).")


def shortfalls(results: Results, s: ModelSummary) -> list[str]:
    """Where the served eager model falls short, by how much, and what the CSV says about why."""
    out = []
    cores = results.machine.get("cores") or "the"
    for c in s.comparisons:
        if c.throughput_ratio < 0.98:
            out.append(
                f"batch {c.batch_size}, {c.instances} instance(s), concurrency {c.concurrency}:"
                f" eager is {(1 - c.throughput_ratio) * 100:.0f}% below TorchScript in"
                f" throughput. {_why(c.eager_point, c.torchscript_point)}"
                f"{_artifacts_in_process(results, c)}")
    for r in s.ceiling_ratios:
        if r.ratio < 0.95:
            p = r.served_point
            convert = (p.get("server_compute_input_us") or 0) + \
                (p.get("server_compute_output_us") or 0)
            compute = convert + (p.get("server_compute_infer_us") or 0)
            parts = ", ".join(f"{label} {p.get(k) or 0:.0f} µs" for k, label in BREAKDOWN)
            out.append(
                f"{r.model} (batch {r.batch_size}) serves {(1 - r.ratio) * 100:.0f}% below the"
                f" in-process ceiling. At its best point (concurrency {p.concurrency},"
                f" {p.instances} instance(s)) a request spends {parts} (queue: waiting for a"
                f" free instance); moving tensors in and out is"
                f" {convert / max(compute, 1) * 100:.0f}% of the compute time, and perf_analyzer"
                f" and tritonserver share {cores} cores with the model.{_own_artifact(r)}"
                f"{_batching(r)} {_forward_slowdown(results, r)}".rstrip())
    return out


def _batching(r: CeilingRatio) -> str:
    """Did the dynamic batcher form the batches the ceiling was measured at?"""
    avg, top = r.served_point.get("server_avg_batch"), r.ceiling_point["batch_size"]
    if not avg or avg >= 0.9 * top:
        return ""
    p = r.served_point
    return (f" The dynamic batcher formed batches of {avg:.1f} rows on average against the"
            f" ceiling's {top}: with {p.concurrency} requests in flight and {p.instances}"
            " instance(s), requests arriving while a batch runs wait for the next one, so"
            " batches are rarely full (higher concurrency fills them, at the cost of latency).")


def _own_artifact(r: CeilingRatio) -> str:
    own = r.own_ceiling_point
    if not own or own is r.ceiling_point or own == r.ceiling_point:
        return ""
    return (f" Against its own artifact in-process ({own['kind']}, batch {own['batch_size']},"
            f" {own['throughput']:.1f} infer/s) it reaches {_x(r.own_ratio)}; the rest of the gap"
            f" is the {own['kind']} model being slower than the {r.ceiling_point['kind']} one.")


def _forward_slowdown(results: Results, r: CeilingRatio) -> str:
    """Compare one forward pass inside the server (compute infer at the lowest concurrency,
    where requests are not merged) with the same artifact, batch and threads in-process."""
    pts = sorted(results.measured(model=r.model, batch_size=r.batch_size),
                 key=lambda p: (p.concurrency, p.instances))
    if not pts:
        return ""
    p = pts[0]
    served_ms = (p.get("server_compute_infer_us") or 0) / 1000
    same = [c for c in results.ceiling if c["model"] == r.ceiling_point["model"]
            and c["kind"] == artifact_of(r.variant) and c["batch_size"] == r.batch_size
            and c["threads"] == p.threads]
    if not same or not served_ms or served_ms < 1.2 * same[0]["p50_ms"]:
        return ""
    backend = results.model_info(r.model).get("backend")
    stub = (" On the Python backend it also holds the round trip to the backend's stub process"
            " and execute()'s Python work (tensor conversion, responses), which the in-process"
            " loop does not pay." if backend == "python" else "")
    return (f"The server's compute infer is {served_ms / same[0]['p50_ms']:.1f}x the in-process"
            f" forward pass ({served_ms:.2f} ms at concurrency {p.concurrency} against"
            f" {same[0]['p50_ms']:.2f} ms with {p.threads} thread(s)).{stub} The model's"
            " intra-op threads also compete with the server's and the load generator's for the"
            " cores.")


def _why(e: Point, t: Point) -> str:
    """Name the server-side part that differs most between two points (µs per request)."""
    parts = [*BREAKDOWN, ("network_us", "network + server send/recv")]
    delta, label, key = max(((e.get(k) or 0) - (t.get(k) or 0), label, k) for k, label in parts)
    if delta <= 0:
        return "No server-side part is slower; the difference is within measurement noise."
    text = (f"The largest difference is {label}: {e.get(key) or 0:.0f} µs against"
            f" {t.get(key) or 0:.0f} µs per request")
    eb, tb = e.get("server_avg_batch"), t.get("server_avg_batch")
    if label == "compute infer" and eb and tb:
        per_e = e.get("server_compute_infer_us") / eb / 1000
        per_t = t.get("server_compute_infer_us") / tb / 1000
        return (f"{text}, for batches of {eb:g} against {tb:g} rows on average: {per_e:.2f}"
                f" against {per_t:.2f} ms per row.")
    return text + (" (requests wait for a busy instance)." if label == "queue" else ".")


def _artifacts_in_process(results: Results, c: Comparison) -> str:
    """Whether the artifacts themselves differ: the in-process eager and TorchScript ceilings."""
    eager = best_ceiling(results, c.base, c.batch_size, EAGER)
    ts = best_ceiling(results, c.base, c.batch_size, TORCHSCRIPT)
    if not eager or not ts:
        return ""
    r = eager["throughput"] / ts["throughput"]
    verdict = ("so the artifacts are on par and the gap comes from serving (how the dynamic"
               " batcher grouped requests, other work on the cores)" if r >= 0.97 else
               "so most of the gap is the eager model itself")
    return (f" In-process the eager artifact reaches {_x(r)} TorchScript's throughput"
            f" ({eager['throughput']:.1f} against {ts['throughput']:.1f} infer/s), {verdict}.")
