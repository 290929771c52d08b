"""A build that goes wrong says why, in the variant it concerns: an optional speed trial that a
model breaks is skipped with a note, an exception while exporting or saving one variant is that
variant's FAILED result (the others go on), and a model whose eval() raises is no internal error.
The models are tests/fixtures/causes.py's; each test runs the build's own functions in-process."""

from __future__ import annotations

import errno
import shutil

import pytest

from generator.build.pipeline import Staged, VariantResult, prepare, stage_variant
from generator.errors import ExportError
from generator.spec import ModelSpec, build_spec, parse_input
from generator.status import FAILED
from generator.variants import registry
from generator.variants.torchscript import make_torchscript
from tests.conftest import ROOT
from tests.fixtures import causes

SOURCE = ROOT / "tests" / "fixtures" / "causes.py"


def _spec(factory: str, tmp_path, **values) -> ModelSpec:
    return build_spec({"source": f"{SOURCE}:{factory}", "out": str(tmp_path / "repo"),
                       "input": [parse_input(f) for f in causes.INPUTS[factory]], **values})


def _staged(ctx, variant: str):
    """stage_variant's answer; a staged variant's folder is removed (nothing checks it here)."""
    staged = stage_variant(ctx, variant)
    if isinstance(staged, Staged):
        shutil.rmtree(staged.staging)
    return staged


def test_a_failed_channels_last_trial_keeps_the_torchscript_layout_with_a_note(tmp_path):
    # x.view(-1, N) after a convolution needs contiguous memory: channels_last weights break it
    ctx, _ = prepare(_spec("view_cnn", tmp_path))
    made = make_torchscript(ctx)
    assert all(p.is_contiguous() for p in made.module.parameters())
    note, = [n for n in made.notes if "channels_last" in n]
    assert note.startswith("weights kept in contiguous layout: with channels_last weights (tried"
                           " for speed) the module fails on sample case a: RuntimeError: view"
                           " size is not compatible"), note


def test_a_trace_torch_jit_save_cannot_write_fails_its_variant_only(tmp_path):
    # a custom autograd.Function: the trace holds a Python op, and torch.jit.save raises
    ctx, _ = prepare(_spec("custom_function", tmp_path))
    failed = _staged(ctx, "libtorch")
    assert isinstance(failed, VariantResult) and failed.status == FAILED
    assert failed.detail.startswith("torch.jit.save cannot write the TorchScript module (trace):"
                                    " RuntimeError: Could not export Python function call"
                                    " '_Square'"), failed.detail
    assert "forward() calls _Square" in failed.tip and "torch.autograd.Function" in failed.tip
    assert "--variants python" in failed.tip
    assert isinstance(_staged(ctx, "python"), Staged)  # the eager variant is not affected
    assert not list((tmp_path).glob(".gen-repo-staging-*"))


def test_an_exception_while_exporting_one_variant_is_its_failed_result(tmp_path, monkeypatch):
    ctx, _ = prepare(_spec("custom_function", tmp_path))
    python = registry.VARIANTS["python"]

    def raising(error):
        def export(self, ctx, version_dir):
            (version_dir / "half-written").write_text("x")
            raise error
        return export

    monkeypatch.setattr(python, "export", raising(ValueError("\nsomething broke\n  detail")))
    failed = _staged(ctx, "python")
    assert isinstance(failed, VariantResult) and failed.status == FAILED
    assert failed.detail == "exporting failed: ValueError: something broke"
    assert "the others are not affected" in failed.tip
    assert not list(tmp_path.glob(".gen-repo-staging-*"))  # its staging folder is gone
    # what ends the build ends it: Ctrl-C, a full disk
    for error in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
        monkeypatch.setattr(python, "export", raising(error))
        with pytest.raises(type(error)):
            stage_variant(ctx, "python")
        assert not list(tmp_path.glob(".gen-repo-staging-*"))


def test_a_torch_export_module_is_built_as_exported(tmp_path):
    # ExportedProgram.module()'s eval() raises "Calling eval() is not supported yet."
    ctx, notes = prepare(_spec("exported", tmp_path))
    assert any(n.startswith("the model's eval() raises (NotImplementedError: Calling eval() is"
                            " not supported yet.), as a module made by torch.export does")
               for n in notes), notes
    assert isinstance(_staged(ctx, "libtorch"), Staged)
    failed = _staged(ctx, "python")  # torch's own hooks on the module cannot be pickled
    assert failed.status == FAILED and failed.detail.startswith("torch.package failed to pickle")
    assert failed.tip.startswith("A module made by torch.export (ExportedProgram.module())")


def test_an_eval_that_raises_otherwise_refuses_the_build_with_its_error():
    import torch

    from generator.build.diagnosis import put_in_eval

    class Stubborn(torch.nn.Module):
        def train(self, mode=True):
            raise RuntimeError("this module cannot change mode")

    with pytest.raises(ExportError) as refused:
        put_in_eval(torch.nn.Sequential(Stubborn()))
    assert refused.value.message == ("the model's eval() raises RuntimeError: this module cannot"
                                     " change mode.")
    assert "make eval() work" in refused.value.tip
    assert put_in_eval(torch.nn.Linear(2, 2)) is None
