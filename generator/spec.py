"""ModelSpec: the single source of truth for what gets built.

Every build option is declared once in ``OPTIONS`` (key, kind, default, help); the CLI flags of
``gen-repo build``, the keys of a spec file (TOML) and the defaults of ``ModelSpec`` all come from
that table, so "every flag is also a key of the spec file" holds by construction. ``ModelSpec``
has one field per option (the ``input`` option fills ``inputs``), with its type, plus ``outputs``,
which the build infers.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import dtypes, releases
from .errors import SpecError, did_you_mean

DEFAULT_SOURCE = "torchvision:resnet18"
# Every variant gen-repo can build, by name (generator.variants.registry maps each to its class
# and checks at import that the two agree).
VARIANT_NAMES = ("libtorch", "python", "python-ts", "python-aoti", "python-compile", "aoti")
DEFAULT_VARIANTS = ("libtorch", "python")
# compute dtype -> default parity tolerance (atol and rtol) against the float32 eager model
COMPUTE_DTYPES = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}
IMAGE_INPUT = "input"  # name of the default torchvision image input
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``dims`` exclude the batch dimension when batching is on; -1 = dynamic."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    # Inclusive-exclusive value range used to make sample inputs for integer inputs (ids must stay
    # inside an embedding table). Ignored for float and bool.
    low: int = 0
    high: int = 10

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["dims"]), d.get("low", 0), d.get("high", 10))

    def __str__(self) -> str:
        return f"{self.name}:{self.dtype}:{'x'.join(map(str, self.dims)) or 'scalar'}"

    # -- how the tensor is served (one rule, used by config.pbtxt, samples, verify and bench) --
    @property
    def api_dims(self) -> tuple[int, ...]:
        """Dims a client sends or receives after the batch dim, and config.pbtxt's ``dims``.

        Triton has no 0-d tensors (a config's ``dims`` may not be empty): a 0-d tensor, i.e. one
        value per row (``[B]`` in the model) or a scalar without batching, travels as one
        element: ``[B, 1]``, or ``[1]`` with ``--max-batch-size 0``.
        """
        return self.dims or (1,)

    def reshape(self, batching: bool) -> tuple[int, ...] | None:
        """config.pbtxt's ``reshape`` (None: none): the shape the model gets instead of
        ``api_dims``. A per-row scalar has ``dims: [1] reshape { shape: [] }``: Triton checks
        the request against ``[-1, 1]``, hands the model ``[B]``, and answers ``[B, 1]``.
        Without batching Triton refuses an empty reshape (no scalar tensors), so the serving
        wrapper turns the one-element tensor into the model's 0-d one."""
        return () if batching and not self.dims else None

    def artifact_dims(self, batching: bool) -> tuple[int, ...]:
        """Dims (after the batch dim) of the tensor the served artifact takes or returns: what
        Triton hands the backend once the config's reshape is applied."""
        reshape = self.reshape(batching)
        return self.api_dims if reshape is None else reshape


@dataclass(frozen=True)
class Option:
    key: str
    kind: str  # str | int | float | bool | ints | strs | inputs
    default: Any
    help: str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


DEFAULT_REPO = "model_repository"  # where build writes and the other commands read
OPTIONS: tuple[Option, ...] = (
    Option("source", "str", DEFAULT_SOURCE,
           "model source: torchvision:<name>, package.module:factory or path/to/file.py:factory",
           "SOURCE"),
    Option("weights", "str", None, "state_dict file (torch.save) loaded into the model", "FILE"),
    Option("name", "str", None, "model name in the repository (default: from the source)", "NAME"),
    Option("input", "inputs", (),
           "input as NAME:DTYPE:DIMS[:LOW..HIGH], dims without the batch dim joined by x or ',',"
           " -1 = dynamic; repeat for several inputs (default for torchvision image models:"
           " input:float32:3x224x224)", "SPEC"),
    Option("inputs_by_position", "bool", False,
           "pass the inputs to forward() by position, in --input order: for a forward() whose"
           " parameter names cannot be read (forward(*args), a C++ extension), where gen-repo"
           " cannot tell the order itself and a swap would go unnoticed"),
    Option("example_inputs", "str", None,
           "a .npz of example inputs (one array per input name, with the batch dim) used instead"
           " of random samples", "FILE"),
    Option("check_lengths", "ints", (),
           "the two lengths every -1 axis has in the checks' sample cases, e.g. 16000,12345 for"
           " a model that needs a minimum length (default: 8,5); the output sizes are also"
           " probed at longer lengths co-prime to them, never shorter than the shorter one",
           "L1,L2"),
    Option("out", "str", DEFAULT_REPO, "output repository directory", "DIR"),
    Option("variants", "strs", DEFAULT_VARIANTS,
           f"variants to build, comma separated: {', '.join(VARIANT_NAMES)}", "LIST"),
    Option("triton_release", "str", releases.EMBEDDED_RELEASE,
           "the Triton release the configs are written for, as its NGC image tag names it"
           " (26.06 for nvcr.io/nvidia/tritonserver:26.06-py3): it decides what each variant's"
           f" config may use (aoti: refused before {releases.TORCH_AOTI.since}, tensors named by"
           f" the package's call spec from {releases.AOTI_CALL_SPEC_NAMES.since}, batching from"
           f" {releases.AOTI_BATCHING.since}; BF16 tensors on the PyTorch backend from"
           f" {releases.PYTORCH_BF16.since}); see docs/triton-releases.md (default:"
           f" {releases.EMBEDDED_RELEASE}, the embedded server's)", "YY.MM"),
    Option("max_batch_size", "int", 8,
           "Triton max_batch_size; 0 = the model has no batch dimension", "N"),
    Option("dynamic_batching", "bool", True, "enable Triton's dynamic batcher (when batching)"),
    Option("preferred_batch_sizes", "ints", (), "dynamic batcher preferred batch sizes", "LIST"),
    Option("max_queue_delay_us", "int", 100, "dynamic batcher max queue delay in microseconds", "US"),
    Option("max_queue_size", "int", 0,
           "dynamic batcher queue limit: requests beyond it are rejected at once (0 = unbounded)",
           "N"),
    Option("queue_timeout_us", "int", 0,
           "reject a request that waited in the queue longer than this (0 = never)", "US"),
    Option("cpu_instances", "int", 1, "number of KIND_CPU instances (0 = none)", "N"),
    Option("gpu_instances", "int", 0, "number of KIND_GPU instances per listed GPU (0 = none)", "N"),
    Option("gpus", "ints", (), "GPU ids for the KIND_GPU instance group (default: all)", "LIST"),
    Option("threads", "int", 0,
           "intra-op threads per instance (0 = auto: CPU cores / CPU instances)", "N"),
    Option("script", "bool", False, "use torch.jit.script instead of torch.jit.trace"),
    Option("accept_trace_warnings", "bool", False,
           "ship a torch.jit.trace that raised TracerWarnings (it still has to match eager on"
           " both sample cases), on your own responsibility: the warnings say it may answer"
           " wrongly for inputs that take another branch. Default: torch.jit.script instead, or"
           " the TorchScript variants are refused"),
    Option("mapped_weights", "bool", True,
           "python variants: save the weights apart from the archive (1/weights.pt) and map them"
           " read-only, so that the instances of a model share one copy in memory; off: inside"
           " model.package, one copy per instance"),
    Option("deferred_imports", "bool", True,
           "python variants: import torch._dynamo only when the model first reads it (torchvision"
           " imports it at load for one function: about 1 s of each instance's 2.6 s load of"
           " resnet50 on 2 cores); off: every import at load"),
    Option("compile_mode", "str", "default",
           "torch.compile mode of the python-compile variant: default, reduce-overhead,"
           " max-autotune, max-autotune-no-cudagraphs", "MODE"),
    Option("dtype", "str", "float32",
           "compute dtype of the model: float32, float16 (fp16) or bfloat16 (bf16); float inputs"
           " and outputs keep their declared dtypes (cast at the model's boundary) and the parity"
           " tolerances widen to fit unless --atol/--rtol are given", "DTYPE"),
    Option("batch_axis", "int", 0,
           "axis of the batch dim in the model's own inputs and outputs (served tensors are"
           " always batch-first; the wrapper moves the axis)", "N"),
    Option("atol", "float", 1e-4, "absolute tolerance of parity checks", "X"),
    Option("rtol", "float", 1e-4, "relative tolerance of parity checks", "X"),
    Option("seed", "int", 0, "seed for random init and sample inputs", "N"),
    Option("force", "bool", False, "replace existing model directories of the same name"),
)
OPTION_BY_KEY = {o.key: o for o in OPTIONS}


def _default(key: str) -> Any:
    """The option's default (immutable: a str, number, bool, tuple or None)."""
    return OPTION_BY_KEY[key].default


@dataclass(frozen=True)
class ModelSpec:
    source: str = _default("source")
    weights: str | None = _default("weights")
    name: str = ""  # build_spec sets it: --name, else one made from the source
    inputs: tuple[TensorSpec, ...] = _default("input")
    outputs: tuple[TensorSpec, ...] = ()  # inferred by running the model
    inputs_by_position: bool = _default("inputs_by_position")
    example_inputs: str | None = _default("example_inputs")
    check_lengths: tuple[int, ...] = _default("check_lengths")
    out: str = _default("out")
    variants: tuple[str, ...] = _default("variants")
    triton_release: str = _default("triton_release")
    max_batch_size: int = _default("max_batch_size")
    dynamic_batching: bool = _default("dynamic_batching")
    preferred_batch_sizes: tuple[int, ...] = _default("preferred_batch_sizes")
    max_queue_delay_us: int = _default("max_queue_delay_us")
    max_queue_size: int = _default("max_queue_size")
    queue_timeout_us: int = _default("queue_timeout_us")
    cpu_instances: int = _default("cpu_instances")
    gpu_instances: int = _default("gpu_instances")
    gpus: tuple[int, ...] = _default("gpus")
    threads: int = _default("threads")
    script: bool = _default("script")
    accept_trace_warnings: bool = _default("accept_trace_warnings")
    mapped_weights: bool = _default("mapped_weights")
    deferred_imports: bool = _default("deferred_imports")
    compile_mode: str = _default("compile_mode")
    dtype: str = _default("dtype")
    batch_axis: int = _default("batch_axis")
    atol: float = _default("atol")
    rtol: float = _default("rtol")
    seed: int = _default("seed")
    force: bool = _default("force")
    # inferred by running the model: "no_grad" for one that takes gradients inside forward(),
    # which inference mode forbids (the runtime's forward_context)
    forward_mode: str = "inference_mode"

    # -- derived facts -----------------------------------------------------------------------
    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def model_dir_name(self, variant: str) -> str:
        return f"{self.name}_{variant.replace('-', '_')}"

    def with_(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        d["inputs"] = tuple(TensorSpec.from_dict(t) for t in d.get("inputs", ()))
        d["outputs"] = tuple(TensorSpec.from_dict(t) for t in d.get("outputs", ()))
        for k in ("variants", "preferred_batch_sizes", "gpus", "check_lengths"):
            if k in d:
                d[k] = tuple(d[k])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------------------------------------
# parsing helpers


def parse_dims(text: str, where: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "scalar"):
        return ()
    parts = re.split(r"[x,]", text)
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError as e:
        raise SpecError(
            f"{where}: dims '{text}' are not whole numbers.",
            "Write dims without the batch dim as e.g. 3x224x224 or 128 or -1 (dynamic).") from e
    for d in dims:
        if d == 0 or d < -1:
            raise SpecError(f"{where}: dim {d} in '{text}' is invalid.",
                            "Each dim is a positive size or -1 for a dynamic axis.")
    return dims


def check_tensor_name(name: str, where: str) -> None:
    if not _NAME_RE.match(name) or "__" in name or keyword.iskeyword(name):
        raise SpecError(
            f"{where}: tensor name '{name}' is not usable.",
            "Use a Python identifier made of letters, digits and single underscores, starting with"
            " a letter (it becomes the forward() argument name of the TorchScript model).")


def parse_input(text: str) -> TensorSpec:
    """NAME:DTYPE:DIMS[:LOW..HIGH] -> TensorSpec."""
    where = f"--input '{text}'"
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise SpecError(f"{where} does not have the form NAME:DTYPE:DIMS.",
                        "Example: --input tokens:int64:-1 --input image:float32:3x224x224"
                        " (optional value range for ints: tokens:int64:-1:0..1000).")
    name, dtype_name, dims_text = (p.strip() for p in parts[:3])
    check_tensor_name(name, where)
    try:
        dt = dtypes.lookup(dtype_name)
    except KeyError as e:
        raise SpecError(f"{where}: unknown dtype '{dtype_name}'"
                        f"{did_you_mean(dtype_name, dtypes.names())}.",
                        f"Known dtypes: {', '.join(dtypes.names())}.") from e
    low, high = 0, 10
    if len(parts) == 4:
        m = re.fullmatch(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*", parts[3])
        if not m or int(m.group(1)) >= int(m.group(2)):
            raise SpecError(f"{where}: value range '{parts[3]}' is not LOW..HIGH with LOW < HIGH.",
                            "Example: tokens:int64:-1:0..30000 (HIGH is exclusive).")
        low, high = int(m.group(1)), int(m.group(2))
    return TensorSpec(name, dt.name, parse_dims(dims_text, where), low, high)


def _input_from_table(item: Any) -> TensorSpec:
    if isinstance(item, TensorSpec):
        return item
    if isinstance(item, str):
        return parse_input(item)
    if isinstance(item, dict):
        unknown = set(item) - {"name", "dtype", "dims", "low", "high"}
        if unknown or not {"name", "dtype", "dims"} <= set(item):
            raise SpecError(f"input table {item!r} needs keys name, dtype, dims (and optional low,"
                            f" high); got {sorted(item)}.",
                            'Example: [[input]] name = "tokens" dtype = "int64" dims = [-1]')
        dims = item["dims"]
        dims_text = dims if isinstance(dims, str) else "x".join(str(d) for d in dims)
        text = f"{item['name']}:{item['dtype']}:{dims_text}"
        if "low" in item or "high" in item:
            text += f":{item.get('low', 0)}..{item.get('high', 10)}"
        return parse_input(text)
    raise SpecError(f"input entry {item!r} is neither a string nor a table.",
                    'Write input = ["tokens:int64:-1"] or [[input]] tables.')


def coerce(opt: Option, value: Any, where: str) -> Any:
    """Convert a CLI string or spec-file value to the option's type, with a clear error."""
    if value is None:
        return None
    try:
        if opt.kind == "str":
            if not isinstance(value, (str, Path)):
                raise TypeError
            return str(value)
        if opt.kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if opt.kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if opt.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise TypeError
        if opt.kind in ("ints", "strs"):
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)):
                raise TypeError
            items = [i.strip() if isinstance(i, str) else i for i in items]
            items = [i for i in items if i != ""]
            if opt.kind == "ints":
                if any(isinstance(i, bool) for i in items):
                    raise TypeError
                return tuple(int(i) for i in items)
            if not all(isinstance(i, str) for i in items):
                raise TypeError
            return tuple(items)
        if opt.kind == "inputs":
            items = [value] if isinstance(value, (str, dict)) else value
            if not isinstance(items, (list, tuple)):
                raise TypeError
            return tuple(_input_from_table(i) for i in items)
    except (TypeError, ValueError) as e:
        if isinstance(e, SpecError):
            raise
        raise SpecError(f"{where}: value {value!r} is not a valid {opt.kind} for '{opt.key}'.",
                        f"{opt.flag} {opt.metavar or ''}: {opt.help}.") from e
    raise AssertionError(f"unknown option kind {opt.kind}")  # a bug, not user input


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML spec file into {option key: value}, rejecting unknown keys with a did-you-mean."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise SpecError(f"spec file '{p}' does not exist.", "Check the --config path.") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, IsADirectoryError) as e:
        raise SpecError(f"spec file '{p}' is not valid TOML: {e}.",
                        "Fix the syntax; keys are the build flags without '--', e.g."
                        ' max_batch_size = 16, source = "torchvision:resnet18".') from e
    values: dict[str, Any] = {}
    for raw_key, value in raw.items():
        key = raw_key.replace("-", "_")
        if key == "inputs":
            key = "input"
        opt = OPTION_BY_KEY.get(key)
        if opt is None:
            raise SpecError(f"spec file '{p}': unknown key '{raw_key}'"
                            f"{did_you_mean(key, OPTION_BY_KEY)}.",
                            f"Known keys: {', '.join(OPTION_BY_KEY)}.")
        values[key] = coerce(opt, value, f"spec file '{p}', key '{raw_key}'")
    return values


def build_spec(values: dict[str, Any]) -> ModelSpec:
    """Option values (already coerced) -> a validated ModelSpec (outputs still empty)."""
    v = {o.key: o.default for o in OPTIONS}
    v.update({k: val for k, val in values.items() if val is not None})
    try:
        v["dtype"] = dtypes.lookup(v["dtype"]).name
    except KeyError as e:
        raise SpecError(f"--dtype {v['dtype']!r} is unknown{did_you_mean(v['dtype'], COMPUTE_DTYPES)}.",
                        f"Use one of {', '.join(COMPUTE_DTYPES)}.") from e
    if v["dtype"] not in COMPUTE_DTYPES:
        raise SpecError(f"--dtype {v['dtype']} is not a compute dtype.",
                        f"Use one of {', '.join(COMPUTE_DTYPES)}.")
    for key in ("atol", "rtol"):  # lower precision: wider default tolerances
        if values.get(key) is None:
            v[key] = max(v[key], COMPUTE_DTYPES[v["dtype"]])
    source = v["source"]
    name = v["name"] or default_name(source)
    check_model_name(name)
    fields = {o.key: v[o.key] for o in OPTIONS if o.key != "input"}  # one field per option
    spec = ModelSpec(**{
        **fields, "name": name, "inputs": tuple(v["input"]),
        "variants": tuple(dict.fromkeys(v["variants"])),
        "preferred_batch_sizes": tuple(v["preferred_batch_sizes"]), "gpus": tuple(v["gpus"]),
        "check_lengths": tuple(v["check_lengths"]),
        "triton_release": releases.parse(v["triton_release"])})
    validate(spec)
    return spec


def default_name(source: str) -> str:
    tail = source.split(":", 1)[-1] if ":" in source else source
    tail = Path(tail).stem if tail.endswith(".py") else tail.rsplit(".", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_]", "_", tail).strip("_") or "model"
    return name if name[0].isalpha() else f"m_{name}"


def check_model_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SpecError(f"model name '{name}' is not usable as a directory name.",
                        "Use letters, digits, '_', '-' and '.', e.g. --name ranker.")


def validate(spec: ModelSpec) -> None:
    for variant in spec.variants:
        if variant not in VARIANT_NAMES:
            raise SpecError(f"unknown variant '{variant}'{did_you_mean(variant, VARIANT_NAMES)}.",
                            f"Known variants: {', '.join(VARIANT_NAMES)}.")
    if not spec.variants:
        raise SpecError("no variant selected.", f"Pass --variants {','.join(DEFAULT_VARIANTS)}.")
    if spec.max_batch_size < 0:
        raise SpecError(f"--max-batch-size {spec.max_batch_size} is negative.",
                        "Use 0 for a model without a batch dimension, or a positive size.")
    for key in ("cpu_instances", "gpu_instances", "threads", "max_queue_delay_us",
                "max_queue_size", "queue_timeout_us"):
        if getattr(spec, key) < 0:
            raise SpecError(f"--{key.replace('_', '-')} {getattr(spec, key)} is negative.",
                            "Use 0 or a positive number.")
    if (spec.max_queue_size or spec.queue_timeout_us) and not (spec.batching
                                                               and spec.dynamic_batching):
        raise SpecError("--max-queue-size / --queue-timeout-us need the dynamic batcher.",
                        "Keep --dynamic-batching on and --max-batch-size above 0.")
    if spec.cpu_instances == 0 and spec.gpu_instances == 0:
        raise SpecError("no instances: --cpu-instances and --gpu-instances are both 0.",
                        "Give at least one, e.g. --cpu-instances 1.")
    if spec.gpus and spec.gpu_instances == 0:
        raise SpecError(f"--gpus {','.join(map(str, spec.gpus))} given without --gpu-instances.",
                        "Add --gpu-instances N (instances per listed GPU).")
    if any(g < 0 for g in spec.gpus):
        raise SpecError(f"--gpus {spec.gpus}: GPU ids are >= 0.", "Example: --gpus 0,1")
    for b in spec.preferred_batch_sizes:
        if not 0 < b <= max(spec.max_batch_size, 0):
            raise SpecError(f"preferred batch size {b} is outside 1..max_batch_size"
                            f" ({spec.max_batch_size}).",
                            "Lower it or raise --max-batch-size.")
    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if spec.compile_mode not in modes:
        raise SpecError(f"--compile-mode {spec.compile_mode!r} is unknown"
                        f"{did_you_mean(spec.compile_mode, modes)}.", f"Use one of {', '.join(modes)}.")
    if spec.batch_axis < 0:
        raise SpecError(f"--batch-axis {spec.batch_axis} is negative.", "Use 0, 1, ...")
    if spec.batch_axis and not spec.batching:
        raise SpecError(f"--batch-axis {spec.batch_axis} given with --max-batch-size 0.",
                        "A model without Triton batching has no batch axis to move.")
    check_lengths(spec.check_lengths)
    if spec.atol < 0 or spec.rtol < 0:
        raise SpecError("tolerances must be >= 0.", "Example: --atol 1e-4 --rtol 1e-3")
    names = [t.name for t in spec.inputs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SpecError(f"input names repeat: {sorted(dup)}.", "Give each --input its own name.")


def check_lengths(lengths: tuple[int, ...]) -> None:
    """--check-lengths: none (the defaults), or two different lengths of at least 1."""
    if lengths and (len(lengths) != 2 or min(lengths) < 1 or lengths[0] == lengths[1]):
        raise SpecError(f"--check-lengths {','.join(map(str, lengths))} is not two different"
                        " lengths of at least 1.",
                        "Give the two lengths the sample cases use for every -1 axis, e.g."
                        " --check-lengths 16000,12345: two, so that a shape baked into an"
                        " export is caught.")


def merge_values(file_values: dict[str, Any], cli_values: dict[str, Any]) -> dict[str, Any]:
    """CLI flags override the spec file."""
    merged = dict(file_values)
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    return merged
