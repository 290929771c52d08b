"""The python variant's weights are mapped from 1/weights.pt: the instances of a model share
their pages (each maps the same file, its pages counted once across them), the answers are
verified over HTTP and gRPC like any other model's, and --no-mapped-weights keeps them in the
archive (each instance its own copy, no mapping)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from generator.repository import layout
from generator.serve.processes import file_memory, stub_processes, stubs_of
from generator.serve.verify import VerifyOptions, verify_repository
from generator.status import OK, READY
from tests.conftest import ROOT
from tests.integration.conftest import embedded_server

pytestmark = pytest.mark.integration

SOURCE = f"{ROOT}/tests/fixtures/weights.py:wide_mlp"
WEIGHTS_MIB = (2048 * 2048 + 2048 + 2048 * 8 + 8) * 4 / 2**20


def _exercise(server, name: str) -> None:
    """Requests enough at once for both instances to run the model (and touch its weights)."""
    import tritonclient.http as httpclient

    def one(_):
        client = httpclient.InferenceServerClient(server.http_url)
        x = httpclient.InferInput("x", [4, 2048], "FP32")
        x.set_data_from_numpy(np.random.rand(4, 2048).astype(np.float32))
        for _ in range(10):
            client.infer(name, [x])
        client.close()

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(6)))


def test_instances_share_the_mapped_weights(tmp_path, run_cli):
    out = tmp_path / "repo"
    for name, flag in (("mapped", "--mapped-weights"), ("inside", "--no-mapped-weights")):
        code, _, err = run_cli("build", SOURCE, "--input", "x:float32:2048", "--name", name,
                               "--variants", "python", "--cpu-instances", "2", flag,
                               "--out", out)
        assert code == 0, err
    assert (out / "mapped_python/1/weights.pt").is_file()
    assert not (out / "inside_python/1/weights.pt").exists()
    models = [layout.BuiltModel(out / n) for n in ("mapped_python", "inside_python")]
    with embedded_server(out, tmp_path, models) as (server, statuses):
        assert {s.state for s in statuses.values()} == {READY}, statuses
        for model in models:
            _exercise(server, model.name)
        stubs = {m.name: stubs_of(stub_processes(server.pid).values(), m.name) for m in models}
        assert [len(s) for s in stubs.values()] == [2, 2], stubs
        mapped = [file_memory(p.pid, "weights.pt") for p in stubs["mapped_python"]]
        size = WEIGHTS_MIB * 2**20
        for m in mapped:  # each maps the whole file; its pages are counted once across the two
            assert m["Rss"] > 0.9 * size and m["Pss"] < 0.6 * size, mapped
        assert all(file_memory(p.pid, "weights.pt")["Rss"] == 0 for p in stubs["inside_python"])
        report = verify_repository(models, server.http_url, server.grpc_url,
                                   VerifyOptions(requests=8, concurrency=4))
        assert {r.status for r in report.results} == {OK}, report.results
