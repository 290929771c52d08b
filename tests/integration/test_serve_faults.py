"""Faults against the real `gen-repo serve` (benchmarks/faults.py drives the same faults and
times them): after each, serve is still running and serves right again by itself; a model
unloaded through model control stays unloaded while its neighbour keeps answering."""

from __future__ import annotations

import pytest

import time

from benchmarks.faults import FAULTS, MODEL, OTHER, Served, build, inject, zombies

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


def test_dead_stubs_past_the_limit_start_the_server_again(repo, tmp_path):
    """Triton 24.10 never reaps a dead stub; past --max-dead-stubs, serve starts the server
    again, which frees them, and the models answer right afterwards."""
    served = Served(repo, tmp_path / "serve.log", ("--max-dead-stubs", "2"))
    try:
        outcome = inject(served, "gRPC stub kills", kills=3, timeout=150)
        deadline = time.monotonic() + 60
        while "starting the server again to free them" not in served.output():
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.5)
        assert served.wait_recovered(time.monotonic(), (MODEL, OTHER), 120) is not None
        left = zombies(served.proc.pid)
    finally:
        code = served.stop()
    assert outcome.recovered and left == 0 and code == 0, f"{outcome} {left}\n{served.output()}"
