"""The project's own fixture models of each way a model once fooled the checks or was refused
for the wrong cause (tests/fixtures: batch_probes, binding, process_state, causes, user_cases,
routes, exports): a row that reads another row's flag, one decision for the whole batch from its
rows' values, inputs a wrong binding would exchange, a custom op registered by the model's code,
output sizes that depend on the batch or length, in-place ops on inputs, a minimum length,
autograd in forward(), bfloat16, torch.compile'd and parametrized modules, dynamic quantization,
transformers with a cache, torch.export failures. Each is built from its fixture file with the
inputs its tests use; models that take a per-row scalar or a dict (sent in shapes the
independent check does not make) are left to their own tests."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

from . import Entry

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
MODELS = {  # fixture module: the factories of the corpus
    "batch_probes": ("flag_column_from_row_zero", "mask_from_row_zero",
                     "clamps_batch_when_one_is_large", "skips_norm_when_a_row_is_silent",
                     "sums_when_every_mask_is_full", "clamps_each_large_row", "subsample_by_4",
                     "top_k_of_n", "squeezed", "squeezed_length", "pool_by_3", "at_most_4_rows"),
    "binding": ("loaded_torchscript", "star_args"),
    "process_state": ("custom_op", "decorated_op"),
    "causes": ("view_cnn", "custom_function", "random_forward", "complex_output", "gru_h0",
               "unbatched"),
    "user_cases": ("in_place", "spectrogram", "forces", "bf16_head"),
    "routes": ("compiled", "weight_normed", "dynamic_quantized", "tiny_gpt2", "tiny_bert"),
    "exports": ("size_check",),
}
OPTIONS = {"star_args": {"inputs_by_position": True}}  # other build options, spec keys


def make(module: str, factory: str):
    """The fixture model, as the build makes it (the build seeds torch with 0 first)."""
    import torch

    torch.manual_seed(0)
    return getattr(importlib.import_module(f"tests.fixtures.{module}"), factory)()


def entries() -> list[Entry]:
    found = []
    for module, factories in MODELS.items():
        inputs = importlib.import_module(f"tests.fixtures.{module}").INPUTS
        for factory in factories:
            found.append(Entry("cases", factory, module, f"{FIXTURES / module}.py:{factory}",
                               tuple(inputs[factory]), functools.partial(make, module, factory),
                               OPTIONS.get(factory, {})))
    return found
