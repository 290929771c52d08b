"""The one table of data types: spec name <-> torch <-> numpy <-> Triton."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # spec / CLI name
    triton: str  # config.pbtxt data_type (TYPE_*)
    wire: str  # tritonclient datatype string
    numpy: type
    torch_name: str  # attribute of the torch module


_TABLE = [
    DType("float32", "TYPE_FP32", "FP32", np.float32, "float32"),
    DType("float16", "TYPE_FP16", "FP16", np.float16, "float16"),
    DType("bfloat16", "TYPE_BF16", "BF16", np.float32, "bfloat16"),  # numpy has no bf16
    DType("float64", "TYPE_FP64", "FP64", np.float64, "float64"),
    DType("int8", "TYPE_INT8", "INT8", np.int8, "int8"),
    DType("int16", "TYPE_INT16", "INT16", np.int16, "int16"),
    DType("int32", "TYPE_INT32", "INT32", np.int32, "int32"),
    DType("int64", "TYPE_INT64", "INT64", np.int64, "int64"),
    DType("uint8", "TYPE_UINT8", "UINT8", np.uint8, "uint8"),
    DType("bool", "TYPE_BOOL", "BOOL", np.bool_, "bool"),
]

ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
           "bf16": "bfloat16", "fp64": "float64", "double": "float64", "long": "int64",
           "int": "int32"}

BY_NAME = {d.name: d for d in _TABLE}
BY_TORCH = {d.torch_name: d for d in _TABLE}


def lookup(name: str) -> DType:
    """Spec name or alias -> DType; KeyError if unknown."""
    key = name.strip().lower()
    return BY_NAME[ALIASES.get(key, key)]


def from_torch(dtype) -> DType:
    """torch.dtype -> DType; KeyError if Triton has no equivalent."""
    return BY_TORCH[str(dtype).replace("torch.", "")]


def names() -> list[str]:
    return list(BY_NAME)
