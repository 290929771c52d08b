"""One deployment to measure: a model directory and how its config.pbtxt sets it up.

A candidate is a frozen value with a stable ``key`` (what results.json files its measurements
under, so that ``--resume`` finds them), and ``configure`` rewrites a copy of the model's config
for it -- the one rule used both for measuring and for writing the production repository.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..bench.workspace import configure_instances
from ..repository.layout import BuiltModel
from ..machine import cores
from ..spec import ModelSpec

PYTHON_THREADS = "threads"  # the Python-backend runtime's intra-op threads parameter
WARMUP_SIZES = "warmup_batch_sizes"  # python-compile: the batch sizes compiled at load


@dataclass(frozen=True)
class Batching:
    """How requests are grouped before they reach the model."""

    dynamic: bool  # Triton's dynamic batcher on
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_batch_size: int = 0  # 0: the model has no batch dimension

    def describe(self, built_max_batch_size: int | None = None) -> str:
        if not self.max_batch_size:
            return "no batch dimension"
        if not self.dynamic:
            text = "no dynamic batching"
        else:
            text = f"batching delay {_delay(self.max_queue_delay_us)}"
            if self.preferred_batch_sizes:
                text += f", preferred batch {','.join(map(str, self.preferred_batch_sizes))}"
        if built_max_batch_size is None or self.max_batch_size != built_max_batch_size:
            text += f", max batch {self.max_batch_size}"
        return text

    @property
    def key(self) -> str:
        if not self.dynamic:
            return f"off-m{self.max_batch_size}"
        pref = f"-p{'_'.join(map(str, self.preferred_batch_sizes))}" \
            if self.preferred_batch_sizes else ""
        return f"d{self.max_queue_delay_us}{pref}-m{self.max_batch_size}"


@dataclass(frozen=True)
class Candidate:
    model: str  # model directory in the repository (resnet18_python)
    variant: str  # libtorch, python, python-compile, ...
    instances: int  # per instance group (per GPU for a KIND_GPU group)
    threads: int  # intra-op threads per instance
    dynamic_batching: bool
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_batch_size: int = 0

    @property
    def batching(self) -> Batching:
        return Batching(self.dynamic_batching, self.max_queue_delay_us,
                        self.preferred_batch_sizes, self.max_batch_size)

    def with_batching(self, b: Batching) -> "Candidate":
        return dataclasses.replace(self, dynamic_batching=b.dynamic,
                                   max_queue_delay_us=b.max_queue_delay_us,
                                   preferred_batch_sizes=b.preferred_batch_sizes,
                                   max_batch_size=b.max_batch_size)

    def with_(self, **changes) -> "Candidate":
        return dataclasses.replace(self, **changes)

    @property
    def key(self) -> str:
        """Stable and readable: ``resnet18_python/i1-t2-d100-m8``."""
        return f"{self.model}/i{self.instances}-t{self.threads}-{self.batching.key}"

    def describe(self, built_max_batch_size: int | None = None) -> str:
        """``python-compile ×1, 2 threads, batching delay 2 ms``."""
        return (f"{self.variant} ×{self.instances}, {self.threads}"
                f" thread{'s' if self.threads != 1 else ''},"
                f" {self.batching.describe(built_max_batch_size)}")

    def complexity(self) -> tuple:
        """What makes a config less simple, in order: more instances, a batching delay,
        preferred batch sizes, more threads. Ties go to the smaller tuple."""
        delay = self.max_queue_delay_us if self.dynamic_batching else 0
        return (self.instances, delay, len(self.preferred_batch_sizes), self.threads)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values["preferred_batch_sizes"] = tuple(values.get("preferred_batch_sizes") or ())
        return cls(**values)


def _delay(us: int) -> str:
    if us >= 1000:
        return f"{us / 1000:g} ms"
    return f"{us} µs"


# ---------------------------------------------------------------------------------------------
# reading a built config, writing one


def _kinds(config) -> set[str]:
    from tritonclient.grpc import model_config_pb2

    names = model_config_pb2.ModelInstanceGroup.Kind.Name
    return {names(g.kind) for g in config.instance_group} or {"KIND_CPU"}


def is_gpu(model: BuiltModel) -> bool:
    return "KIND_GPU" in _kinds(model.config)


def built_threads(model: BuiltModel, instances: int) -> int:
    """Intra-op threads per instance of the config as built: the Python-backend runtime's rule
    (the ``threads`` parameter, or cores / CPU instances); a libtorch model's
    INTRA_OP_THREAD_COUNT, unset meaning the backend's default (all cores, shared by the
    instances -- what gen-repo writes when it pins the count)."""
    from ..bench.sweep import threads_per_instance
    from ..bench.workspace import BenchModel
    from ..runtime.model import threads_for

    threads = threads_per_instance(BenchModel(model))
    return threads or threads_for({}, [{"kind": "KIND_CPU", "count": instances}])


def default_of(model: BuiltModel) -> Candidate:
    """The candidate the repository holds now: the build's config, as it is."""
    config = model.config
    instances = max((g.count for g in config.instance_group), default=1) or 1
    dynamic = config.max_batch_size > 0 and config.HasField("dynamic_batching")
    return Candidate(
        model.name, model.variant or model.backend, instances, built_threads(model, instances),
        dynamic, config.dynamic_batching.max_queue_delay_microseconds if dynamic else 0,
        tuple(config.dynamic_batching.preferred_batch_size) if dynamic else (),
        config.max_batch_size)


def served_spec(model: BuiltModel, c: Candidate) -> ModelSpec:
    """The model's build spec as this candidate serves it (what the production repository's
    gen_repo.json records, and what verify checks the server against)."""
    gpu = is_gpu(model)
    spec = model.spec
    return spec.with_(cpu_instances=0 if gpu else c.instances,
                      gpu_instances=c.instances if gpu else 0, threads=c.threads,
                      dynamic_batching=c.dynamic_batching if c.max_batch_size else
                      spec.dynamic_batching,
                      max_queue_delay_us=c.max_queue_delay_us if c.dynamic_batching else
                      spec.max_queue_delay_us,
                      preferred_batch_sizes=c.preferred_batch_sizes,
                      max_batch_size=c.max_batch_size)


def configure(model: BuiltModel, c: Candidate, name: str | None = None):
    """A copy of ``model``'s ModelConfig set up for ``c`` (``name``: serve it under another
    model name). Instances and, for libtorch, weight sharing and INTRA_OP_THREAD_COUNT (always
    written: it is process-wide in the PyTorch backend) come from bench's rule; a Python-backend
    model gets its ``threads`` parameter; batching and max_batch_size are set or cleared; a
    python-compile model compiles for the batch sizes the new batching forms."""
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    config.CopyFrom(model.config)
    if name:
        config.name = name
    configure_instances(model, config, c.instances, c.threads)
    if model.backend == "python":
        config.parameters[PYTHON_THREADS].string_value = str(c.threads)
    config.max_batch_size = c.max_batch_size
    if c.dynamic_batching and c.max_batch_size:
        batcher = config.dynamic_batching  # keeps the build's queue policy
        batcher.max_queue_delay_microseconds = c.max_queue_delay_us
        del batcher.preferred_batch_size[:]
        batcher.preferred_batch_size.extend(c.preferred_batch_sizes)
    else:
        config.ClearField("dynamic_batching")
    if WARMUP_SIZES in config.parameters and model.built_by_gen_repo:
        from ..variants.python_compile import warmup_batch_sizes

        config.parameters[WARMUP_SIZES].string_value = warmup_batch_sizes(served_spec(model, c))
    return config
