"""config.pbtxt: made as Triton's ModelConfig protobuf, and written by one function.

``model_config`` makes a variant's config from its spec (the dict is Triton's JSON model config,
parsed into the protobuf: the parse is the schema check). ``write_config`` is the only writer of
config.pbtxt -- build, bench's copies, tune's candidates and winners and pack-env all go through
it: the text is the protobuf's text format under one comment line, parsed back before it is
written, and the model's file hashes (gen_repo.sha256) are brought up to date with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import __version__, dtypes, releases
from ..errors import RepositoryError
from ..spec import ModelSpec
from . import manifest
from .files import write_atomic

CONFIG = "config.pbtxt"
PYTORCH_PLATFORMS = ("pytorch_libtorch", "torch_aoti")  # the platforms of the PyTorch backend


@dataclass(frozen=True)
class Engine:
    """How Triton runs a variant: a platform (pytorch_libtorch) or a backend (python)."""

    key: str  # "platform" | "backend"
    value: str


def build_header(variant: str) -> str:
    return f'Written by gen-repo {__version__} for variant "{variant}". Rebuild instead of editing.'


def instance_groups(spec: ModelSpec) -> list[dict]:
    groups = []
    if spec.gpu_instances:
        groups.append({"name": f"{spec.name}_gpu", "kind": "KIND_GPU",
                       "count": spec.gpu_instances, "gpus": list(spec.gpus)})
    if spec.cpu_instances:
        groups.append({"name": f"{spec.name}_cpu", "kind": "KIND_CPU",
                       "count": spec.cpu_instances})
    return groups


def tensor_entries(tensors, batching: bool) -> list[dict]:
    """The config.pbtxt entries of inputs or outputs: name, data type, dims and reshape (absent:
    no reshape), as Triton's JSON model config spells them."""
    out = []
    for t in tensors:
        entry = {"name": t.name, "data_type": dtypes.lookup(t.dtype).triton,
                 "dims": list(t.api_dims)}
        reshape = t.reshape(batching)
        if reshape is not None:
            entry["reshape"] = {"shape": list(reshape)}
        out.append(entry)
    return out


def _dynamic_batching(spec: ModelSpec) -> dict | None:
    if not (spec.batching and spec.dynamic_batching):
        return None
    batcher = {"preferred_batch_size": list(spec.preferred_batch_sizes),
               "max_queue_delay_microseconds": spec.max_queue_delay_us}
    if spec.max_queue_size or spec.queue_timeout_us:
        batcher["default_queue_policy"] = {
            "max_queue_size": spec.max_queue_size,
            "default_timeout_microseconds": spec.queue_timeout_us, "timeout_action": "REJECT"}
    return batcher


def model_config(spec: ModelSpec, model_name: str, engine: Engine, parameters: dict[str, str]):
    """A variant's ModelConfig: ``spec``'s tensors, batching and instance groups, run by
    ``engine``, with ``parameters`` (string values)."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    d = {"name": model_name, engine.key: engine.value, "max_batch_size": spec.max_batch_size,
         "input": tensor_entries(spec.inputs, spec.batching),
         "output": tensor_entries(spec.outputs, spec.batching),
         "instance_group": instance_groups(spec),
         "parameters": {k: {"string_value": v} for k, v in sorted(parameters.items())}}
    batcher = _dynamic_batching(spec)
    if batcher is not None:
        d["dynamic_batching"] = batcher
    config = model_config_pb2.ModelConfig()
    try:
        json_format.ParseDict(d, config)
    except json_format.ParseError as e:  # pragma: no cover - a gen-repo bug
        raise RepositoryError(f"the config of {model_name} is not a valid ModelConfig: {e}.",
                              "Report this gen-repo bug.") from e
    lacking = releases.missing(spec.triton_release, release_needs(config))
    if lacking:  # a variant wrote what its target release cannot load: a gen-repo bug
        raise RepositoryError(
            f"the config of {model_name} uses {lacking[0].what}, which Triton"
            f" {lacking[0].since} brought, but it is written for Triton {spec.triton_release}.",
            "Report this gen-repo bug; nothing was written.")
    return config


def release_needs(config) -> list[releases.Feature]:
    """The features of the release table that a server needs to serve ``config`` (a
    ModelConfig): the torch_aoti platform, batching on it, BF16 tensors on the PyTorch backend.
    Its tensor names are none of them: before 26.05 torch_aoti binds names that are not
    INPUT__i/OUTPUT__i by config order."""
    from tritonclient.grpc import model_config_pb2

    needs = []
    if config.platform == "torch_aoti":
        needs.append(releases.TORCH_AOTI)
        if config.max_batch_size > 0:
            needs.append(releases.AOTI_BATCHING)
    if config.platform in PYTORCH_PLATFORMS and any(
            t.data_type == model_config_pb2.TYPE_BF16 for t in (*config.input, *config.output)):
        needs.append(releases.PYTORCH_BF16)
    return needs


# The spec's fields config.pbtxt holds: gen_repo.json's spec leaves them out, and a model's spec
# reads them from its config (config_facts), so bench, tune and pack-env change them in one place.
CONFIG_FIELDS = ("max_batch_size", "dynamic_batching", "preferred_batch_sizes",
                 "max_queue_delay_us", "max_queue_size", "queue_timeout_us", "cpu_instances",
                 "gpu_instances", "gpus")


def record_spec(spec: ModelSpec) -> dict:
    """``spec`` as gen_repo.json records it: without the fields its config.pbtxt holds."""
    return {k: v for k, v in spec.to_dict().items() if k not in CONFIG_FIELDS}


def config_facts(config, spec: ModelSpec) -> ModelSpec:
    """``spec`` with the fields of CONFIG_FIELDS as ``config`` (a ModelConfig) says them."""
    from tritonclient.grpc import model_config_pb2

    kinds = model_config_pb2.ModelInstanceGroup
    cpu = [g for g in config.instance_group if g.kind in (kinds.KIND_CPU, kinds.KIND_AUTO)]
    gpu = [g for g in config.instance_group if g.kind == kinds.KIND_GPU]
    facts = {"max_batch_size": config.max_batch_size,
             "cpu_instances": sum(g.count or 1 for g in cpu),
             "gpu_instances": max((g.count or 1 for g in gpu), default=0),
             "gpus": tuple(gpu[0].gpus) if gpu else ()}
    if not config.instance_group:  # Triton's default: one instance (gen-repo writes groups)
        facts["cpu_instances"] = 1
    if config.max_batch_size > 0:
        batcher = config.dynamic_batching
        facts["dynamic_batching"] = config.HasField("dynamic_batching")
        if facts["dynamic_batching"]:
            facts.update(preferred_batch_sizes=tuple(batcher.preferred_batch_size),
                         max_queue_delay_us=batcher.max_queue_delay_microseconds,
                         max_queue_size=batcher.default_queue_policy.max_queue_size,
                         queue_timeout_us=batcher.default_queue_policy
                         .default_timeout_microseconds)
    return spec.with_(**facts)


def parse_config(text: str, where: str = CONFIG):
    """Parse config.pbtxt text into Triton's ModelConfig protobuf (the schema validator)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise RepositoryError(f"{where} is not a valid Triton ModelConfig: {e}.",
                              "Rebuild the model with gen-repo build.") from e
    return config


def config_text(config, header: str) -> str:
    """``config`` as config.pbtxt text: one ``# header`` line, then the protobuf text format."""
    from google.protobuf import text_format

    if "\n" in header:
        raise ValueError(f"a config header is one line: {header!r}")  # a bug
    text = f"# {header}\n" + text_format.MessageToString(config)
    if parse_config(text, f"the config of {config.name}") != config:  # pragma: no cover
        raise RepositoryError(f"the config of {config.name} does not read back as written.",
                              "Report this gen-repo bug; nothing was written.")
    return text


def write_config(model_dir: Path, config, header: str) -> str:
    """Write ``model_dir``/config.pbtxt (atomically) and its hash in the model's
    gen_repo.sha256, if it has one; return the text."""
    text = config_text(config, header)
    write_atomic(Path(model_dir) / CONFIG, text)
    manifest.update(model_dir, CONFIG)
    return text
