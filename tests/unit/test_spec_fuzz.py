"""Fuzz the spec parser: any spec file or --input text gives a SpecError or a valid spec — never
another exception (which the CLI would show as an internal error)."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator import spec as specmod
from generator.errors import SpecError

keys = st.sampled_from([o.key for o in specmod.OPTIONS] + ["inputs", "bogus", "max-batch-size"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 40), st.floats(allow_nan=True),
                    st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["name", "dtype", "dims", "low", "high", "x"]), inner, max_size=5)), max_leaves=10)


def _toml_value(v):
    if v is None:
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if v == v and abs(v) != float("inf") else "nan"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.dictionaries(keys, values, max_size=6))
def test_structured_spec_files(tmp_path, doc):
    f = tmp_path / "spec.toml"
    f.write_text("\n".join(f'"{k}" = {_toml_value(v)}' for k, v in doc.items()))
    try:
        spec = specmod.build_spec(specmod.load_spec_file(f))
    except SpecError as e:
        assert e.message and e.tip
    else:
        assert spec.name and spec.variants


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_arbitrary_bytes(tmp_path, data):
    f = tmp_path / "spec.toml"
    f.write_bytes(data)
    try:
        specmod.load_spec_file(f)
    except SpecError as e:
        assert e.message


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + ":x,-._ ", max_size=40))
def test_input_flag_text(text):
    try:
        t = specmod.parse_input(text)
    except SpecError as e:
        assert e.message and e.tip
    else:
        assert t.name and all(d == -1 or d > 0 for d in t.dims)
