"""config.pbtxt: rendered from templates/config.pbtxt.j2, then parsed into Triton's ModelConfig.

The protobuf parse is the schema check: a config the parser rejects is a gen-repo bug caught
here, never by the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import __version__, dtypes
from .layout import parse_config
from ..spec import ModelSpec

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class Engine:
    """How Triton runs a variant: a platform (pytorch_libtorch) or a backend (python)."""

    key: str  # "platform" | "backend"
    value: str


def jinja_environment(folder: Path):
    """How every template of the project is rendered: undefined names are errors, block tags
    leave no blank lines, nothing is HTML-escaped."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)


@lru_cache(maxsize=1)
def _template():
    return jinja_environment(TEMPLATES).get_template("config.pbtxt.j2")


def instance_groups(spec: ModelSpec) -> list[dict]:
    groups = []
    if spec.gpu_instances:
        groups.append({"name": f"{spec.name}_gpu", "kind": "KIND_GPU",
                       "count": spec.gpu_instances, "gpus": list(spec.gpus)})
    if spec.cpu_instances:
        groups.append({"name": f"{spec.name}_cpu", "kind": "KIND_CPU",
                       "count": spec.cpu_instances, "gpus": []})
    return groups


def tensor_entries(tensors, batching: bool) -> list[dict]:
    """The config.pbtxt entries of inputs or outputs: name, data type, dims and reshape (None:
    no reshape), as Triton's JSON model config spells them."""
    out = []
    for t in tensors:
        reshape = t.reshape(batching)
        out.append({"name": t.name, "data_type": dtypes.lookup(t.dtype).triton,
                    "dims": list(t.api_dims),
                    "reshape": None if reshape is None else {"shape": list(reshape)}})
    return out


def render(spec: ModelSpec, variant: str, model_name: str, engine: Engine,
           parameters: dict[str, str]):
    """Return (text, ModelConfig) for one variant's config.pbtxt."""
    dynamic = None
    if spec.batching and spec.dynamic_batching:
        policy = None
        if spec.max_queue_size or spec.queue_timeout_us:
            policy = {"max_queue_size": spec.max_queue_size, "timeout_us": spec.queue_timeout_us}
        dynamic = {"preferred_batch_sizes": list(spec.preferred_batch_sizes),
                   "max_queue_delay_us": spec.max_queue_delay_us, "queue_policy": policy}
    for key, value in parameters.items():
        if '"' in value or "\\" in value or "\n" in value:
            raise ValueError(f"config parameter {key}={value!r} needs escaping")  # a bug
    text = _template().render(
        gen_repo_version=__version__, variant=variant, name=model_name,
        engine_key=engine.key, engine=engine.value, max_batch_size=spec.max_batch_size,
        inputs=tensor_entries(spec.inputs, spec.batching),
        outputs=tensor_entries(spec.outputs, spec.batching),
        instance_groups=instance_groups(spec), dynamic_batching=dynamic,
        parameters=sorted(parameters.items()))
    return text, parse_config(text, f"generated config of {model_name}")
