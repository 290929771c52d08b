"""Capacity: will the instance groups fit? Estimated before configs are written, and the build's
own peak memory, reported after."""

from __future__ import annotations

import resource

from ..spec import ModelSpec

# Resident memory of one Python-backend stub process with torch imported, measured on this
# project's pinned versions (CPU build): about 0.3 GB before the model's weights.
PYTHON_STUB_OVERHEAD = 300 * 2**20
HEADROOM = 0.8  # warn above this fraction of the memory


def model_bytes(model) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def estimate(weights: int, spec: ModelSpec, python_variants: int, other_variants: int) -> list[str]:
    """Notes with the memory the repository's instances need; warnings when it will not fit."""
    import psutil

    notes = []
    per_instance = weights * (python_variants + other_variants) + PYTHON_STUB_OVERHEAD * python_variants
    cpu_need = spec.cpu_instances * per_instance
    ram = psutil.virtual_memory().total
    line = (f"memory estimate: {_gb(weights)} of weights per instance; {spec.cpu_instances} CPU"
            f" instance(s) x {python_variants + other_variants} variant(s) need about"
            f" {_gb(cpu_need)} of {_gb(ram)} RAM here")
    notes.append(line)
    if cpu_need > HEADROOM * ram:
        notes.append(f"WARNING: the CPU instances need about {_gb(cpu_need)}, more than"
                     f" {HEADROOM:.0%} of this machine's {_gb(ram)}: lower --cpu-instances or"
                     " serve fewer variants at once")
    if spec.gpu_instances:
        gpu_need = spec.gpu_instances * weights * (python_variants + other_variants)
        try:
            import torch

            ids = list(spec.gpus) or list(range(torch.cuda.device_count()))
            if not torch.cuda.is_available() or not ids:
                raise RuntimeError
            for i in ids:
                total = torch.cuda.get_device_properties(i).total_memory
                if gpu_need > HEADROOM * total:
                    notes.append(f"WARNING: GPU {i} needs about {_gb(gpu_need)} for the model"
                                 f" weights alone, more than {HEADROOM:.0%} of its"
                                 f" {_gb(total)}: lower --gpu-instances")
        except (RuntimeError, AssertionError):
            notes.append(f"GPU memory not checked (no CUDA device here): each listed GPU needs"
                         f" about {_gb(gpu_need)} for the weights of its instances")
    return notes


def peak_memory_note() -> str:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return f"peak memory of this build: {_gb(own)} (checks in fresh processes: {_gb(children)})"


def _size(n: float) -> str:
    return _gb(n) if n >= 2**30 else f"{n / 2**20:.1f} MB"


def check_disk(weights: int, variants: int, out) -> None:
    """Refuse a build whose artifacts cannot fit where they go: about the weights' size per
    variant, twice while a replaced model is staged beside the old one, against the free space
    of ``out``'s file system and this process's file-size limit (ulimit -f)."""
    import shutil
    from pathlib import Path

    from ..errors import RepositoryError

    need = 2 * weights * variants
    where = Path(out)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise RepositoryError(
            f"{where} has {_size(free)} free, and the {variants} variant(s) of this model need"
            f" about {_size(need)} ({_size(weights)} of weights each, twice while staging).",
            "Free space there, write elsewhere (--out DIR), or build fewer variants"
            " (--variants).")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and weights > limit:
        raise RepositoryError(
            f"this process may write files of at most {_size(limit)} (ulimit -f), and one"
            f" artifact holds about {_size(weights)} of weights.",
            "Raise the limit (ulimit -f unlimited) and build again.")
