"""A damaged sample or reference file of a model is an error naming the file, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from generator.repository import layout
from generator.errors import RepositoryError


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_reference_file_names_itself(tmp_path, damage):
    model = tmp_path / "m_python"
    model.mkdir()
    path = model / layout.REFERENCE
    np.savez(path, output=np.arange(64, dtype=np.float32))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2:] = bytes(len(data) - len(data) // 2)  # the central directory gone
    elif damage == "truncate":
        data = data[: len(data) // 3]
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(RepositoryError) as e:
        layout.BuiltModel(model).reference()
    assert str(path) in e.value.message and "gen-repo build" in e.value.tip
