"""Faults against the real `gen-repo serve` (benchmarks/faults.py drives the same faults and
times them): after each, serve is still running and serves right again by itself; a model
unloaded through model control stays unloaded while its neighbour keeps answering."""

from __future__ import annotations

import pytest

from benchmarks.faults import FAULTS, Served, build, inject

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "repo"
    build(out)
    return out


@pytest.mark.parametrize("fault", FAULTS)
def test_serve_recovers_by_itself(repo, tmp_path, fault):
    served = Served(repo, tmp_path / "serve.log")
    try:
        outcome = inject(served, fault, stop_seconds=5, kills=3, timeout=150)
        alive = served.proc.poll() is None
    finally:
        code = served.stop()
    assert outcome.recovered and alive, f"{outcome}\n{served.output()}"
    assert code == 0, served.output()
