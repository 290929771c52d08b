"""Mapped weights keep the state dict's per-module versions: a module whose
_load_from_state_dict reads its version (as torchvision's MNASNet does) loads from weights.pt."""

from __future__ import annotations

import torch

from generator.variants.weights import save_weights, store_layout


class Versioned(torch.nn.Module):
    _version = 2

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version") not in (1, 2):
            raise ValueError(f"version should be set to 1 or 2 instead of"
                             f" {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def _loads(path) -> torch.nn.Module:
    state = torch.load(str(path), mmap=True, weights_only=True, map_location="cpu")
    model = Versioned()
    model.load_state_dict(state, strict=True, assign=True)
    return model


def test_the_saved_weights_load_into_a_module_that_checks_its_version(tmp_path):
    model = Versioned()
    save_weights(model, tmp_path / "weights.pt")
    got = _loads(tmp_path / "weights.pt")
    assert torch.equal(got.conv.weight, model.conv.weight)


def test_the_channels_last_copy_keeps_the_versions_too(tmp_path):
    model = Versioned()
    (tmp_path / "1").mkdir()
    save_weights(model, tmp_path / "1" / "weights.pt")
    store_layout(tmp_path / "1", {"weights": "weights.pt"}, {"memory_format": "channels_last"})
    got = _loads(tmp_path / "1" / "weights.pt")
    assert got.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.conv.weight, model.conv.weight)


def test_the_runtimes_channels_last_conversion_keeps_the_mapped_weights(tmp_path):
    """Every 4-D weight of a file stored in channels_last layout stays the mapped tensor (1x1
    kernels included, whose loaded strides read as contiguous as well): no copy per instance."""
    from generator.runtime.model import to_channels_last

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 16, 1),
                                torch.nn.BatchNorm2d(16), torch.nn.Conv2d(16, 4, 1))
    (tmp_path / "1").mkdir()
    save_weights(model, tmp_path / "1" / "weights.pt")
    store_layout(tmp_path / "1", {"weights": "weights.pt"}, {"memory_format": "channels_last"})
    state = torch.load(str(tmp_path / "1" / "weights.pt"), mmap=True, weights_only=True)
    mapped = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 16, 1),
                                 torch.nn.BatchNorm2d(16), torch.nn.Conv2d(16, 4, 1))
    mapped.load_state_dict(state, assign=True)
    before = {n: t.data_ptr() for n, t in mapped.state_dict().items()}
    converted = to_channels_last(mapped)
    assert {n: t.data_ptr() for n, t in converted.state_dict().items()} == before
    assert all(t.is_contiguous(memory_format=torch.channels_last)
               for t in converted.state_dict().values() if t.dim() == 4)
    x = torch.rand(2, 3, 9, 9)
    assert torch.allclose(converted.eval()(x), model.eval()(x), atol=1e-5)
    # a contiguous file is converted (copied), as before
    plain = to_channels_last(torch.nn.Conv2d(3, 8, 3))
    assert plain.weight.is_contiguous(memory_format=torch.channels_last)
