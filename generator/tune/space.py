"""The search space of one model directory: instances x threads x batching, each dimension
resolved from the flags and from what the model was built for.

    instances  1, 2, 4 ... up to the cores for KIND_CPU; 1, 2 per GPU for KIND_GPU (--instances)
    threads    1, 2, 4 ... up to cores / instances, never more threads than cores in all
               (--threads); KIND_GPU: the build's count only, unless --threads is given
    batching   the dynamic batcher off, and on with each queue delay (--queue-delays-us, default
               off,0,100,1000,5000), at each max batch size (the build's, and half of it while it
               still holds the stored sample batches; --max-batch-sizes), with and without a
               preferred batch of half the max batch (--no-preferred-batch-sizes drops those)

The build's own config is always part of the space: it is the default every result is compared
with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..repository.layout import BuiltModel
from ..errors import SpecError
from ..machine import cores
from .candidate import Batching, Candidate, default_of, is_gpu

OFF = None  # a queue delay meaning: no dynamic batching
DEFAULT_DELAYS_US: tuple[int | None, ...] = (OFF, 0, 100, 1000, 5000)
GPU_INSTANCES = (1, 2)


def powers_of_two(top: int) -> list[int]:
    """1, 2, 4 ... up to ``top``, and ``top`` itself."""
    out, n = [], 1
    while n <= top:
        out.append(n)
        n *= 2
    return sorted(set(out) | {max(1, top)})


@dataclass(frozen=True)
class Space:
    """What the flags ask to search (empty: the defaults above)."""

    instances: tuple[int, ...] = ()
    threads: tuple[int, ...] = ()
    delays_us: tuple[int | None, ...] = DEFAULT_DELAYS_US
    max_batch_sizes: tuple[int, ...] = ()
    preferred: bool = True

    def to_dict(self) -> dict:
        return {"instances": list(self.instances), "threads": list(self.threads),
                "delays_us": ["off" if d is OFF else d for d in self.delays_us],
                "max_batch_sizes": list(self.max_batch_sizes), "preferred": self.preferred}

    @classmethod
    def from_dict(cls, d: dict) -> "Space":
        return cls(tuple(d.get("instances", ())), tuple(d.get("threads", ())),
                   tuple(OFF if x == "off" else int(x) for x in d.get("delays_us", ())),
                   tuple(d.get("max_batch_sizes", ())), bool(d.get("preferred", True)))


@dataclass
class ModelSpace:
    """The resolved space of one model directory."""

    model: BuiltModel
    default: Candidate
    settings: list[tuple[int, int]] = field(default_factory=list)  # (instances, threads)
    batchings: list[Batching] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.settings) * len(self.batchings)

    def candidate(self, instances: int, threads: int, batching: Batching) -> Candidate:
        return self.default.with_(instances=instances, threads=threads).with_batching(batching)

    def grid(self) -> list[Candidate]:
        """Every candidate, the default first."""
        out = [self.default]
        for i, t in self.settings:
            for b in self.batchings:
                c = self.candidate(i, t, b)
                if c != self.default:
                    out.append(c)
        return out


def sample_rows(model: BuiltModel) -> int:
    """The largest batch among the stored sample cases: verify sends it, so the production
    config must accept it."""
    if model.config.max_batch_size <= 0:
        return 0
    try:
        return max(int(next(iter(samples.values())).shape[0]) for _, samples, _ in model.cases())
    except (ValueError, StopIteration):
        return 1


def _settings(model: BuiltModel, space: Space, default: Candidate, n_cores: int):
    gpu = is_gpu(model)
    counts = sorted(set(space.instances or (GPU_INSTANCES if gpu else powers_of_two(n_cores)))
                    | {default.instances})
    out = [(default.instances, default.threads)]
    for i in counts:
        top = max(1, n_cores // i)
        if gpu and not space.threads:
            # A GPU instance computes on its device: its CPU threads are not searched (the GPU
            # check measured 1 vs 16 within the noise of its windows), unless --threads asks.
            threads = [default.threads]
        else:
            threads = [t for t in (space.threads or powers_of_two(top))
                       if t * i <= max(n_cores, i)]
        for t in sorted(set(threads or [1]), reverse=True):
            if (i, t) not in out:
                out.append((i, t))
    return out


def _batchings(model: BuiltModel, space: Space, default: Candidate, request_batch: int):
    built = model.config.max_batch_size
    if built <= 0:
        return [default.batching]
    need = max(sample_rows(model), request_batch)
    if space.max_batch_sizes:
        bad = [m for m in space.max_batch_sizes if not need <= m <= built]
        if bad:
            raise SpecError(
                f"--max-batch-sizes {','.join(map(str, bad))} is outside what {model.name} can"
                f" serve: at most the {built} it was built for, and at least {need} (its stored"
                " sample batches, which verify sends, and the request batch size).",
                f"Pick values between {need} and {built}, or rebuild the model with a larger"
                " --max-batch-size.")
        sizes = list(space.max_batch_sizes)
    else:
        sizes = [built] + ([built // 2] if built // 2 >= max(need, 1) and built // 2 < built
                           else [])
    out = [default.batching]
    for m in sizes:
        for d in space.delays_us:
            if d is OFF:
                options = [Batching(False, 0, (), m)] if m == built else []
            else:
                options = [Batching(True, d, (), m)]
                if space.preferred and d > 0 and m // 2 >= max(2, request_batch):
                    options.append(Batching(True, d, (m // 2,), m))
            out += [b for b in options if b not in out]
    return out


def model_space(model: BuiltModel, space: Space, request_batch: int = 1,
                n_cores: int | None = None) -> ModelSpace:
    default = default_of(model)
    n = n_cores or cores()
    return ModelSpace(model, default, _settings(model, space, default, n),
                      _batchings(model, space, default, request_batch))
