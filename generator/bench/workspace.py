"""The benchmark's private copy of a model repository: what it serves and may change.

The user's repository is never modified. Model directories are copied with their artifacts
hard-linked (copied across file systems), and every file bench changes (config.pbtxt for another
instance count) is replaced atomically, which breaks the link instead of writing through it.

When a libtorch model cannot be served (no PyTorch backend) and its repository has no python-ts
sibling, the python-ts variant is derived here from the libtorch model.pt, so that TorchScript
can still be compared with the eager model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import RepositoryError
from ..repository import layout, manifest
from ..repository.config import write_config
from ..repository.files import link_or_copy
from ..repository.layout import BuiltModel

LIBTORCH, PYTHON, PYTHON_TS, FLOOR = "libtorch", "python", "python-ts", "floor"
DERIVED_NOTE = "derived by gen-repo bench from {src}"
FLOOR_MODEL = Path(__file__).resolve().parent.parent / "runtime" / "floor.py"
FLOOR_LABEL = ("the Python backend's floor: an identity model (inputs read, zeros answered, no"
               " torch) -- no Python-backend model can be faster")


@dataclass
class BenchModel:
    """One model directory of the private copy, with what the report says about it."""

    built: BuiltModel
    derived_from: str = ""  # name of the libtorch model a derived python-ts came from

    @property
    def name(self) -> str:
        return self.built.name

    @property
    def variant(self) -> str:
        return self.built.variant or ("libtorch" if self.built.backend == "pytorch" else "")

    @property
    def base_name(self) -> str:
        """The model's name without the variant (resnet18), from the build record."""
        return (self.built.record.get("spec") or {}).get("name") or self.name

    @property
    def label(self) -> str:
        text = self.built.record.get("label") or f"{self.built.backend} backend"
        if self.derived_from:
            text += "; " + DERIVED_NOTE.format(src=self.derived_from)
        return text


def copy_models(models: list[BuiltModel], dest: Path) -> list[BuiltModel]:
    """Copy model directories into ``dest`` (artifacts hard-linked); return the copies."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for m in models:
        target = dest / m.name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(m.path, target, copy_function=link_or_copy,
                        ignore=shutil.ignore_patterns("__pycache__"))
        out.append(BuiltModel(target))
    return out


def _derive(source: BuiltModel, dest: Path, name: str, model_py: Path,
            parameters: dict[str, str], record: dict, links: tuple[str, ...] = ()) -> BuiltModel:
    """Write ``dest/name``: a Python-backend model with ``source``'s inputs, outputs, batching and
    instance groups, ``model_py`` as its 1/model.py, ``parameters`` as its config parameters, the
    source's stored samples and references, and the version-dir files ``links`` (hard links);
    its files recorded in a new gen_repo.sha256."""
    target = dest / name
    if target.exists():
        shutil.rmtree(target)
    version = target / layout.VERSION
    version.mkdir(parents=True)
    for f in links:
        link_or_copy(source.path / layout.VERSION / f, version / f)
    shutil.copyfile(model_py, version / "model.py")
    for f in source.path.glob("gen_repo_*.npz"):
        link_or_copy(f, target / f.name)
    config = source.config.__class__()
    config.CopyFrom(source.config)
    config.name = name
    config.ClearField("platform")
    config.backend = "python"
    config.ClearField("parameters")
    for key, value in sorted(parameters.items()):
        config.parameters[key].string_value = value
    (target / layout.RECORD).write_text(json.dumps(dict(record, model_name=name,
                                                        derived_from=source.name), indent=1))
    write_config(target, config, DERIVED_NOTE.format(src=source.name))
    manifest.write(target)
    return BuiltModel(target)


def derive_python_ts(libtorch: BuiltModel, dest: Path) -> BuiltModel:
    """Write ``<name>_python_ts`` into ``dest``: the libtorch model.pt behind the Python backend.

    The config keeps the libtorch model's inputs, outputs, batching and instance groups; its
    parameters are those the build recorded for loading the artifact (loader torchscript, the
    artifact's SHA-256) plus the thread setting, as the python-ts variant of gen-repo build writes.
    """
    from ..variants.base import RUNTIME_MODEL, python_backend_parameters

    record = libtorch.record
    load_params = record.get("load_params")
    if not load_params or load_params.get("loader") != "torchscript":
        raise RepositoryError(
            f"{libtorch.path} has no TorchScript load parameters in its build record, so bench"
            " cannot serve its model.pt through the Python backend.",
            "Rebuild it with gen-repo build (add --variants libtorch,python,python-ts to build the"
            " python-ts variant directly).")
    spec = libtorch.spec
    return _derive(libtorch, dest, spec.model_dir_name(PYTHON_TS), RUNTIME_MODEL,
                   python_backend_parameters(spec, load_params),
                   dict(record, variant=PYTHON_TS, label=_python_ts_label()),
                   links=(load_params["artifact"],))


def derive_floor(python_model: BuiltModel, dest: Path) -> BuiltModel:
    """Write ``<name>_floor`` into ``dest``: the Python backend's floor for this model -- its
    inputs read, zeros of its outputs' shapes answered, no torch (runtime/floor.py)."""
    spec = python_model.spec
    first = python_model.cases()[0][2]  # reference outputs of the first case, as served
    lead = 1 if spec.batching else 0
    outputs = [[t.name, str(first[t.name].dtype), list(first[t.name].shape[lead:])]
               for t in spec.outputs]
    record = {k: v for k, v in python_model.record.items() if k not in ("load_params",
                                                                          "artifacts")}
    return _derive(python_model, dest, spec.model_dir_name(FLOOR), FLOOR_MODEL,
                   {"floor_outputs": json.dumps(outputs, separators=(",", ":"))},
                   dict(record, variant=FLOOR, label=FLOOR_LABEL))


def _python_ts_label() -> str:
    from ..variants.registry import VARIANTS

    return VARIANTS[PYTHON_TS].label


def with_python_ts(models: list[BuiltModel], dest: Path) -> tuple[list[BenchModel], list[str]]:
    """Add a derived python-ts model for each libtorch model that has no python-ts sibling.

    Returns (models to benchmark, notes). The libtorch models stay in the list (the server decides
    whether it can load them).
    """
    names = {m.name for m in models}
    out = [BenchModel(m) for m in models]
    notes = []
    for m in models:
        if m.variant != LIBTORCH and m.backend != "pytorch":
            continue
        if not m.built_by_gen_repo:
            continue
        sibling = m.spec.model_dir_name(PYTHON_TS)
        if sibling in names:
            continue
        derived = derive_python_ts(m, dest)
        out.append(BenchModel(derived, derived_from=m.name))
        notes.append(f"{derived.name}: {DERIVED_NOTE.format(src=m.name)} (same model.pt),"
                     " because the server has no PyTorch backend; it stands in for TorchScript in"
                     " the comparison")
    return out, notes


def with_floor(models: list[BenchModel], dest: Path) -> tuple[list[BenchModel], list[str]]:
    """Add the Python backend's floor (derive_floor) for each model base that has a gen-repo
    Python-backend variant: from its eager python variant when there is one."""
    out, notes, done = list(models), [], set()
    candidates = sorted((m for m in models if m.built.backend == "python"
                         and m.built.built_by_gen_repo and not m.derived_from),
                        key=lambda m: m.variant != PYTHON)
    for m in candidates:
        if m.base_name in done:
            continue
        done.add(m.base_name)
        floor = derive_floor(m.built, dest)
        out.append(BenchModel(floor, derived_from=m.name))
        notes.append(f"{floor.name}: {FLOOR_LABEL}; {DERIVED_NOTE.format(src=m.name)} (same"
                     " inputs, outputs, batching and instances)")
    return out, notes


def set_instances(model: BuiltModel, count: int) -> None:
    """Rewrite the model's instance groups to ``count`` instances each (atomic replace).

    A libtorch model built by gen-repo also gets the backend parameters its build would write
    for that count (weight sharing; the cores shared by the instances, always written here: the
    thread count is process-wide in the PyTorch backend, so a count set for one instance count
    would otherwise stay for the next).
    """
    config = model.config
    configure_instances(model, config, count)
    write_config(model.path, config, f"Rewritten by gen-repo bench: {count} instance(s) per group.")
    model.reread()


def configure_instances(model: BuiltModel, config, count: int, threads: int | None = None) -> None:
    """Set ``count`` instances in each instance group of ``config`` (a ModelConfig of
    ``model``, changed in place). For a libtorch model built by gen-repo, also the backend
    parameters its build writes for that count: weight sharing, and INTRA_OP_THREAD_COUNT,
    always written (``threads``, or the cores shared by the instances)."""
    from tritonclient.grpc import model_config_pb2

    if not config.instance_group:
        config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    for group in config.instance_group:
        group.count = count
    if model.variant == LIBTORCH and model.built_by_gen_repo:
        from ..variants.libtorch import backend_parameters

        spec = model.spec
        groups = {g.kind for g in config.instance_group}
        parameters, _ = backend_parameters(spec.with_(
            cpu_instances=count if model_config_pb2.ModelInstanceGroup.KIND_CPU in groups else 0,
            gpu_instances=count if model_config_pb2.ModelInstanceGroup.KIND_GPU in groups else 0,
            threads=threads if threads is not None else spec.threads), pin_threads=True)
        for key in ("ENABLE_WEIGHT_SHARING", "INTRA_OP_THREAD_COUNT"):
            if key in parameters:
                config.parameters[key].string_value = parameters[key]
            elif key in config.parameters:
                del config.parameters[key]


def config_parameters(model: BuiltModel) -> dict[str, str]:
    """The config's ``parameters`` as plain strings."""
    return {k: v.string_value for k, v in model.config.parameters.items()}


def instances_of(model: BuiltModel) -> int:
    return sum(g.count for g in model.config.instance_group) or 1


def stub_from_server(name: str, config: dict, dest: Path) -> BuiltModel:
    """A config-only model directory from a running server's model config (JSON), for a model
    bench measures on a server but has no local copy of (no samples, no ceiling)."""
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    proto = json_format.ParseDict(config, model_config_pb2.ModelConfig(),
                                  ignore_unknown_fields=True)
    target = dest / name
    target.mkdir(parents=True, exist_ok=True)
    write_config(target, proto, f"The config {name} reported on a running server (gen-repo bench).")
    return BuiltModel(target)
