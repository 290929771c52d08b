"""--triton-release: the release table (generator/releases.py) decides what each config may use,
and the configs of the releases differ exactly as docs/triton-releases.md says. Against each
release's own ModelConfig schema: tests/integration/test_triton_releases.py."""

from __future__ import annotations

import numpy as np
import pytest

from generator import releases
from generator.build.diagnosis import export_route
from generator.build.pipeline import Staged, VariantResult, batch_cases
from generator.build.samples import Case
from generator.errors import ExportError, RepositoryError, SpecError
from generator.repository.config import config_text, model_config, release_needs
from generator.serve.docker_server import release_warning
from generator.serve.lifecycle import TritonServer
from generator.spec import ModelSpec, TensorSpec, build_spec
from generator.status import FAILED, OK
from generator.variants import registry
from generator.variants.aoti import refuse_release
from generator.variants.base import ExportContext, refuse_bf16
from generator.variants.libtorch import backend_parameters
from tests.conftest import ROOT

SPEC = ModelSpec(name="m", inputs=(TensorSpec("x", "float32", (16,)),),
                 outputs=(TensorSpec("y", "float32", (4,)),), max_batch_size=8)
TABLE = ("24.10", "26.04", "26.05", "26.06", "26.11")  # one release per row of the table


def _aoti(release: str, spec: ModelSpec = SPEC):
    """The aoti variant's config for ``release``, as the build writes it."""
    variant = registry.get("aoti")
    spec = spec.with_(triton_release=release)
    return model_config(variant.served_spec(spec), "m_aoti", variant.engine, {})


def _differences(a, b) -> set[str]:
    """The top-level ModelConfig fields on which configs ``a`` and ``b`` differ."""
    fields = {f.name for f, _ in a.ListFields()} | {f.name for f, _ in b.ListFields()}
    return {f for f in fields if getattr(a, f) != getattr(b, f)}


def test_a_release_is_yy_mm_and_the_default_is_the_embedded_servers():
    assert releases.parse(" 26.06") == "26.06"
    for bad in ("26.6", "2606", "26.13", "v26.06", ""):
        with pytest.raises(SpecError) as e:
            releases.parse(bad)
        assert "YY.MM" in e.value.message and "26.06" in e.value.tip
    assert build_spec({}).triton_release == releases.EMBEDDED_RELEASE == "24.10"
    from generator.serve.docker_server import DEFAULT_IMAGE
    from generator.serve.triton_install import EMBEDDED_RELEASE, NGC_IMAGE

    assert EMBEDDED_RELEASE is releases.EMBEDDED_RELEASE
    assert NGC_IMAGE == DEFAULT_IMAGE == "nvcr.io/nvidia/tritonserver:24.10-py3"


def test_before_26_03_aoti_is_refused_with_a_release_that_serves_it():
    with pytest.raises(ExportError) as e:
        refuse_release(SPEC.with_(triton_release="24.10"))
    assert "torch_aoti needs Triton 26.03 or later" in e.value.message
    assert "--triton-release 24.10" in e.value.message
    assert "--triton-release 26.06" in e.value.tip and "python-aoti" in e.value.tip
    refuse_release(SPEC.with_(triton_release="26.03"))  # no refusal


def test_the_aoti_configs_differ_per_release_exactly_as_the_table_says():
    c = {r: _aoti(r) for r in TABLE[1:]}
    # 26.03/26.04: by position, batch 1
    assert c["26.04"].max_batch_size == 0 and not c["26.04"].HasField("dynamic_batching")
    assert [i.name for i in c["26.04"].input] == ["INPUT__0"]
    assert [o.name for o in c["26.04"].output] == ["OUTPUT__0"]
    assert list(c["26.04"].input[0].dims) == [1, 16] and list(c["26.04"].output[0].dims) == [1, 4]
    # 26.05: the call spec's names, still batch 1
    assert _differences(c["26.04"], c["26.05"]) == {"input", "output"}
    assert [i.name for i in c["26.05"].input] == ["KWARGS[x]"]
    assert [o.name for o in c["26.05"].output] == ["RESULT[0]"]
    assert c["26.05"].max_batch_size == 0 and list(c["26.05"].input[0].dims) == [1, 16]
    # 26.06: batching, the same names
    assert _differences(c["26.05"], c["26.06"]) == {"max_batch_size", "input", "output",
                                                    "dynamic_batching"}
    assert c["26.06"].max_batch_size == 8 and c["26.06"].HasField("dynamic_batching")
    assert [i.name for i in c["26.06"].input] == ["KWARGS[x]"]
    assert list(c["26.06"].input[0].dims) == [16] and list(c["26.06"].output[0].dims) == [4]
    # 26.11 adds BF16 only: a float32 model's config is the same
    assert config_text(c["26.06"], "h") == config_text(c["26.11"], "h")
    # keys: no parameters for torch_aoti at any release (it reads them only without a
    # parameters section), and nothing of TorchScript's
    assert all(not config.parameters for config in c.values())


def test_what_the_check_runs_follows_the_release():
    aoti, python_aoti = registry.get("aoti"), registry.get("python-aoti")
    spec = SPEC.with_(preferred_batch_sizes=(4,))
    assert aoti.check_batch_sizes(spec.with_(triton_release="26.05")) == (1,)
    assert aoti.check_batch_sizes(spec.with_(triton_release="26.06")) == (1, 4, 8)
    assert python_aoti.check_batch_sizes(spec) == (1, 4, 8)  # batches on every release
    assert aoti.check_batch_sizes(spec.with_(max_batch_size=0, preferred_batch_sizes=(),
                                             triton_release="26.06")) == ()
    assert registry.get("python").check_batch_sizes(spec) == ()


def test_the_check_cases_repeat_or_cut_the_first_sample_case():
    spec = SPEC.with_(triton_release="26.06")
    a = Case("a", 4, {"x": np.arange(64, dtype=np.float32).reshape(4, 16)})
    b = Case("b", 3, {"x": np.zeros((3, 16), np.float32)})
    refs = {"a": {"y": np.arange(16, dtype=np.float32).reshape(4, 4)}, "b": {"y": np.zeros((3, 4))}}
    ctx = ExportContext(spec, None, "w", (), [a, b], refs)
    staged = [Staged(registry.get(v), "m", None, None, 0.0, 0.0) for v in ("aoti", "python")]
    cases, references = batch_cases(ctx, staged)
    assert [(c.name, c.batch) for c in cases] == [("batch 1", 1), ("batch 8", 8)]
    np.testing.assert_array_equal(cases[0].inputs["x"], a.inputs["x"][:1])
    np.testing.assert_array_equal(cases[1].inputs["x"], np.concatenate([a.inputs["x"]] * 2))
    np.testing.assert_array_equal(references["batch 8"]["y"], np.concatenate([refs["a"]["y"]] * 2))


def test_bf16_on_the_pytorch_backend_needs_26_11():
    bf16 = SPEC.with_(outputs=(TensorSpec("y", "bfloat16", (4,)),))
    for variant in ("aoti", "libtorch"):
        with pytest.raises(ExportError) as e:
            refuse_bf16(bf16.with_(triton_release="26.06"), variant)
        assert "y is bfloat16, and the PyTorch backend of Triton 26.06" in e.value.message
        assert "python variant" in e.value.tip and "--triton-release 26.11" in e.value.tip
        refuse_bf16(bf16.with_(triton_release="26.11"), variant)
    config = _aoti("26.11", bf16)
    assert release_needs(config) == [releases.TORCH_AOTI, releases.AOTI_BATCHING,
                                     releases.PYTORCH_BF16]


def test_the_export_note_after_a_bf16_refusal_names_the_release_that_serves_it():
    bf16 = SPEC.with_(outputs=(TensorSpec("y", "bfloat16", (4,)),), triton_release="26.06")

    def result(variant, status):
        return VariantResult(variant, f"m_{variant}", status, 0.0, "")

    # libtorch refused for the release's BF16, TorchScript itself fine: no note about TorchScript
    assert export_route([result("libtorch", FAILED), result("python-ts", OK)], bf16) is None
    # TorchScript refused for its own sake: aoti is routed to a release that has BF16 too
    note = export_route([result("libtorch", FAILED), result("python-ts", FAILED)], bf16)
    assert note.startswith("TorchScript was refused (python-ts);")
    assert "--triton-release 26.11 or later" in note
    note = export_route([result("libtorch", FAILED)], SPEC.with_(triton_release="26.06"))
    assert note.startswith("TorchScript was refused (libtorch);")
    assert f"--triton-release {releases.TORCH_AOTI.since} or later" in note


def test_the_config_writer_refuses_a_config_its_release_cannot_serve():
    variant = registry.get("aoti")
    batching = variant.served_spec(SPEC.with_(triton_release="26.06"))
    with pytest.raises(RepositoryError) as e:
        model_config(batching.with_(triton_release="26.05"), "m", variant.engine, {})
    assert "batching on torch_aoti" in e.value.message and "26.06" in e.value.message


def test_libtorch_writes_the_same_keys_for_every_release():
    keys = {r: sorted(backend_parameters(SPEC.with_(triton_release=r, cpu_instances=2,
                                                    threads=2))[0]) for r in TABLE}
    assert len({tuple(k) for k in keys.values()}) == 1
    assert not any("CACHE_CLEANING" in k for k in keys["24.10"])


class _Model:
    def __init__(self, config, target, backend="pytorch"):
        self.name, self.config, self.target_release, self.backend = "m_aoti", config, target, backend


def _server(release: str) -> TritonServer:
    server = TritonServer.__new__(TritonServer)
    server.release = release
    return server


def test_serve_skips_a_config_the_servers_release_cannot_serve_with_the_route():
    batching = _Model(_aoti("26.06"), "26.06")
    reason = _server("26.05").unsupported_reason(batching)
    assert "batching on torch_aoti" in reason and "Triton 26.05" in reason
    assert "--triton-release 26.05" in reason and "tritonserver:26.06-py3" in reason
    reason = _server("24.10").unsupported_reason(_Model(_aoti("26.04"), "26.04"))
    assert "torch_aoti" in reason and "python-aoti" in reason and "tritonserver:26.03-py3" in reason
    assert _server("26.06").unsupported_reason(batching) is None
    assert _server("26.06").unsupported_reason(_Model(_aoti("26.05"), "26.05")) is None


def test_serve_docker_warns_when_the_image_is_another_release_than_the_target():
    warning = release_warning(_Model(_aoti("26.05"), "26.05"), "26.06")
    assert "built for Triton 26.05" in warning and "--triton-release 26.06" in warning
    assert release_warning(_Model(_aoti("26.06"), "26.06"), "26.06") is None
    assert release_warning(_Model(_aoti("26.06"), "26.06"), "26.05") is None  # SKIPPED instead
    assert release_warning(_Model(_aoti("26.06"), "26.06", "python"), "26.08") is None
    assert release_warning(_Model(_aoti("26.06"), None), "26.08") is None  # an older build


def test_the_docs_table_is_the_codes():
    doc = (ROOT / "docs" / "triton-releases.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in doc.splitlines()
            if line.startswith("| `")}
    for f in releases.FEATURES:
        assert f"`{f.key}`" in rows, f.key
        assert f"| {f.since} |" in rows[f"`{f.key}`"], f.key
    for release, version in releases.SERVER_VERSIONS.items():
        assert f"{release} = {version}" in doc
    readme = (ROOT / "README.md").read_text()
    assert "--triton-release" in readme and "docs/triton-releases.md" in readme
