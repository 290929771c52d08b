"""The user's own code and files, as real-world model classes bring them, through `gen-repo build`:
a package that reads data files beside its modules when imported, a model module whose import
fails (a library that is not installed, a package-relative import in the file form, an exception
at import time), and --weights that do not fit. Each either builds, serves on the embedded server
and verifies, or is refused with one ERROR paragraph and a TIP that says what to do, and leaves
no model directory behind."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from generator.repository import layout, staging
from generator.cli import main
from tests.conftest import ROOT, fixture_source
from tests.integration.conftest import embedded_server

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures"


def build(capsys, *args) -> tuple[int, str, str]:
    """`gen-repo -q build ARGS`; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["-q", "build", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str) -> tuple[str, str]:
    """The ERROR and TIP paragraphs of a refusal (each one line); nothing else was printed."""
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("ERROR: ")]
    tips = [ln for ln in lines if ln.startswith("TIP: ")]
    assert len(errors) == 1 and len(tips) == 1, err
    assert "Traceback" not in err and "internal error" not in err and "gen-repo bug" not in err
    assert "\x1b" not in err, "escape codes in the message"
    return errors[0], tips[0]


def nothing_written(out: Path) -> bool:
    left = list(out.parent.glob(f"{staging.STAGING_PREFIX}*"))
    return not left and (not out.exists() or not any(out.iterdir()))


# ---------------------------------------------------------------------------------------------
# a package that reads data files beside its modules when it is imported


def test_package_reading_data_files_with_importlib_resources_builds_serves_verifies(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    repo = tmp_path / "repo"
    code, out, err = build(capsys, "vocabpkg.model:make", "--input", "tokens:int64:-1:0..13",
                           "--name", "vocab", "--variants", "python", "--out", repo)
    assert code == 0, err
    assert "packed 2 data file(s) of vocabpkg" in out, out
    # The archive carries the files; the build's check loaded it in a fresh `python -I` process
    # with vocabpkg unimportable, so they were read from the archive.
    with zipfile.ZipFile(repo / "vocab_python" / "1" / "model.package") as z:
        names = z.namelist()
    assert any(n.endswith("/vocabpkg/config.json") for n in names), names
    assert any(n.endswith("/vocabpkg/vocab.txt") for n in names), names
    monkeypatch.chdir(tmp_path)  # the server's working folder holds no user code either
    with embedded_server(repo, tmp_path) as (server, statuses):
        assert statuses["vocab_python"].state == "READY", statuses
        capsys.readouterr()
        code = main(["-q", "verify", "--repo", str(repo), "--http-url", server.http_url,
                     "--grpc-url", server.grpc_url, "--requests", "16", "--concurrency", "4"])
        out, err = capsys.readouterr()
    assert code == 0, out + err
    assert sum(" OK " in line for line in out.splitlines()) == 2, out  # HTTP and gRPC


def test_package_reading_a_data_file_through_dunder_file_is_refused_naming_file_and_fix(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    out = tmp_path / "repo"
    code, _, err = build(capsys, "pathpkg.model:make", "--input", "x:float32:4",
                         "--variants", "python", "--out", out)
    assert code == 1
    error, tip = one_error(err)
    assert "FileNotFoundError" in error and "pathpkg/__init__.py:7" in error, error
    assert 'Path(__file__).parent / "settings.json"' in error, error
    assert "settings.json beside its module through __file__" in tip, tip
    assert 'importlib.resources.files(pathpkg).joinpath("settings.json")' in tip, tip
    assert nothing_written(out)


READS_BY_NAME = {
    "string-anchor": "from importlib import resources\n"
                     "CONFIG = json.loads(resources.files(__package__).joinpath('c.json')"
                     ".read_text())\n",
    "pkgutil": "import pkgutil\nCONFIG = json.loads(pkgutil.get_data(__name__, 'c.json'))\n",
}


@pytest.mark.parametrize("idiom", list(READS_BY_NAME))
def test_data_file_read_by_the_package_name_is_refused_naming_the_fix(tmp_path, capsys,
                                                                      monkeypatch, idiom):
    """Reads that address the package by its name go through the normal import system, where
    the server has no user code: refused at the build's offline check, with the line."""
    pkg = tmp_path / f"byname_{idiom.replace('-', '_')}"
    (pkg / "raw").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import json\n" + READS_BY_NAME[idiom])
    (pkg / "c.json").write_text('{"width": 3}')
    (pkg / "raw" / "table.bin").write_bytes(b"\0" * 8)  # in a folder that is no package
    (pkg / "model.py").write_text(  # its class lives in the package: the archive imports it
        "import torch\nfrom . import CONFIG\n\n\nclass Net(torch.nn.Linear):\n    pass\n\n\n"
        "def make():\n    return Net(CONFIG['width'], 2)\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "repo"
    code, stdout, err = build(capsys, f"{pkg.name}.model:make", "--input", "x:float32:3",
                              "--variants", "python", "--out", out)
    assert code == 1
    error, tip = one_error(err)
    assert f"{pkg.name}/__init__.py:3" in error, error
    assert "imports your code by its name at run time" in tip, tip
    assert f"importlib.resources.files({pkg.name})" in tip, tip
    assert f"packed 1 data file(s) of {pkg.name}" in stdout, stdout
    assert f"not packed: 1 file(s) in folders that are no Python package ({pkg}/raw/table.bin)" \
        in stdout, stdout
    assert nothing_written(out)


# ---------------------------------------------------------------------------------------------
# the model module fails while it is imported


@pytest.mark.parametrize("source,cwd,where,fragments", [
    ("tests/fixtures/missing_import.py:make", ROOT, "tests/fixtures/missing_import.py:7",
     ["imports the module 'gen_repo_absent_library', which is not installed"]),
    ("missing_import:make", FIXTURES, "missing_import.py:7",
     ["imports the module 'gen_repo_absent_library', which is not installed"]),
    ("tests/fixtures/import_raises.py:make", ROOT, "tests/fixtures/import_raises.py:8",
     ["KeyError: 'height'", 'HEIGHT = SETTINGS["height"]']),
    ("import_raises:make", FIXTURES, "import_raises.py:8",
     ["KeyError: 'height'", 'HEIGHT = SETTINGS["height"]']),
], ids=["missing-library-file", "missing-library-module", "raises-file", "raises-module"])
def test_import_failure_in_the_users_module_names_file_line_and_fix(
        tmp_path, capsys, monkeypatch, source, cwd, where, fragments):
    monkeypatch.chdir(cwd)
    out = tmp_path / "repo"
    code, _, err = build(capsys, source, "--input", "x:float32:4", "--out", out)
    assert code == 1
    error, tip = one_error(err)
    assert f"importing the model source '{source}' failed" in error, error
    assert where in error, error
    for fragment in fragments:
        assert fragment in error, error
    if "missing" in source:
        assert "pip install gen_repo_absent_library" in tip, tip
    else:
        assert "runs when the module is imported" in tip, tip
    assert nothing_written(out)


def test_package_relative_import_in_the_file_form_says_to_use_the_module_form(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "repo"
    code, _, err = build(capsys, "tests/fixtures/userpkg/model.py:make", "--input",
                         "signal:float32:16", "--variants", "python", "--out", out)
    assert code == 1
    error, tip = one_error(err)
    assert "tests/fixtures/userpkg/model.py:4 uses a package-relative import" in error, error
    assert "`from .features import filter_bank`" in error, error
    # tests/fixtures is a package too, so the module is fixtures.userpkg.model from tests/
    assert "cd tests && gen-repo build fixtures.userpkg.model:make" in tip, tip
    assert nothing_written(out)
    # ... and the TIP's command builds it
    monkeypatch.chdir(ROOT / "tests")
    code, _, err = build(capsys, "fixtures.userpkg.model:make", "--input", "signal:float32:16",
                         "--variants", "python", "--out", out)
    assert code == 0, err


def test_syntax_error_in_the_users_file_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "syntax_error_net.py"  # a name no other test's model file has
    bad.write_text("import torch\n\ndef make(:\n    return torch.nn.Linear(2, 2)\n")
    out = tmp_path / "repo"
    code, _, err = build(capsys, f"{bad}:make", "--input", "x:float32:2", "--out", out)
    assert code == 1
    error, tip = one_error(err)
    assert f"SyntaxError at {bad}:3: `def make(:`" in error, error
    assert "syntax error" in tip
    assert nothing_written(out)


# ---------------------------------------------------------------------------------------------
# --weights that do not fit the model


def _build_mlp_with(capsys, weights: Path, out: Path) -> tuple[int, str, str]:
    return build(capsys, fixture_source("tiny_mlp"), "--input", "x:float32:16", "--weights",
                 weights, "--out", out)


def test_weights_of_another_architecture_are_summarised(tmp_path, capsys):
    import torch

    from tests.fixtures.models import TinyMLP, seq_encoder

    other = tmp_path / "seq_encoder.pt"
    torch.save(seq_encoder().state_dict(), other)
    out = tmp_path / "repo"
    code, _, err = _build_mlp_with(capsys, other, out)
    assert code == 1
    error, tip = one_error(err)
    assert len(error) < 600, f"{len(error)} characters: {error}"
    assert "does not fit the model TinyMLP" in error
    assert "4 keys missing from the file (net.0.weight, net.0.bias, net.2.weight, … and 1 more)" \
        in error, error
    assert "13 unexpected keys (emb.weight," in error and "… and 10 more" in error, error
    assert "another architecture" in tip and "model.state_dict()" in tip
    assert nothing_written(out)

    narrower = tmp_path / "narrower.pt"
    torch.save(TinyMLP(d_in=8).state_dict(), narrower)
    code, _, err = _build_mlp_with(capsys, narrower, out)
    error, _ = one_error(err)
    assert code == 1
    assert "1 size mismatch (net.0.weight: file 32x8, model 32x16)" in error, error
    assert "missing" not in error and "unexpected" not in error, error

    wrapped = tmp_path / "data_parallel.pt"
    torch.save({f"module.{k}": v for k, v in TinyMLP().state_dict().items()}, wrapped)
    code, _, err = _build_mlp_with(capsys, wrapped, out)
    _, tip = one_error(err)
    assert code == 1 and "the prefix 'module.'" in tip, tip
    assert nothing_written(out)


class _TouchOnLoad:
    """Unpickling this creates a file: what loading a pickled object from a checkpoint can do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_pickled_whole_model_as_weights_is_refused_in_one_paragraph(tmp_path, capsys):
    import torch

    from tests.fixtures.models import tiny_mlp

    whole = tmp_path / "whole_model.pt"
    torch.save(tiny_mlp(), whole)
    out = tmp_path / "repo"
    code, _, err = _build_mlp_with(capsys, whole, out)
    assert code == 1
    error, tip = one_error(err)
    assert "holds pickled Python objects (tests.fixtures.models.TinyMLP," in error, error
    assert "weights_only=True" in error and "runs code" in error, error
    assert "torch.save(model.state_dict(), path)" in tip, tip
    assert nothing_written(out)

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({"net.0.weight": _TouchOnLoad(marker)}, hostile)
    assert not marker.exists()
    code, _, err = _build_mlp_with(capsys, hostile, out)
    error, _ = one_error(err)
    assert code == 1 and "pathlib" in error, error
    assert not marker.exists(), "the checkpoint's pickled code ran"

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    code, _, err = _build_mlp_with(capsys, garbage, out)
    error, tip = one_error(err)
    assert code == 1 and "is not a checkpoint torch.load can read" in error, error
    assert nothing_written(out)
