"""libtorch: TorchScript on Triton's PyTorch backend (platform "pytorch_libtorch", 1/model.pt).

I/O naming (pytorch_backend, checked against release 24.10's source): inputs are matched to
forward() argument names when every config input name is one (the wrapper's forward takes the
spec's input names); outputs without a `<name>__<index>` suffix are matched by config order, which
is the order the wrapper returns them in. Output names never contain "__".

Threads and instances (same source, and seen on the real backend): every libtorch instance runs in
the tritonserver process, so INTRA_OP_THREAD_COUNT is process-wide (``at::set_num_threads``: the
last model loaded sets it for every libtorch model of the server; unset, each instance's forward
uses all cores), and INTER_OP_THREAD_COUNT may be set once per process (a second model, or the same
model loaded again, that sets it aborts the whole server) -- gen-repo never writes it. With N CPU
instances each gets cores // N intra-op threads (the rule the Python backend applies per process),
and ENABLE_WEIGHT_SHARING makes the instances on one device share one copy of the weights.
"""

from __future__ import annotations

from pathlib import Path

from ..repository.config import Engine
from ..runtime.model import sha256_of, threads_for
from .base import TORCHSCRIPT, Artifact, ExportContext, Variant, refuse_bf16
from .torchscript import TorchScript, make_torchscript, save

ARTIFACT = "model.pt"


def save_torchscript(ctx: ExportContext, version_dir: Path) -> tuple[dict[str, str], TorchScript]:
    made = make_torchscript(ctx)
    path = version_dir / ARTIFACT
    save(made, path)
    params = {"artifact": ARTIFACT, "loader": "torchscript", "artifact_sha256": sha256_of(path),
              "torchscript_method": made.method}
    return params, made


def torchvision_ops(ts) -> list[str]:
    """The TorchVision operators (torchvision::nms, ...) a TorchScript module calls: a PyTorch
    backend built without TorchVision ops cannot load it."""
    found: set[str] = set()

    def walk(block) -> None:
        for node in block.nodes():
            if node.kind().startswith("torchvision::"):
                found.add(node.kind())
            for inner in node.blocks():
                walk(inner)

    walk(ts.inlined_graph)
    return sorted(found)


class LibtorchVariant(Variant):
    name = "libtorch"
    label = "TorchScript on the PyTorch (libtorch) backend"
    engine = Engine("platform", "pytorch_libtorch")
    artifact = TORCHSCRIPT
    words = "the TorchScript variant (PyTorch backend)"

    def export(self, ctx: ExportContext, version_dir: Path) -> Artifact:
        refuse_bf16(ctx.spec, self.name)
        load_params, made = save_torchscript(ctx, version_dir)
        notes = list(made.notes)
        ops = torchvision_ops(made.module)
        if ops:
            notes = notes + [f"the TorchScript calls {', '.join(ops)}: the server's PyTorch backend"
                             " needs TorchVision ops (the NGC image's has them; a backend built"
                             " without them cannot load this model)"]
        parameters, thread_notes = backend_parameters(ctx.spec)
        return Artifact([ARTIFACT], load_params, parameters, notes + thread_notes, made.summary)


def backend_parameters(spec, pin_threads: bool = False) -> tuple[dict[str, str], list[str]]:
    """The PyTorch backend's parameters for this spec, and notes on the thread choice.

    A build leaves the thread count to the backend (all cores) for one CPU instance, so the
    config suits any server. ``pin_threads`` always writes it: bench, which serves the model with
    several instance counts in one server process on this machine, where a count once set stays
    set (the parameter is process-wide).
    """
    parameters = {"INFERENCE_MODE": "true", "DISABLE_OPTIMIZED_EXECUTION": "false"}
    notes = []
    if spec.cpu_instances > 1 or spec.gpu_instances > 1:
        parameters["ENABLE_WEIGHT_SHARING"] = "true"  # the instances of a device share weights
    if spec.threads:
        parameters["INTRA_OP_THREAD_COUNT"] = str(spec.threads)
    elif spec.cpu_instances > 1 or (pin_threads and spec.cpu_instances):
        threads = threads_for({}, [{"kind": "KIND_CPU", "count": spec.cpu_instances}])
        parameters["INTRA_OP_THREAD_COUNT"] = str(threads)
        notes.append(f"INTRA_OP_THREAD_COUNT {threads}: this machine's cores shared by"
                     f" {spec.cpu_instances} CPU instance(s) (the PyTorch backend applies it to the"
                     " whole server process; pass --threads N for a server with other cores)")
    return parameters, notes
