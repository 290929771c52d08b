"""Each variant is checked in a process of its own, as the server runs it: a model whose code
registers a custom op when imported passes as the eager (torch.package) variant, which carries
that code, and its TorchScript file, which does not, is refused -- even when the eager variant
was checked first in the same build (one shared process used to lend it the op)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("factory,op", [("custom_op", "genrepo_fixture::triple"),
                                        ("decorated_op", "genrepo_fixture_decorated::offset")])
def test_one_variants_import_never_lends_another_its_op(tmp_path, run_cli, factory, op):
    code, out, err = run_cli("build", f"{ROOT}/tests/fixtures/process_state.py:{factory}",
                             "--input", "x:float32:4", "--variants", "python,python-ts",
                             "--out", tmp_path / "repo")
    assert code == 3, out + err  # one variant written, one refused
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.startswith(("python ", "python-ts "))}
    assert " OK " in rows["python"], out
    assert " FAILED " in rows["python-ts"] and op in rows["python-ts"], out
    assert not (tmp_path / "repo" / f"{factory}_python_ts").exists()
