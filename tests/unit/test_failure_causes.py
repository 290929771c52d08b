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


# --- each ERROR/TIP follows its cause -----------------------------------------------------------


def _refusal(spec: ModelSpec) -> ExportError:
    with pytest.raises(ExportError) as refused:
        prepare(spec)
    return refused.value


def test_a_model_without_a_batch_axis_is_told_to_build_without_batching(tmp_path):
    refused = _refusal(_spec("unbatched", tmp_path))  # x.view(4, 4) of one sample
    assert refused.message.endswith("; it runs on one sample without the batch axis (x[16])")
    assert refused.tip.startswith("The model takes no batch axis: build it with"
                                  " --max-batch-size 0 and each input as the model takes it"
                                  " (--input x:float32:16)"), refused.tip
    assert "Check --input" not in refused.tip
    prepare(_spec("unbatched", tmp_path, max_batch_size=0))  # the route builds


def test_state_whose_batch_is_on_dim_1_gets_the_unbatched_config_with_full_dims(tmp_path):
    refused = _refusal(_spec("gru_h0", tmp_path))  # batch-first GRU; h0 is (layers, batch, h)
    assert refused.message.startswith("the model fails on sample inputs (x[4, 8, 4]:float32,"
                                      " h0[4, 1, 6]:float32): RuntimeError: Expected hidden size")
    assert refused.message.endswith("; it runs with h0's batch on dim 1 (the other inputs' on"
                                    " dim 0)")
    route = "--input x:float32:-1x-1x4 --input h0:float32:1x-1x6"
    assert f"build it with --max-batch-size 0 and each input's full dims, the batch a -1 dim" \
           f" ({route})" in refused.tip
    assert "h0.movedim(0, 1)" in refused.tip and "Check --input" not in refused.tip
    ctx, _ = prepare(build_spec({"source": f"{SOURCE}:gru_h0", "max_batch_size": 0,
                                 "input": [parse_input(f) for f in route.split()[1::2]]}))
    assert [str(t) for t in ctx.spec.outputs] == ["output_0:float32:-1x-1x6",
                                                 "output_1:float32:1x-1x6"]


def test_a_batch_on_another_dim_of_every_input_is_told_batch_axis():
    import torch

    from generator.build.diagnosis import eager_failure
    from generator.build.samples import make_cases

    spec = build_spec({"input": [parse_input("x:float32:3x5"), parse_input("y:float32:3x5")],
                       "source": "m.py:f"})
    case = make_cases(spec)[0]
    tensors = [torch.from_numpy(case.inputs[n]) for n in ("x", "y")]

    def call(ts):  # wants (3, batch, 5)
        if any(t.shape[0] != 3 for t in ts):
            raise RuntimeError("expected 3 rows first")
        return ts[0] + ts[1]

    refused = eager_failure(RuntimeError("expected 3 rows first"), spec, case, call, tensors)
    assert refused.message.endswith("; it runs with the batch on dim 1 of every input")
    assert refused.tip.startswith("The model takes its batch on dim 1: build it with"
                                  " --batch-axis 1")
    # and a model that fails whatever its layout keeps the input flags' tip
    refused = eager_failure(ValueError("no"), spec, case, lambda ts: 1 / 0, tensors)
    assert refused.message.endswith(": ValueError: no") and refused.tip.startswith("Check --input")


def test_a_complex_output_is_told_view_as_real_not_a_cast(tmp_path):
    refused = _refusal(_spec("complex_output", tmp_path))  # torch.fft.rfft
    assert refused.message == ("output 'output' is complex (torch.complex64), which Triton has no"
                               " datatype for.")
    assert refused.tip.startswith("Return torch.view_as_real() of it")
    assert "A cast to a real dtype would drop the imaginary part" in refused.tip


def test_random_numbers_drawn_in_forward_are_named_as_the_cause(tmp_path):
    refused = _refusal(_spec("random_forward", tmp_path))  # + torch.rand(...)
    assert refused.message.startswith("forward() draws random numbers (torch's random generator"
                                      " advanced while it ran), so two runs on the same input"
                                      " answer differently (output: values"), refused.message
    assert refused.tip.startswith("Make forward() deterministic in eval mode")
    assert "try --script" not in refused.tip
    # noise within the tolerances builds, and the note says where it comes from
    _, notes = prepare(_spec("faint_noise", tmp_path))
    assert ("the eager model is not deterministic (two runs on the same input differ: forward()"
            " draws from torch's random generator)") in " ".join(notes), notes


def _scripted_failure() -> Exception:
    import torch

    @torch.jit.script
    def pick(x: torch.Tensor) -> torch.Tensor:
        return x.view(3, 7)

    try:
        pick(torch.zeros(4))
    except Exception as e:  # noqa: BLE001 - what TorchScript raises
        return e
    raise AssertionError("the scripted function did not fail")


def test_a_torchscript_error_is_quoted_by_the_line_that_says_what_failed():
    from generator.errors import error_line

    e = _scripted_failure()
    assert str(e).strip().splitlines()[0] == ("The following operation failed in the TorchScript"
                                              " interpreter.")
    assert error_line(type(e).__name__, str(e)) == ("RuntimeError: shape '[3, 7]' is invalid for"
                                                    " input of size 4")
    compiled = ("\nArguments for call are not valid.\nThe following variants are available:\n"
                "  aten::add.Tensor(Tensor self, Tensor other) -> Tensor:\n  Expected a value\n"
                "The original call is:\n  File \"/src/mymodel.py\", line 17\n"
                "        return torch.add(x, \"a\")\n")
    assert error_line("RuntimeError", compiled) == ("RuntimeError: Arguments for call are not"
                                                    " valid. (at mymodel.py:17)")


def test_the_eager_models_torchscript_error_is_quoted_by_what_failed():
    import torch

    from generator.build.diagnosis import eager_failure
    from generator.build.samples import make_cases

    spec = build_spec({"input": [parse_input("x:float32:4")], "source": "m.py:f"})
    case = make_cases(spec)[0]
    refused = eager_failure(_scripted_failure(), spec, case, lambda ts: 1 / 0,
                            [torch.from_numpy(case.inputs["x"])])
    assert refused.message.endswith("RuntimeError: shape '[3, 7]' is invalid for input of size 4")


def _worker_report(tmp_path, **err) -> tuple[str, str]:
    import json

    from generator.build.check import _worker_error

    path = tmp_path / "error.json"
    path.write_text(json.dumps({"traceback": "", "archive_frame": None, **err}))
    return _worker_error(path, ["mymodels"])


def test_a_fresh_process_failure_gets_the_tip_of_its_stage_not_always_packaging(tmp_path):
    from generator.build.check import LOAD_TIP

    e = _scripted_failure()  # a TorchScript artifact that raises when run
    line, tip = _worker_report(tmp_path, type=type(e).__name__, message=str(e),
                               stage="running", loader="torchscript")
    assert line == "RuntimeError: shape '[3, 7]' is invalid for input of size 4"
    assert tip.startswith("The saved artifact ran on these inputs in the build but raises in a"
                          " fresh process") and "torch.package" not in tip
    _, tip = _worker_report(tmp_path, type="KeyError", message="'scale'", stage="running",
                            loader="package")
    assert tip.startswith("The model ran on these inputs in the build") and tip != LOAD_TIP
    _, tip = _worker_report(tmp_path, type="RuntimeError", message="bad size", stage="timing",
                            loader="package")
    assert "--max-batch-size" in tip and "--threads N skips the timing" in tip
    _, tip = _worker_report(tmp_path, type="RuntimeError", message="unknown op myops::f",
                            stage="loading", loader="torchscript")
    assert tip.startswith("The saved artifact does not load in a fresh process")
    # unpickling the eager model's archive: the archive's code is what is missing
    _, tip = _worker_report(tmp_path, type="AttributeError", stage="loading", loader="package",
                            message="Can't get attribute 'Net' on <module 'helpers'>")
    assert "torch.package can intern" in tip
