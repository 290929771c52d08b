"""Models that once got a refusal naming the wrong cause, or a route that cannot work, get the
build that serves them or the true cause with a route that works: a forward() taking a dict of
tensors, a torch.compile'd model, parametrized (weight-normed) layers, dynamic quantization, a
key/value cache among the outputs, TracerWarnings raised in a library's code. The models are
tests/fixtures/routes.py's; each test runs the build's own functions in-process (end to end:
tests/integration/test_routes.py)."""

from __future__ import annotations

import io
import shutil
import textwrap
import warnings
from typing import Dict

import pytest
import torch
from torch import Tensor, nn

from generator.build import diagnosis
from generator.build.arguments import bind_inputs
from generator.build.outputs import output_paths
from generator.build.pipeline import Staged, VariantResult, prepare, stage_variant
from generator.build.wrapper import make_wrapper, wrapper_source
from generator.errors import ExportError, SpecError
from generator.spec import ModelSpec, TensorSpec, build_spec, parse_input
from generator.variants import tracer_warnings as tw
from generator.variants.packaging import baked_parametrizations
from tests.conftest import ROOT
from tests.fixtures import routes

SOURCE = ROOT / "tests" / "fixtures" / "routes.py"
DENSE, SCALE = TensorSpec("dense", "float32", (4,)), TensorSpec("scale", "float32", (1,))


def _spec(factory: str, tmp_path, inputs=None, **values) -> ModelSpec:
    return build_spec({"source": f"{SOURCE}:{factory}", "out": str(tmp_path / "repo"),
                       "input": [parse_input(f) for f in inputs or routes.INPUTS[factory]],
                       **values})


# ---------------------------------------------------------------------------------------------
# forward(self, features: Dict[str, Tensor])


def _features(rows: int = 3) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"dense": torch.randn(rows, 4, generator=g), "scale": torch.randn(rows, 1, generator=g)}


def test_a_forward_taking_a_dict_of_tensors_gets_the_inputs_as_its_keys():
    model = routes.dict_features().eval()
    binding = bind_inputs(model, [DENSE, SCALE])
    assert binding.packed == "features" and binding.keywords == ("dense", "scale")
    x = _features()
    with torch.no_grad():
        assert torch.equal(binding.call(model, [x["dense"], x["scale"]]), model(x))
    assert binding.call_source(["dense", "scale"]) == "{'dense': dense, 'scale': scale}"


def test_the_serving_wrapper_of_a_dict_forward_traces_and_scripts_to_the_same_answers():
    model = routes.dict_features().eval()
    binding = bind_inputs(model, [DENSE, SCALE])
    x = _features()
    with torch.no_grad():
        want = model(x)
    paths = output_paths(want)
    spec = ModelSpec(source="x", inputs=(DENSE, SCALE),
                     outputs=(TensorSpec("output", "float32", (3,)),))
    assert "self.model({'dense': dense, 'scale': scale})" in wrapper_source(spec, binding, paths)
    wrapped, _ = make_wrapper(model, spec, binding, paths)
    for ts in (torch.jit.trace(wrapped, (x["dense"], x["scale"])), torch.jit.script(wrapped)):
        assert torch.equal(ts(x["dense"], x["scale"]), want)


def test_a_scripted_dict_forward_binds_by_its_schema():
    loaded = torch.jit.script(routes.dict_features().eval())  # no Python signature to read
    assert bind_inputs(loaded, [DENSE, SCALE]).packed == "features"


class _OneParameter(nn.Module):
    def forward(self, batch):
        return batch["dense"] * batch["scale"]


def test_several_inputs_to_one_untyped_parameter_get_the_routes_that_work():
    with pytest.raises(SpecError) as e:
        bind_inputs(_OneParameter(), [DENSE, SCALE])
    assert "has no parameters of those names" in e.value.message  # not "of that names"
    tip = e.value.tip
    assert "def forward(self, batch: Dict[str, Tensor])" in tip
    assert "def forward(self, dense, scale)" in tip
    assert "Name each --input after" not in tip  # no parameter can take those names


class _DictAndMore(nn.Module):
    def forward(self, features: Dict[str, Tensor], flag: bool = False):
        return features["dense"]


class _PositionalDict(nn.Module):
    def forward(self, features: "Dict[str, Tensor]", /):  # an annotation kept as text
        return features["dense"] * features["scale"]


def test_a_dict_parameter_beside_others_is_refused_like_any_name_that_is_no_parameter():
    with pytest.raises(SpecError, match="no parameters of those names"):
        bind_inputs(_DictAndMore(), [DENSE, SCALE])
    assert bind_inputs(_PositionalDict(), [DENSE, SCALE]).packed == "features"


# ---------------------------------------------------------------------------------------------
# torch.compile(model)


def test_a_compiled_model_is_built_from_the_module_it_compiled(tmp_path):
    compiled = routes.compiled()
    model, note = diagnosis.uncompiled(compiled)
    assert model is compiled._orig_mod and isinstance(model, routes.Net)
    assert note.startswith("the model came compiled with torch.compile (an OptimizedModule):"
                           " gen-repo builds the module it compiled (its _orig_mod)")
    assert "python-compile" in note
    ctx, notes = prepare(_spec("compiled", tmp_path))  # bound by Net's forward(x)
    assert note in notes and [t.name for t in ctx.spec.outputs] == ["output"]


def test_a_compiled_submodule_is_replaced_by_the_module_it_compiled():
    model, note = diagnosis.uncompiled(routes.compiled_inside())
    assert isinstance(model.inner, routes.Net)
    assert note.startswith("its submodule inner came compiled with torch.compile")
    plain = routes.Net()
    assert diagnosis.uncompiled(plain) == (plain, None)


# ---------------------------------------------------------------------------------------------
# parametrized modules (weight_norm)


def _package_bytes(model) -> bytes:
    from torch.package import PackageExporter

    buf = io.BytesIO()
    with warnings.catch_warnings(), PackageExporter(buf) as exp:
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        exp.extern(["**"])
        exp.save_pickle("m", "m.pkl", model)
    return buf.getvalue()


def test_weight_norm_is_baked_into_a_copy_that_pickles_and_answers_bit_identically():
    from torch.nn.utils import parametrize

    model = routes.weight_normed().eval()
    with pytest.raises(RuntimeError, match="parametrized modules"):
        _package_bytes(model)
    baked, [note] = baked_parametrizations(model)
    assert parametrize.is_parametrized(model[0])  # the model itself is left as it was
    assert not any(parametrize.is_parametrized(m) for m in baked.modules())
    assert note.startswith("parametrized modules (0: torch.nn.utils.parametrize, e.g."
                           " weight_norm) cannot be pickled")
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(baked(x), model(x))
    assert _package_bytes(baked)
    plain = nn.Linear(4, 3)
    assert baked_parametrizations(plain) == (plain, [])


def test_the_older_hook_based_weight_norm_pickles_as_it_is():
    model = routes.old_weight_normed().eval()
    assert baked_parametrizations(model) == (model, [])
    assert _package_bytes(model)


def test_a_parametrization_that_is_not_baked_is_refused_with_remove_parametrizations(tmp_path):
    ctx, _ = prepare(_spec("jittered", tmp_path))
    failed = stage_variant(ctx, "python")
    if isinstance(failed, Staged):
        shutil.rmtree(failed.staging)
    assert isinstance(failed, VariantResult), "a parametrization that changes was baked"
    assert "parametrized modules" in failed.detail
    assert "remove_parametrizations(model, \"weight\")" in failed.tip
    assert "lambdas" not in failed.tip


# ---------------------------------------------------------------------------------------------
# dynamic quantization


def test_dynamic_quantization_is_named_as_why_rows_depend_on_each_other(tmp_path):
    with pytest.raises(ExportError) as e:
        prepare(_spec("dynamic_quantized", tmp_path))
    assert e.value.message.startswith("rows of a batch depend on each other")
    assert ("The model is dynamically quantized (torch.ao.quantization.quantize_dynamic: 0"
            " (Linear), 2 (Linear)): each such layer quantizes its input with a scale read from"
            " the whole batch") in e.value.message
    assert "centres or normalises" not in e.value.message
    assert e.value.tip.startswith("Build with --max-batch-size 0")
    assert "--input x:float32:-1x16" in e.value.tip and "quantize statically" in e.value.tip
    # the route works: one call of the model per request
    ctx, _ = prepare(_spec("dynamic_quantized", tmp_path, ["x:float32:-1x16"],
                           max_batch_size=0))
    assert [t.name for t in ctx.spec.outputs] == ["output"]


# ---------------------------------------------------------------------------------------------
# a key/value cache among the outputs


class _Config:
    use_cache = True


class _Cached(nn.Module):
    """Returns a transformers DynamicCache unless its config turns it off."""

    def __init__(self):
        super().__init__()
        self.config = _Config()

    def forward(self, x):
        from transformers import DynamicCache

        out = {"logits": x * 2}
        if self.config.use_cache:
            out["past_key_values"] = DynamicCache()
        return out


def test_a_cache_among_the_outputs_is_turned_off_through_the_config_with_a_note():
    model = _Cached()
    raw, note = diagnosis.without_cache(model, lambda: {"a": model(torch.ones(2, 3))})
    assert list(raw["a"]) == ["logits"] and model.config.use_cache is False
    assert note.startswith("the model returns a key/value cache ('past_key_values', a"
                           " DynamicCache) beside its outputs")
    assert "built with model.config.use_cache = False" in note
    plain = routes.Net()
    assert diagnosis.without_cache(plain, lambda: {"a": torch.ones(1)})[1] is None


def test_a_cache_no_config_turns_off_is_refused_with_use_cache_false():
    model = routes.cache_wrapper().eval()  # passes use_cache=True itself
    ids = torch.randint(0, 100, (2, 5))
    with pytest.raises(ExportError) as e:
        diagnosis.without_cache(model, lambda: {"a": model(ids)})
    assert e.value.message.startswith("the model returns a key/value cache ('cache', a"
                                      " DynamicCache) beside its outputs")
    assert "use_cache=False" in e.value.tip and "out.logits" in e.value.tip
    assert "return tensors (or tuples/dicts" not in e.value.tip


# ---------------------------------------------------------------------------------------------
# TracerWarnings in an installed library's code

LIBRARY = '''
import torch


def clip(x):
    if x.sum() > 0:
        return x.clamp(max=1.0)
    return x


class Clipper(torch.nn.Module):
    def forward(self, x):
        return clip(x) * 2
'''


@pytest.fixture
def fakelib(tmp_path, monkeypatch):
    """An installed library 'fakelib' whose code branches on a tensor, in a site-packages
    folder of its own."""
    import sys

    site = tmp_path / "site-packages"
    (site / "fakelib").mkdir(parents=True)
    (site / "fakelib" / "__init__.py").write_text(textwrap.dedent(LIBRARY))
    roots, libraries = (str(site.resolve()),), tw._library_roots()
    monkeypatch.setattr(tw, "_site_roots", lambda: roots)
    monkeypatch.setattr(tw, "_library_roots", lambda: libraries + roots)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "fakelib", raising=False)
    import fakelib

    return fakelib


class _CallsLibrary(nn.Module):
    def forward(self, x):
        import fakelib

        return fakelib.clip(x) + 1


def test_a_warning_in_a_library_names_it_and_routes_to_variants_that_do_not_trace(fakelib):
    with tw.recorded() as warned:
        torch.jit.trace(_CallsLibrary(), (torch.rand(2, 3),), check_trace=False)
    [w] = tw.suspects(warned)
    assert w.library == "fakelib" and w.site == "fakelib/__init__.py:6"
    assert w.caller and w.caller.endswith("test_routes.py:" + str(
        _CallsLibrary.forward.__code__.co_firstlineno + 3))
    assert "(in fakelib, called from" in w.describe()
    fix = tw.how_to_fix([w])
    assert fix.startswith("The TracerWarnings come from fakelib's own code"
                          " (fakelib/__init__.py:6, called from your ")
    assert "python-compile" in fix and "python-aoti" in fix
    assert "torch.where" not in fix


def test_a_librarys_model_called_by_the_wrapper_names_no_caller_outside_the_model(fakelib):
    spec = ModelSpec(source="x", inputs=(TensorSpec("x", "float32", (3,)),),
                     outputs=(TensorSpec("output", "float32", (3,)),))
    model = fakelib.Clipper()
    binding = bind_inputs(model, spec.inputs)
    wrapped, _ = make_wrapper(model, spec, binding, output_paths(torch.ones(1)))
    with tw.recorded() as warned:  # called from this test file, which is no part of the model
        torch.jit.trace(wrapped, (torch.rand(2, 3),), check_trace=False)
    [w] = tw.suspects(warned)
    assert w.library == "fakelib" and w.caller is None
    assert "called from" not in tw.how_to_fix([w])


def test_the_users_own_lines_keep_their_fix_beside_a_librarys(fakelib):
    from tests.fixtures import models

    with tw.recorded() as own:
        torch.jit.trace(models.value_branch(), (torch.rand(3, 4),), check_trace=False)
    with tw.recorded() as library:
        torch.jit.trace(_CallsLibrary(), (torch.rand(2, 3),), check_trace=False)
    fix = tw.how_to_fix(tw.suspects(own + library))
    assert "torch.where" in fix and "fakelib" not in fix
