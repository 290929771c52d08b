"""Real-world model coverage: every case builds, checks offline, serves on the embedded server and
verifies over HTTP and gRPC — or is refused with the exact reason. The README's coverage table is
produced from these results (set GEN_REPO_UPDATE_README=1 to rewrite it)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import pytest

from generator.build.pipeline import build_repository
from generator.cli import make_parser
from generator.commands.build import spec_from_args
from generator.repository import layout
from generator.errors import GenRepoError
from generator.serve.verify import VerifyOptions, verify_repository
from tests.conftest import ROOT, fixture_source
from tests.fixtures.models import UNBATCHED
from tests.integration.conftest import PYTORCH_BACKEND, embedded_server, needs_pytorch_backend

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    kind: str  # the README row
    args: tuple[str, ...]  # gen-repo build arguments (without --out)
    cwd: str | None = None
    serve_torchscript: bool = False  # also serve the TorchScript artifact (python-ts variant)
    refused: str | None = None  # the build refuses the model: its error starts with this

    @property
    def variants(self) -> str:
        return "libtorch,python" + (",python-ts" if self.serve_torchscript else "")


def fx(factory: str, *inputs: str) -> tuple[str, ...]:
    return (fixture_source(factory), *[a for i in inputs for a in ("--input", i)])


CASES = {
    "multi_input": Case("float32 + int64 + bool inputs, dict output",
                        fx("multi_input_dict", "features:float32:8", "ids:int64:4:0..50",
                           "mask:bool:4"), serve_torchscript=True),
    "nested": Case("list output with a nested dict", fx("nested_outputs", "x:float32:6")),
    "dynamic_axis": Case("TransformerEncoder, dynamic sequence length, tuple output",
                         fx("seq_encoder", "tokens:int64:-1:0..100", "mask:bool:-1"),
                         serve_torchscript=True),
    "branch_fallback": Case("data-dependent branch (trace is wrong)",
                            fx("branchy", "x:float32:4"), serve_torchscript=True),
    "untraceable": Case("numpy-driven branch (trace wrong, script fails)",
                        fx("untraceable", "x:float32:4")),
    "user_package": Case("user package: helper modules, numpy, a pure-Python library",
                         ("userpkg.model:make", "--input", "signal:float32:16", "--name",
                          "userpkg"), cwd=str(ROOT / "tests" / "fixtures")),
    "stateful": Case("dropout in train mode + buffer updated in forward()",
                     fx("counter", "x:float32:4")),
    "fp16": Case("--dtype fp16 (checked on CPU; GPU group needs a GPU)",
                 fx("tiny_mlp", "x:float32:16") + ("--dtype", "fp16", "--name", "mlp_fp16")),
    "no_batch": Case("no batch dimension (--max-batch-size 0)",
                     fx("tiny_mlp", "x:float32:16") + ("--max-batch-size", "0", "--name",
                                                       "mlp_nobatch")),
    "batch_axis": Case("batch on axis 1 (time-major GRU, --batch-axis 1)",
                       fx("seq_first", "x:float32:7x6") + ("--batch-axis", "1")),
    "segmentation": Case("torchvision segmentation (lraspp_mobilenet_v3_large), dict output",
                         ("torchvision:lraspp_mobilenet_v3_large", "--input",
                          "input:float32:3x64x64", "--max-batch-size", "2", "--name", "lraspp")),
    "detection": Case("torchvision detection, one image per request, variable box count",
                      fx("detector", "image:float32:3x128x128") + ("--max-batch-size", "0")),
    "large": Case("large model: ~520 MB of weights",
                  fx("large", "x:float32:100") + ("--max-batch-size", "4")),
    "unpicklable": Case("module attribute torch.package cannot pickle (a lambda)",
                        fx("lambda_attr", "x:float32:4")),
    "value_branch": Case("`if` on a tensor's value the samples never cross (TracerWarning)",
                         fx("value_branch", "x:float32:-1x4") + UNBATCHED,
                         serve_torchscript=True),
    "value_branch_unscriptable": Case("`if` on a tensor's value, forward() not scriptable",
                                      fx("value_branch_unscriptable", "x:float32:-1x4")
                                      + UNBATCHED),
    "numpy_scale": Case("NumPy computation in forward(), no branch",
                        fx("numpy_scale", "x:float32:4")),
    "keyword_inputs": Case("BERT-like forward(input_ids, attention_mask=None,"
                           " token_type_ids=None), two of the three given",
                           fx("tiny_bert", "input_ids:int64:-1:0..30",
                              "token_type_ids:int64:-1:0..2"), serve_torchscript=True),
    "row_scalars": Case("one value per row in and out (a scalar input; argmax label, score,"
                        " flag outputs): served [B, 1]",
                        fx("row_scalars", "x:float32:8", "t:float32:scalar"),
                        serve_torchscript=True),
    "row_scalars_nobatch": Case("0-d input and outputs without a batch dimension"
                                " (--max-batch-size 0): served [1]",
                                fx("row_scalars", "x:float32:8", "t:float32:scalar")
                                + ("--max-batch-size", "0", "--name", "row_scalars_nobatch")),
    "ranker": Case("the README's examples/ranker (its score is one value per row)",
                   (f"{ROOT}/examples/ranker/net.py:make_model", "--input",
                    "tokens:int64:-1:0..1000", "--input", "mask:bool:-1", "--name", "ranker")),
    "batch_coupled": Case("rows that depend on each other (centred over the batch)",
                          fx("batch_centred", "x:float32:6"),
                          refused="rows of a batch depend on each other"),
    "batch_coupled_nobatch": Case("the same without a batch dimension (--max-batch-size 0,"
                                  " --input x:float32:-1x6)",
                                  fx("batch_centred", "x:float32:-1x6")
                                  + ("--max-batch-size", "0", "--name", "centred_nobatch")),
    "batched_detection": Case("torchvision detection called on a batch (one dict per image)",
                              fx("batched_detector", "images:float32:3x128x128"),
                              refused="the model returns one result per image"),
    "data_files": Case("user package reading data files at import (importlib.resources)",
                       ("vocabpkg.model:make", "--input", "tokens:int64:-1:0..13", "--name",
                        "vocabpkg"), cwd=str(ROOT / "tests" / "fixtures")),
    "data_file_dunder": Case("user package reading a data file at import through __file__",
                             ("pathpkg.model:make", "--input", "x:float32:4", "--name",
                              "pathpkg"), cwd=str(ROOT / "tests" / "fixtures")),
}


@dataclass(frozen=True)
class Refused:
    """A build refused before any variant was exported."""

    spec: object  # ModelSpec
    error: GenRepoError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = tmp_path_factory.mktemp("coverage") / "repo"
    reports = {}
    for key, case in CASES.items():
        args = make_parser().parse_args(["build", *case.args, "--out", str(repo),
                                         "--variants", case.variants])
        old = os.getcwd()
        try:
            if case.cwd:
                os.chdir(case.cwd)
            spec = spec_from_args(args)
            try:
                reports[key] = build_repository(spec)
            except GenRepoError as e:
                if not case.refused:
                    raise
                reports[key] = Refused(spec, e)
        finally:
            os.chdir(old)
    return repo, reports


@pytest.fixture(scope="module")
def verified(built, tmp_path_factory):
    repo, reports = built
    models = layout.list_models(repo)
    with embedded_server(repo, tmp_path_factory.mktemp("logs")) as (server, statuses):
        report = verify_repository(models, server.http_url, server.grpc_url,
                                   VerifyOptions(requests=24, concurrency=8, bad_requests=False))
    return {(r.model, r.protocol): r for r in report.results}, statuses


def _result(report, variant):
    return next(r for r in report.results if r.variant == variant)


def _cell(result) -> str:
    if result.status != "OK":
        d = result.detail
        if "Converting a tensor to a NumPy array" in d and "torch.jit.script failed" in d:
            return ("refused, naming the NumPy call: the trace keeps its value and"
                    " torch.jit.script cannot compile NumPy")
        if d.startswith("the trace raised TracerWarnings") and "torch.jit.script failed" in d:
            return ("refused, naming the `if` line: the trace raised TracerWarnings and"
                    " torch.jit.script fails")
        if "torch.jit.script failed" in d:
            return "refused: trace is wrong on a second input and torch.jit.script fails"
        if "pickle" in d or "torch.package" in d:
            return "refused: torch.package cannot pickle the model"
        if result.tip and "through __file__" in result.tip:
            return ("refused: no folder inside the archive; the error names the file and the"
                    " importlib.resources fix")
        return "refused: " + d.split(":")[0]
    if result.detail.startswith("script (the trace raised TracerWarnings)"):
        return "torch.jit.script (the trace raised TracerWarnings)"
    if result.detail.startswith("script") and any("fell back" in n for n in result.notes):
        return "falls back to torch.jit.script (trace bakes in the branch)"
    needs = [n.split("provide ")[1].split(":")[0] for n in result.notes
             if "server's Python must provide" in n]
    return f"supported (the server needs {', '.join(needs)})" if needs else "supported"


# TorchScript that calls torchvision::nms / roi_align: a PyTorch backend built without TorchVision
# ops (as the one these tests use) cannot load it.
NEEDS_TORCHVISION_OPS = {"detection"}

EXPECTED = {  # key -> (libtorch, python): what must happen
    "untraceable": ("FAILED", "OK"),
    "unpicklable": ("OK", "FAILED"),
    "value_branch_unscriptable": ("FAILED", "OK"),
    "numpy_scale": ("FAILED", "OK"),
    "data_file_dunder": ("OK", "FAILED"),
}


@pytest.mark.parametrize("key", list(CASES))
def test_case_builds_checks_serves_verifies(key, built, verified):
    repo, reports = built
    results, statuses = verified
    report = reports[key]
    if CASES[key].refused:
        assert isinstance(report, Refused), report.table()
        assert report.error.message.startswith(CASES[key].refused), report.error.message
        assert "--max-batch-size 0" in report.error.tip
        assert not [p for p in repo.iterdir() if p.name.startswith(report.spec.name)]
        return
    want = EXPECTED.get(key, ("OK", "OK"))
    got = (_result(report, "libtorch").status, _result(report, "python").status)
    assert got == want, report.table()
    name = report.spec.name
    for variant in CASES[key].variants.split(",")[1:]:
        r = _result(report, variant)
        if r.status != "OK":
            assert not (repo / r.model).exists()  # refused: nothing half-written
            continue
        assert statuses[r.model].state == "READY", statuses[r.model]
        for proto in ("HTTP", "gRPC"):
            v = results[(r.model, proto)]
            assert v.status == "OK", f"{r.model} {proto}: {v.detail}"
    lib = _result(report, "libtorch")
    if lib.status == "OK":
        served = statuses[lib.model]
        if not PYTORCH_BACKEND:
            assert served.state == "SKIPPED" and "no PyTorch backend" in served.reason
        elif key in NEEDS_TORCHVISION_OPS:  # the backend was built without them: said plainly
            assert served.state == "SKIPPED" and "TorchVision ops" in served.reason, served
            assert any("torchvision::nms" in n for n in lib.notes), lib.notes
        else:  # served on the real PyTorch backend and verified like the Python-backend ones
            assert served.state == "READY", served
            for proto in ("HTTP", "gRPC"):
                v = results[(lib.model, proto)]
                assert v.status == "OK", f"{lib.model} {proto}: {v.detail}"
    if key == "user_package":
        assert any("sortedcontainers" in n for n in _result(report, "python").notes)
    if key == "stateful":
        assert any("restores" in n for n in report.notes)
        assert any("Dropout" in n for n in report.notes)
    if key == "branch_fallback":
        assert _cell(lib).startswith("falls back")
    if key == "value_branch":  # the trace matched both samples; it still does not ship
        assert lib.detail.startswith("script (the trace raised TracerWarnings)"), lib.detail
    if key in ("untraceable", "numpy_scale"):
        assert "NumPy" in lib.tip and "control flow" not in lib.detail + lib.tip
    if key == "value_branch_unscriptable":
        assert "torch.where" in lib.tip and "--accept-trace-warnings" in lib.tip
    if key == "data_files":  # served above from the archive's own copies
        assert any("packed 2 data file(s) of vocabpkg" in n
                   for n in _result(report, "python").notes)
    if key == "data_file_dunder":
        assert "settings.json" in _result(report, "python").tip
    if key == "large":  # no three copies in memory: weights 0.52 GB, torch itself ~0.6 GB
        peak = next(n for n in report.notes if n.startswith("peak memory of this build"))
        assert float(re.search(r"build: ([\d.]+) GB", peak).group(1)) < 2.2, peak


def coverage_table(reports) -> str:
    """The README table, as served with the real PyTorch backend (no TorchVision ops)."""
    lines = ["| model kind | libtorch (TorchScript) | python (eager, torch.package) | served here |",
             "|---|---|---|---|"]
    for key, case in CASES.items():
        report = reports[key]
        if isinstance(report, Refused):
            cell = "refused: " + report.error.message.split(":")[0]
            lines.append(f"| {case.kind} | {cell} | {cell} | - |")
            continue
        lib, py = _result(report, "libtorch"), _result(report, "python")
        served = []
        if lib.status == "OK":
            served.append("libtorch: skipped, the backend has no TorchVision ops"
                          if key in NEEDS_TORCHVISION_OPS else "libtorch: HTTP + gRPC verified")
        if py.status == "OK":
            served.append("python: HTTP + gRPC verified")
        if lib.status == "OK" and case.serve_torchscript:
            served.append("TorchScript (python-ts): HTTP + gRPC verified")
        served = "; ".join(served) or "-"
        lines.append(f"| {case.kind} | {_cell(lib)} | {_cell(py)} | {served} |")
    return "\n".join(lines)


@needs_pytorch_backend  # the table says what was served with one
def test_readme_coverage_table_matches(built, verified):
    _, reports = built
    table = coverage_table(reports)
    readme = ROOT / "README.md"
    text = readme.read_text()
    pattern = re.compile(r"(<!-- coverage:start -->\n)(?:.*?\n)?(<!-- coverage:end -->)", re.S)
    assert pattern.search(text), "README lacks the coverage markers"
    if os.environ.get("GEN_REPO_UPDATE_README"):
        readme.write_text(pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))
        text = readme.read_text()
    assert table in text, "README coverage table is stale; rerun with GEN_REPO_UPDATE_README=1:\n" + table
