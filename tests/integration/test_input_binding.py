"""Inputs reach forward() by the names the model has, never by a guessed order: a TorchScript
module loaded from a file binds by its schema's names (two same-shaped inputs declared in the
other order are served right, and verify's references agree with an independent eager call);
a forward(*args) with several inputs is refused unless the user says the order."""

from __future__ import annotations

import numpy as np
import pytest

from generator.repository import layout
from generator.status import OK
from tests.conftest import ROOT
from tests.integration.conftest import embedded_server, models_named

pytestmark = pytest.mark.integration

SOURCE = f"{ROOT}/tests/fixtures/binding.py"


def test_a_loaded_torchscript_module_is_served_by_its_own_names(tmp_path, run_cli):
    from generator.serve.verify import VerifyOptions, verify_repository

    out = tmp_path / "repo"
    code, _, err = run_cli("build", f"{SOURCE}:loaded_torchscript", "--out", out,
                           "--variants", "python-ts", "--input", "subtrahend:float32:4",
                           "--input", "minuend:float32:4")  # the other order than forward()'s
    assert code == 0, err
    model = layout.BuiltModel(out / "loaded_torchscript_python_ts")
    for _, inputs, reference in model.cases():  # what verify compares with, checked here alone
        want = inputs["minuend"] - 2 * inputs["subtrahend"]
        assert np.allclose(reference["output"], want, atol=1e-5)
    with embedded_server(out, tmp_path, models_named(out, model.name)) as (server, statuses):
        assert statuses[model.name].state == "READY", statuses
        report = verify_repository([model], server.http_url, server.grpc_url,
                                   VerifyOptions(requests=8, concurrency=2))
        assert {r.status for r in report.results} == {OK}, report.results


def test_several_inputs_by_position_need_the_users_word(tmp_path, run_cli):
    args = ["build", f"{SOURCE}:star_args", "--out", tmp_path / "repo", "--variants", "python",
            "--input", "a:float32:4", "--input", "b:float32:4"]
    code, _, err = run_cli(*args)
    assert code == 2 and "cannot tell which of the 2 inputs (a, b) goes where" in err, err
    assert "--inputs-by-position" in err and not (tmp_path / "repo").exists()
    code, out, err = run_cli(*args, "--inputs-by-position")
    assert code == 0, err
    assert "by position, in --input order as --inputs-by-position says" in out


def test_the_python_variant_of_a_torchscript_module_is_refused_with_the_route(tmp_path, run_cli):
    code, _, err = run_cli("build", f"{SOURCE}:loaded_torchscript", "--out", tmp_path / "repo",
                           "--variants", "python", "--input", "minuend:float32:4",
                           "--input", "subtrahend:float32:4")
    assert code == 1 and "TIP: The model is a TorchScript module" in err, err
    assert "refused: the model is a TorchScript module, which the python variant cannot carry" \
        in err, err
    assert "--variants libtorch,python-ts" in err
