"""The configs gen-repo writes for each Triton release, parsed with that release's own model-config
schema: the ModelConfig of the matching tritonclient, installed into a side environment under
~/.cache/gen-repo/tritonclient/<version> (kept and reused), in a process of its own.

`gen-repo build --triton-release 26.06 --variants aoti` runs end to end (export, the check at the
batch sizes a batcher forms); the package does not depend on the release, so the 26.05 and 26.11
configs are written from the same model through the config writer the build uses (and the 26.06
one that way too, which must equal the build's). For 24.10 aoti is refused and the libtorch
config that the build writes is the one checked. A release whose tritonclient the package index
lacks is checked against the newest one there, and the test says so."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generator import releases
from generator.build.pipeline import prepare
from generator.cli import main
from generator.machine import cache_dir
from generator.repository import layout
from generator.repository.config import build_header, model_config, write_config
from generator.spec import build_spec, parse_input
from generator.variants import registry
from tests.conftest import fixture_source
from tests.fixtures.models import INPUTS

pytestmark = pytest.mark.integration

FACTORY = "seq_encoder"  # two inputs, two outputs, a dynamic length axis
RELEASES = ("24.10", "26.05", "26.06", "26.11")
# Loads tritonclient's model_config_pb2 from its file (its package's __init__ wants grpcio, which
# the side environment leaves out) and parses each config.pbtxt given: {path: error or None}.
PARSE = """
import importlib.util, json, pathlib, sys
from google.protobuf import text_format
root = pathlib.Path(importlib.util.find_spec("tritonclient").submodule_search_locations[0])
spec = importlib.util.spec_from_file_location("model_config_pb2",
                                              root / "grpc" / "model_config_pb2.py")
pb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pb)
errors = {}
for path in sys.argv[1:]:
    try:
        text_format.Parse(pathlib.Path(path).read_text(), pb.ModelConfig())
        errors[path] = None
    except text_format.ParseError as e:
        errors[path] = str(e)
print(json.dumps(errors))
"""


def _build(out: Path, release: str, variants: str) -> tuple[int, str]:
    """`gen-repo build` of FACTORY for ``release``: (exit code, what it printed)."""
    args = ["build", fixture_source(FACTORY), "--out", str(out), "--variants", variants,
            "--triton-release", release, "--threads", "1"]
    for spec in INPUTS[FACTORY]:
        args += ["--input", spec]
    printed, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(err):
        code = main(args)
    return code, printed.getvalue() + err.getvalue()


def _available() -> list[str]:
    """tritonclient's versions on the package index, newest first; the test fails, with pip's
    reason, when the index cannot be read (CI installs everything from it: it is there)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "tritonclient"],
                          capture_output=True, text=True, timeout=300)
    m = re.search(r"Available versions: (.+)", proc.stdout)
    if proc.returncode != 0 or not m:
        reason = " ".join((proc.stderr or proc.stdout).split())[-400:]
        pytest.fail(f"pip cannot read tritonclient's versions from the package index: {reason}")
    return [v.strip() for v in m.group(1).split(",")]


def _client_for(release: str, available: list[str]) -> tuple[str, str]:
    """(the tritonclient version to check ``release`` with, a sentence saying which and why)."""
    want = releases.SERVER_VERSIONS.get(release)
    if want in available:
        return want, f"{release}: tritonclient {want}, the release's own"
    newest = available[0]
    missing = f"tritonclient {want} is not on the package index" if want else \
        "its tritonclient version is not known (not yet released when the table was written)"
    return newest, f"{release}: {missing}; checked with the newest there, {newest}"


def _pip_install(python: Path, *requirements: str) -> None:
    """``pip install --no-deps`` into the environment of ``python``; the test fails, with pip's
    reason, when it does."""
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                           *requirements], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        reason = " ".join((proc.stderr or proc.stdout).split())[-400:]
        pytest.fail(f"pip could not install {' '.join(requirements)}: {reason}")


def _protobuf_for(model_config_pb2: Path) -> str:
    """The protobuf runtime for that generated module: the version it was generated with, which
    newer tritonclients require; else this environment's."""
    import google.protobuf

    m = re.search(r"# Protobuf Python Version: (\S+)", model_config_pb2.read_text()[:500])
    return m.group(1) if m else google.protobuf.__version__


def _side_env(version: str) -> Path:
    """The Python of an environment holding tritonclient ``version`` (no dependencies) and the
    protobuf its ModelConfig needs: made once under the cache, then reused."""
    home = cache_dir() / "tritonclient" / version
    python = home / "bin" / "python"
    if (home / ".complete").is_file():
        return python
    shutil.rmtree(home, ignore_errors=True)
    tmp = home.with_name(f"{version}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
    try:
        _pip_install(tmp / "bin" / "python", f"tritonclient=={version}")
        generated = next(tmp.glob("lib/python*/site-packages/tritonclient/grpc/"
                                  "model_config_pb2.py"))
        _pip_install(tmp / "bin" / "python", f"protobuf=={_protobuf_for(generated)}")
    except BaseException:  # a pytest.fail too: nothing half-made stays in the cache
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".complete").write_text(version + "\n")
    if not home.exists():
        os.replace(tmp, home)  # a venv's scripts name its folder: python is called by path
    shutil.rmtree(tmp, ignore_errors=True)
    return python


def _parse_errors(python: Path, configs: list[Path]) -> dict[str, str | None]:
    proc = subprocess.run([str(python), "-c", PARSE, *map(str, configs)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """{release: the configs written for it}, and what the builds printed."""
    root = tmp_path_factory.mktemp("releases")
    code, printed_2606 = _build(root / "built", "26.06", "aoti")
    assert code == 0, printed_2606
    code, printed_2410 = _build(root / "built_2410", "24.10", "libtorch,aoti")
    assert code == 3, printed_2410  # aoti refused, libtorch written
    spec = build_spec({"source": fixture_source(FACTORY), "out": str(root / "api"),
                       "input": [parse_input(s) for s in INPUTS[FACTORY]]})
    ctx, _ = prepare(spec)
    variant = registry.get("aoti")
    configs = {"24.10": [root / "built_2410" / f"{FACTORY}_libtorch" / "config.pbtxt"]}
    for release in RELEASES[1:]:
        served = variant.served_spec(ctx.spec.with_(triton_release=release))
        model_dir = root / "api" / release / f"{FACTORY}_aoti"
        model_dir.mkdir(parents=True)
        write_config(model_dir, model_config(served, model_dir.name, variant.engine, {}),
                     build_header(variant.name))
        configs[release] = [model_dir / "config.pbtxt"]
    return configs, root, {"26.06": printed_2606, "24.10": printed_2410}


def test_the_26_06_build_runs_end_to_end_and_matches_the_config_writer(written):
    configs, root, printed = written
    model = layout.BuiltModel(root / "built" / f"{FACTORY}_aoti")
    assert model.target_release == "26.06" and model.record["check"]["ok"]
    # the sample cases (batch 4 and 3), then batch 1 and max_batch_size 8
    assert model.record["check"]["detail"].startswith("matches eager on 4 inputs")
    assert [i.name for i in model.config.input] == ["KWARGS[tokens]", "KWARGS[mask]"]
    assert [o.name for o in model.config.output] == ["RESULT[0]", "RESULT[1]"]
    assert model.config.max_batch_size == 8 and model.config.HasField("dynamic_batching")
    assert (model.path / "config.pbtxt").read_text() == configs["26.06"][0].read_text()


def test_for_24_10_aoti_is_refused_with_the_release_that_serves_it(written):
    configs, root, printed = written
    assert "ERROR: variant aoti refused: torch_aoti needs Triton 26.03 or later" \
        in printed["24.10"]
    assert "--triton-release 26.06" in printed["24.10"] and "python-aoti" in printed["24.10"]
    assert "Traceback" not in printed["24.10"]
    assert not (root / "built_2410" / f"{FACTORY}_aoti").exists()
    assert configs["24.10"][0].is_file()


def test_each_releases_config_parses_with_that_releases_model_config(written, capsys):
    configs, _, _ = written
    available = _available()
    said = []
    for release in RELEASES:
        version, sentence = _client_for(release, available)
        said.append(sentence)
        errors = _parse_errors(_side_env(version), configs[release])
        assert all(e is None for e in errors.values()), (sentence, errors)
    with capsys.disabled():
        print("\n".join(["", "ModelConfig schemas checked:", *said]))
    assert any(s.startswith("26.06: tritonclient 2.70.0, the release's own") for s in said), said


def test_the_schema_check_rejects_a_field_the_release_does_not_know(written, tmp_path):
    """The check can fail: text_format.Parse of 2.51.0's ModelConfig refuses a made-up field."""
    version, _ = _client_for("24.10", _available())
    bad = tmp_path / "config.pbtxt"
    bad.write_text(written[0]["26.06"][0].read_text() + 'no_such_field: "x"\n')
    errors = _parse_errors(_side_env(version), [bad])
    assert "no_such_field" in errors[str(bad)]
