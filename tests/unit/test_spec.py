import pytest

from generator import spec as specmod
from generator.errors import SpecError


def test_parse_input_full_form():
    t = specmod.parse_input("tokens:int64:-1:0..1000")
    assert (t.name, t.dtype, t.dims, t.low, t.high) == ("tokens", "int64", (-1,), 0, 1000)
    assert specmod.parse_input("image:fp32:3x224x224").dims == (3, 224, 224)
    assert specmod.parse_input("v:float:4,5").dims == (4, 5)


@pytest.mark.parametrize("text,fragment", [
    ("tokens:int64", "NAME:DTYPE:DIMS"),
    ("tokens:int65:-1", "did you mean \"int64\""),
    ("tokens:int64:abc", "not whole numbers"),
    ("tokens:int64:0", "invalid"),
    ("tokens:int64:-2", "invalid"),
    ("9lives:float32:3", "not usable"),
    ("a__b:float32:3", "not usable"),
    ("x:int64:4:5..1", "LOW..HIGH"),
])
def test_parse_input_errors(text, fragment):
    with pytest.raises(SpecError) as e:
        specmod.parse_input(text)
    assert fragment in e.value.message
    assert e.value.tip


def test_every_option_is_a_flag_and_a_spec_key(tmp_path):
    from generator.cli import make_parser

    help_text = make_parser()._subparsers._group_actions[0].choices["build"].format_help()
    for opt in specmod.OPTIONS:
        if opt.key != "source":
            assert opt.flag in help_text
    f = tmp_path / "s.toml"
    f.write_text("\n".join([
        'source = "torchvision:resnet18"', 'weights = "w.pt"', 'name = "n"',
        'input = ["x:float32:3x4x4"]', 'example_inputs = "e.npz"', 'out = "o"',
        'variants = ["python"]', "max_batch_size = 4", "dynamic_batching = false",
        "preferred_batch_sizes = [2, 4]", "max_queue_delay_us = 5", "cpu_instances = 2",
        "gpu_instances = 1", "gpus = [0, 1]", "threads = 1", "script = true",
        "accept_trace_warnings = true", "atol = 0.1", "inputs_by_position = true",
        "mapped_weights = false", "deferred_imports = false",
        "rtol = 0.2", "seed = 3", "force = true", 'dtype = "bf16"', "batch_axis = 1",
        "max_queue_size = 0", "queue_timeout_us = 0", 'compile_mode = "max-autotune"',
        "check_lengths = [16000, 12345]", 'triton_release = "26.06"']))
    values = specmod.load_spec_file(f)
    assert set(values) == {o.key for o in specmod.OPTIONS}
    spec = specmod.build_spec(values)
    assert spec.gpus == (0, 1) and spec.preferred_batch_sizes == (2, 4)
    assert spec.inputs[0].dims == (3, 4, 4) and not spec.dynamic_batching
    assert spec.dtype == "bfloat16" and spec.batch_axis == 1 and spec.atol == 0.1
    assert spec.accept_trace_warnings and spec.check_lengths == (16000, 12345)
    assert spec.triton_release == "26.06" and not spec.deferred_imports


def test_spec_file_unknown_key_did_you_mean(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("max_batch_sise = 4\n")
    with pytest.raises(SpecError) as e:
        specmod.load_spec_file(f)
    assert 'did you mean "max_batch_size"' in e.value.message


@pytest.mark.parametrize("text", ["max_batch_size = 'x'", "gpus = [true]", "input = 3",
                                  "force = 'maybe'", "this is not toml", "[[input]]\nname='a'"])
def test_spec_file_bad_values(tmp_path, text):
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(SpecError):
        specmod.load_spec_file(f)


def test_input_tables_in_spec_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[[input]]\nname = "tokens"\ndtype = "int64"\ndims = [-1]\nhigh = 99\n')
    (t,) = specmod.load_spec_file(f)["input"]
    assert (t.name, t.dims, t.high) == ("tokens", (-1,), 99)


@pytest.mark.parametrize("values,fragment", [
    ({"variants": ("pyton",)}, 'did you mean "python"'),
    ({"cpu_instances": 0}, "no instances"),
    ({"gpus": (0,)}, "without --gpu-instances"),
    ({"max_batch_size": -1}, "negative"),
    ({"preferred_batch_sizes": (16,)}, "outside"),
    ({"name": "bad name"}, "not usable"),
    ({"dtype": "fp8"}, "unknown"),
    ({"dtype": "int64"}, "not a compute dtype"),
    ({"batch_axis": 1, "max_batch_size": 0}, "given with --max-batch-size 0"),
    ({"check_lengths": (100,)}, "is not two different lengths"),
    ({"check_lengths": (100, 100)}, "is not two different lengths"),
    ({"check_lengths": (0, 5)}, "is not two different lengths"),
])
def test_validation(values, fragment):
    with pytest.raises(SpecError) as e:
        specmod.build_spec(values)
    assert fragment in e.value.message


def test_default_names():
    assert specmod.default_name("torchvision:resnet18") == "resnet18"
    assert specmod.default_name("my_models/net.py:make_model") == "make_model"
    assert specmod.default_name("pkg.mod:factory") == "factory"


def test_lower_precision_widens_default_tolerances_only():
    assert specmod.build_spec({"dtype": "fp16"}).atol == 2e-2
    assert specmod.build_spec({"dtype": "fp16", "atol": 1e-3}).atol == 1e-3
    assert specmod.build_spec({}).atol == 1e-4


def test_model_spec_has_one_field_per_option_with_its_default():
    import dataclasses

    fields = {f.name: f.default for f in dataclasses.fields(specmod.ModelSpec)}
    keys = {"inputs" if o.key == "input" else o.key for o in specmod.OPTIONS}
    assert set(fields) == keys | {"outputs", "forward_mode"}  # the two the build infers
    for o in specmod.OPTIONS:
        if o.key != "name":  # "" until build_spec names the model
            assert fields["inputs" if o.key == "input" else o.key] == o.default, o.key
    assert specmod.ModelSpec().variants == specmod.DEFAULT_VARIANTS


def test_spec_record_round_trips_and_old_keys_are_ignored():
    spec = specmod.ModelSpec(name="m", inputs=(specmod.TensorSpec("x", "float32", (3,)),))
    d = spec.to_dict()
    assert specmod.ModelSpec.from_dict(d) == spec
    # records written by older versions carry an "extra" key (a field since removed)
    assert specmod.ModelSpec.from_dict({**d, "extra": {}}) == spec
