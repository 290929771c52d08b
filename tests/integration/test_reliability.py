"""Reliability of a generated deployment under load, faults and damaged files, for real.

Every test does the bad thing on the real embedded tritonserver (2.51 = release 24.10): thousands
of concurrent requests, a flood past the queue limit, SIGKILL of a Python-backend stub during
traffic, a model that raises for some rows (alone and merged with good requests), inputs larger
than the Python backend's shared memory, and truncated / tampered artifacts. docs/reliability.md
states what these tests prove.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from tritonclient.utils import InferenceServerException

from generator.repository import layout, manifest
from generator.cli import main
from generator.serve.protocols import Protocol, error_message
from generator.runtime.model import load_model
from generator.serve.ports import Ports, free_ports
from generator.serve.processes import STUB_PROCESS
from generator.serve.server import EmbeddedServer
from generator.serve.verify import VerifyOptions, settled_stats, verify_repository
from generator.status import FAILED, READY
from tests.conftest import ROOT
from tests.fixtures import faulty as F
from tests.integration.conftest import (PYTORCH_BACKEND, Lines, copy_model, edit_config,
                                        embedded_server,
                                        models_named, needs_pytorch_backend, serve_process,
                                        wait_for_first_point)
from tests.integration.raw_requests import grpc_infer

pytestmark = pytest.mark.integration

MLP = "tiny_mlp_python"  # 2 CPU instances, dynamic batching: the soak and stub-kill target
MLP_LIBTORCH = "tiny_mlp_libtorch"  # the same on the real PyTorch backend, when there is one
FAULTY = "faulty_python"  # raises / sleeps on marker rows; queue limit 8, queue timeout 1 s
TRUNCATED = "truncated_python"  # model.package cut in half
TAMPERED_TS = "tampered_python_ts"  # python-ts model.pt with bytes changed, same length
RESEALED = "resealed_python"  # truncated package, its files recorded again (gen_repo.sha256)
UNHASHED = "unhashed_python"  # truncated package, the config's hash removed, files recorded again
QUEUE_SIZE, QUEUE_TIMEOUT_US = 8, 1_000_000

SOAK_REQUESTS = int(os.environ.get("GEN_REPO_SOAK_REQUESTS", "40000"))
SOAK_CLIENTS = 32  # half over HTTP, half over gRPC


# ---------------------------------------------------------------------------------------------
# the repository and the server


def _build(out: Path, source: str, *args: str) -> None:
    assert main(["-q", "build", source, "--out", str(out), *args]) == 0, f"building {source}"


def artifact_of(model_dir: Path) -> Path:
    params = layout.BuiltModel(model_dir).record["load_params"]
    return model_dir / layout.VERSION / params["artifact"]


def damaged_copy(repo: Path, source: str, name: str) -> Path:
    """A copy to damage, with one instance (a load that fails still starts each instance's
    Python process, and one is enough to prove the refusal)."""
    dst = copy_model(repo, source, name)

    def one_instance(config):
        for group in config.instance_group:
            group.count = 1

    edit_config(dst, one_instance)
    return dst


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("reliability") / "repo"
    _build(repo, f"{ROOT}/tests/fixtures/models.py:tiny_mlp", "--input", "x:float32:16",
           "--variants", "libtorch,python,python-ts", "--cpu-instances", "2")
    _build(repo, f"{ROOT}/tests/fixtures/faulty.py:faulty", *[f"--input={i}" for i in
           F.INPUTS["faulty"]], "--variants", "python", "--max-queue-size", str(QUEUE_SIZE),
           "--queue-timeout-us", str(QUEUE_TIMEOUT_US))

    # Damaged copies. A truncated archive: the first half of model.package.
    art = artifact_of(damaged_copy(repo, MLP, TRUNCATED))
    data = art.read_bytes()
    art.write_bytes(data[: len(data) // 2])
    # A tampered TorchScript file: same length, 16 bytes in the middle changed.
    art = artifact_of(damaged_copy(repo, "tiny_mlp_python_ts", TAMPERED_TS))
    data = bytearray(art.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    art.write_bytes(bytes(data))
    # Truncated, and whoever damaged it also recorded the files again (gen-repo seal): the
    # runtime's own check of the artifact against config.pbtxt's hash is left.
    art = artifact_of(damaged_copy(repo, MLP, RESEALED))
    art.write_bytes(art.read_bytes()[:4096])
    manifest.write(art.parent.parent)
    # Truncated, the hash removed from config.pbtxt, and the files recorded again: nothing
    # recorded is left to compare with.
    unhashed = damaged_copy(repo, MLP, UNHASHED)
    art = artifact_of(unhashed)
    art.write_bytes(art.read_bytes()[:4096])

    def unhash(config):
        del config.parameters["artifact_sha256"]

    edit_config(unhashed, unhash)
    manifest.write(unhashed)
    assert "artifact_sha256" not in (unhashed / layout.CONFIG).read_text()
    return repo


@pytest.fixture(scope="module")
def served(repo, tmp_path_factory):
    """One server for the module with the two good models; damaged ones are loaded by their test."""
    names = [MLP, FAULTY] + ([MLP_LIBTORCH] if PYTORCH_BACKEND else [])
    with embedded_server(repo, tmp_path_factory.mktemp("logs"),
                         models_named(repo, *names)) as (server, statuses):
        assert {n: s.state for n, s in statuses.items()} == dict.fromkeys(names, READY), statuses
        yield server


def stubs_of(server, model: str) -> list[psutil.Process]:
    """The running Python-backend stub processes serving ``model``."""
    out = []
    for p in psutil.Process(server.pid).children():
        try:
            if p.name() == STUB_PROCESS and p.status() != psutil.STATUS_ZOMBIE and \
                    Path(p.cmdline()[1]).parent.parent.name == model:
                out.append(p)
        except (psutil.Error, IndexError):
            pass
    return out


def server_rss(server) -> int:
    """Resident memory of tritonserver and its stub processes, in bytes."""
    return server.resident_bytes()


def protocols(server) -> list[Protocol]:
    return [Protocol("http", server.http_url), Protocol("grpc", server.grpc_url)]


def eager_mlp(repo: Path):
    """The eager model exactly as the server loads it (same artifact, same loader)."""
    import torch

    model = layout.BuiltModel(repo / MLP)
    net = load_model(repo / MLP / layout.VERSION, model.record["load_params"])

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return run, model.spec


def mlp_request(proto: Protocol, client, x: np.ndarray, model: str = MLP) -> np.ndarray:
    return proto.infer(client, model, [("x", x, "FP32")], ["output"])["output"]


def faulty_request(proto: Protocol, client, x: np.ndarray) -> np.ndarray:
    return proto.infer(client, FAULTY, [("x", x.astype(np.float32), "FP32")], ["output"])["output"]


def ask_faulty(proto: Protocol, x: np.ndarray) -> np.ndarray:
    """One request on a client of its own."""
    client = proto.client()
    try:
        return faulty_request(proto, client, x)
    finally:
        client.close()


def stats(proto: Protocol, model: str) -> tuple[int, int]:
    """(successful requests, executions) of ``model`` so far."""
    client = proto.client()
    try:
        return proto.stats(client, model)
    finally:
        client.close()


def rows(n: int, length: int = 6, seed: int = 0) -> np.ndarray:
    """``n`` ordinary rows (never starting with a marker)."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, length)).astype(np.float32)


def assert_answers(got: np.ndarray, x: np.ndarray) -> None:
    np.testing.assert_allclose(got, F.expected(x), rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# load


@pytest.mark.parametrize("model", [MLP, pytest.param(MLP_LIBTORCH, marks=needs_pytorch_backend)])
def test_soak_many_clients_http_and_grpc_every_answer_its_own(served, repo, record_property,
                                                              model):
    """Thousands of requests, 32 concurrent clients (16 HTTP, 16 gRPC), batch sizes 1..8,
    against the python variant (and the libtorch one on the real PyTorch backend) with dynamic
    batching and 2 instances: no error, every answer equal to the eager model's for its own
    rows, and flat server memory."""
    server = served
    eager, spec = eager_mlp(repo)
    rng = np.random.default_rng(1)
    pool = rng.standard_normal((8192, 16)).astype(np.float32)
    reference = np.concatenate([eager(pool[i:i + 8]) for i in range(0, len(pool), 8)])
    sizes = rng.integers(1, spec.max_batch_size + 1, SOAK_REQUESTS)
    starts = rng.integers(0, len(pool) - spec.max_batch_size, SOAK_REQUESTS)

    lock = threading.Lock()
    jobs = iter(range(SOAK_REQUESTS))
    errors: list[str] = []
    wrong: list[int] = []
    done = {"http": 0, "grpc": 0}

    def client_loop(proto: Protocol, limit: int | None = None) -> None:
        client = proto.client()
        try:
            n = 0
            while limit is None or n < limit:
                with lock:
                    k = next(jobs, None)
                if k is None:
                    return
                n += 1
                s, b = int(starts[k]), int(sizes[k])
                try:
                    got = mlp_request(proto, client, pool[s:s + b], model)
                except InferenceServerException as e:
                    with lock:
                        errors.append(error_message(e))
                    continue
                ok = got.shape == (b, 4) and np.allclose(got, reference[s:s + b], spec.rtol,
                                                         spec.atol)
                with lock:
                    done[proto.kind] += 1
                    if not ok:
                        wrong.append(k)
        finally:
            client.close()

    http, grpc = protocols(server)
    # warm-up (allocator pools, gRPC channels), then measure from a settled state
    warm = iter(range(400))
    jobs, warm_jobs = warm, jobs
    with ThreadPoolExecutor(8) as pool_:
        list(pool_.map(lambda p: client_loop(p, 50), [http, grpc] * 4))
    jobs = warm_jobs
    done.update(http=0, grpc=0)
    assert not errors and not wrong, (errors[:3], wrong[:3])

    before = stats(http, model)
    rss = [server_rss(server)]
    stop = threading.Event()

    def sample_rss():
        while not stop.wait(0.5):
            rss.append(server_rss(server))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    start = time.monotonic()
    with ThreadPoolExecutor(SOAK_CLIENTS) as pool_:
        list(pool_.map(client_loop, [http, grpc] * (SOAK_CLIENTS // 2)))
    seconds = time.monotonic() - start
    stop.set()
    sampler.join()
    rss.append(server_rss(server))
    after = stats(http, model)
    requests, executions = after[0] - before[0], after[1] - before[1]

    mib = 1 << 20
    figures = {"model": model, "requests": SOAK_REQUESTS, "http": done["http"], "grpc": done["grpc"],
               "clients": SOAK_CLIENTS, "errors": len(errors), "wrong": len(wrong),
               "seconds": round(seconds, 1), "per_second": round(SOAK_REQUESTS / seconds),
               "executions": executions, "rss_start_mib": round(rss[0] / mib),
               "rss_end_mib": round(rss[-1] / mib), "rss_max_mib": round(max(rss) / mib)}
    print(f"\nsoak: {figures}")
    record_property("soak", figures)
    assert not errors, f"{len(errors)} error responses, e.g. {errors[:3]}"
    assert not wrong, f"{len(wrong)} answers differ from eager for their own input"
    assert done["http"] + done["grpc"] == SOAK_REQUESTS and min(done.values()) > 0
    assert requests == SOAK_REQUESTS  # the server counted each one as a success
    # the dynamic batcher really merged requests: thousands shared an execution with others
    assert requests - executions >= SOAK_REQUESTS // 20, figures
    # flat memory: no growth with the number of requests (allocator noise allowed)
    assert rss[-1] - rss[0] < max(64 * mib, rss[0] // 20), figures
    if model == MLP:
        assert all(p.is_running() for p in stubs_of(server, MLP))
        assert len(stubs_of(server, MLP)) == 2


def test_overload_is_rejected_at_once_and_the_server_recovers(served, repo):
    """More concurrent requests than the queue allows (max_queue_size 8, queue timeout 1 s, from
    gen-repo build flags): the excess gets an immediate error, waiting ones time out with an
    error, nothing hangs, and afterwards the model answers normally."""
    server = served
    http, grpc = protocols(server)
    client = http.client()
    policy = http.config(client, FAULTY)["dynamic_batching"]["default_queue_policy"]
    assert policy == {"timeout_action": "REJECT", "default_timeout_microseconds":
                      QUEUE_TIMEOUT_US, "allow_timeout_override": False,
                      "max_queue_size": QUEUE_SIZE}
    # Full batches of slow rows: each takes the instance for SLOW_SECONDS, so the queue fills
    # and the fifth request in it has waited longer than the timeout before its turn.
    x = rows(8, seed=3)
    x[:, 0] = F.SLOW_MARKER

    def one(proto: Protocol):
        c = proto.client()
        t = time.monotonic()
        try:
            got = faulty_request(proto, c, x)
            return proto.kind, time.monotonic() - t, "ok", got
        except InferenceServerException as e:
            return proto.kind, time.monotonic() - t, error_message(e), None
        finally:
            c.close()

    flood = 48
    start = time.monotonic()
    with ThreadPoolExecutor(flood) as pool:
        outcomes = list(pool.map(one, [http, grpc] * (flood // 2)))
    elapsed = time.monotonic() - start

    full = [o for o in outcomes if "Exceeds maximum queue size" in o[2]]
    timed_out = [o for o in outcomes if "Request timeout expired" in o[2]]
    ok = [o for o in outcomes if o[2] == "ok"]
    assert len(full) + len(timed_out) + len(ok) == flood, [o[2] for o in outcomes]
    assert full and timed_out and ok, {"full": len(full), "timeout": len(timed_out),
                                       "ok": len(ok)}
    assert {o[0] for o in full} == {"http", "grpc"}  # HTTP 503 / gRPC UNAVAILABLE alike
    for _, _, _, got in ok:
        assert_answers(got, x)
    # a rejection is immediate (no waiting for the slow model)
    assert min(o[1] for o in full) < 1.0 and elapsed < 30, (elapsed, sorted(o[1] for o in full))
    # recovered: ready, and requests within capacity are answered
    assert client.is_server_live() and client.is_model_ready(FAULTY)
    settled_stats(http, client, FAULTY)
    good = rows(2, seed=4)
    for proto in (http, grpc, http, grpc):
        assert_answers(ask_faulty(proto, good), good)
    client.close()


# ---------------------------------------------------------------------------------------------
# a model that raises for some inputs


def test_a_raising_request_gets_the_exception_and_the_instance_stays_up(served):
    server = served
    (stub,) = stubs_of(server, FAULTY)
    bad = rows(3, seed=5)
    bad[1, 0] = F.MARKER
    for proto in protocols(server):
        client = proto.client()
        with pytest.raises(InferenceServerException) as e:
            faulty_request(proto, client, bad)
        msg = error_message(e.value)
        assert f"ValueError: row 1 {F.MARKER_MESSAGE} {F.MARKER}" in msg, msg
        good = rows(3, seed=6)
        assert_answers(faulty_request(proto, client, good), good)
        client.close()
    # an empty row makes the model itself raise (IndexError): an error response too
    with pytest.raises(InferenceServerException) as e:
        ask_faulty(Protocol("grpc", server.grpc_url), np.zeros((1, 0), np.float32))
    assert "IndexError" in error_message(e.value)
    assert stubs_of(server, FAULTY) == [stub] and stub.is_running()  # the same process


def test_a_raising_request_merged_with_good_ones_fails_alone(served):
    """A bad request in the same execution as good ones: model.py reruns that batch request by
    request, so only the bad one fails, with its own row number."""
    server = served
    grpc = Protocol("grpc", server.grpc_url)
    client = grpc.client()
    (stub,) = stubs_of(server, FAULTY)
    good = [rows(1, seed=10 + i) for i in range(5)]
    bad = rows(2, seed=20)
    bad[1, 0] = F.MARKER  # row 1 of its own request; row 6 of the merged batch
    slow = rows(1, seed=21)
    slow[0, 0] = F.SLOW_MARKER

    def batch_sizes() -> dict[int, int]:
        model_stats = client.get_inference_statistics(FAULTY, as_json=True)["model_stats"][0]
        return {int(b["batch_size"]): int(b["compute_infer"]["count"])
                for b in model_stats.get("batch_stats", [])}

    for _ in range(3):  # the merge depends on timing; a busy machine may need a retry
        before = batch_sizes()
        results: dict[str, object] = {}
        lock = threading.Condition()

        def callback(key):
            def done(result, error):
                with lock:
                    results[key] = error if error is not None else result.as_numpy("output")
                    lock.notify_all()
            return done

        def send(key, x):
            inp = grpc.module.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            client.async_infer(FAULTY, [inp], callback(key))

        send("slow", slow)  # occupies the only instance for SLOW_SECONDS ...
        time.sleep(0.05)
        for i, x in enumerate(good):  # ... while these queue up behind it
            send(f"good{i}", x)
        send("bad", bad)
        with lock:
            assert lock.wait_for(lambda: len(results) == len(good) + 2, timeout=60), results
        merged = {b: n - before.get(b, 0) for b, n in batch_sizes().items()
                  if n != before.get(b, 0)}
        if merged.get(len(good) + 2):  # 5 good rows + 2 bad rows in one execution
            break
    else:
        pytest.fail(f"the good and bad requests were never merged into one execution: {merged}")

    err = results["bad"]
    assert isinstance(err, InferenceServerException), err
    assert f"ValueError: row 1 {F.MARKER_MESSAGE}" in error_message(err)
    for i, x in enumerate(good):
        got = results[f"good{i}"]
        assert not isinstance(got, Exception), got
        assert_answers(got, x)
    assert stubs_of(server, FAULTY) == [stub] and client.is_model_ready(FAULTY)
    client.close()


def test_a_zero_batch_request_without_elements_gets_no_answer_in_24_10(served):
    """A Triton 24.10 defect, found by test_hostile_requests: a request whose batch dimension is
    0 and whose inputs hold no element (x of shape [0, 0]) passes every check of the server
    core, and the Python backend then skips the execution without answering it
    (ProcessRequests returns early when the total batch size is 0). The client waits until its
    own timeout; the stub and the server are unharmed and keep answering other requests."""
    server = served
    (stub,) = stubs_of(server, FAULTY)
    # The server core keeps the batch size in 32 bits: a batch dim of 2**32 is batch 0 too.
    for empty in (np.zeros((0, 0), np.float32), np.zeros((1 << 32, 0), np.float32)):
        for kind, url in (("http", server.http_url), ("grpc", server.grpc_url)):
            proto = Protocol(kind, url, timeout=2.0)
            client = proto.client()
            start = time.monotonic()
            with pytest.raises((TimeoutError, InferenceServerException)) as e:
                faulty_request(proto, client, empty)
            assert time.monotonic() - start >= 1.9  # no answer: the client's timeout ended it
            assert error_message(e.value) in ("timed out", "Deadline Exceeded"), (empty.shape,
                                                                                   e.value)
            client.close()
        good = rows(2, seed=8)
        assert_answers(ask_faulty(proto, good), good)
    assert stubs_of(server, FAULTY) == [stub]


# ---------------------------------------------------------------------------------------------
# inputs larger than the Python backend's shared memory


def test_an_input_far_above_the_default_shm_region_is_answered(served):
    """The embedded server runs the Python backend with its defaults (server_args passes no
    --backend-config): a 1 MiB shared-memory region per instance that grows in 1 MiB steps. A
    64 MiB input grows the region and is answered correctly over HTTP and gRPC."""
    server = served
    assert not any("backend-config" in a for a in server.command())
    (stub,) = stubs_of(server, FAULTY)
    x = np.ones((1, 16 << 20), np.float32)  # 64 MiB
    for proto in protocols(server):
        client = proto.client()
        got = faulty_request(proto, client, x)
        np.testing.assert_array_equal(got, [[16 << 20, 1.0]])
        client.close()
    assert stubs_of(server, FAULTY) == [stub]


class SmallShmServer(EmbeddedServer):
    """The embedded server in a private mount namespace whose /dev/shm holds 64 MiB: what the
    Python backend gets in a container started without --shm-size."""

    kind = "tritonserver (embedded, 64 MiB /dev/shm)"

    def command(self) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"', "sh",
                *super().command()]


def _can_mount_private_shm() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=1m tmpfs /dev/shm"], capture_output=True)
    return probe.returncode == 0


@contextlib.contextmanager
def small_shm_server(repo: Path, log_dir: Path):
    with SmallShmServer(repo, Ports(*free_ports(3)), log_path=log_dir / "small-shm.log") as server:
        (status,) = server.load(models_named(repo, FAULTY))
        assert status.state == READY, status
        yield server


@pytest.mark.skipif(not _can_mount_private_shm(),
                    reason="needs unshare --mount and mount (root or CAP_SYS_ADMIN) to give the"
                           " server a small /dev/shm")
def test_an_input_beyond_the_shm_capacity_is_refused_and_the_stub_survives(repo, tmp_path):
    with small_shm_server(repo, tmp_path) as server:
        (stub,) = stubs_of(server, FAULTY)
        big = np.ones((1, 25 << 20), np.float32)  # 100 MiB > the 64 MiB /dev/shm
        for proto in protocols(server):
            client = proto.client()
            with pytest.raises(InferenceServerException) as e:
                faulty_request(proto, client, big)
            msg = error_message(e.value)
            assert "Failed to increase the shared memory pool size" in msg, msg
            assert "No space left on device" in msg and "--shm-size" in msg
            small = rows(2, length=1 << 18, seed=7)  # 2 MiB: still fine afterwards
            assert_answers(faulty_request(proto, client, small), small)
            assert client.is_model_ready(FAULTY)
            client.close()
        assert stubs_of(server, FAULTY) == [stub] and stub.is_running()
        server.check_running()


# ---------------------------------------------------------------------------------------------
# damaged artifacts


def test_truncated_and_tampered_artifacts_are_refused_with_a_clear_error(served, repo, run_cli):
    server = served
    damaged = models_named(repo, TRUNCATED, TAMPERED_TS, RESEALED, UNHASHED)
    with ThreadPoolExecutor(len(damaged)) as pool:  # the server loads them side by side
        statuses = {s.name: s for (s,) in pool.map(lambda m: server.load([m]), damaged)}
    # The file check refuses them before the server sees them, naming the file.
    for name, artifact in ((TRUNCATED, "1/model.package"), (TAMPERED_TS, "1/model.pt")):
        s = statuses[name]
        assert s.state == FAILED, s
        assert f"do not match its {manifest.MANIFEST}: {artifact} differs" in s.reason, s.reason
        assert "gen-repo build --force" in s.tip and "gen-repo seal" in s.tip, s.tip
    # Files recorded again after the damage: the runtime's own check of the artifact's hash.
    s = statuses[RESEALED]
    assert s.state == FAILED, s
    assert "SHA-256" in s.reason and "Refusing to load it" in s.reason, s.reason
    assert "Rebuild the model with gen-repo build" in s.reason
    # Nothing recorded left: the damage still fails the load cleanly, with the loader's error.
    s = statuses[UNHASHED]
    assert s.state == FAILED and "SHA-256" not in s.reason, s
    assert "zip" in s.reason.lower() or "archive" in s.reason.lower(), s.reason
    server.check_running()

    log = server.log_path.read_text(errors="replace")
    assert f"artifact {artifact_of(repo / RESEALED)} has SHA-256" in log
    assert TRUNCATED not in log and TAMPERED_TS not in log  # never sent to the server
    # verify: FAIL with the reason, over both protocols; the good models are still fine
    urls = ["--http-url", server.http_url, "--grpc-url", server.grpc_url]
    code, out, err = run_cli("verify", "--repo", repo, *urls, "--models",
                             f"{TRUNCATED},{TAMPERED_TS},{RESEALED}", "--requests", "0")
    assert code == 1, out + err
    rows_ = [line for line in out.splitlines() if line.startswith((TRUNCATED, TAMPERED_TS))]
    assert len(rows_) == 4 and all(" FAIL " in r and manifest.MANIFEST in r for r in rows_), out
    rows_ = [line for line in out.splitlines() if line.startswith(RESEALED)]
    assert len(rows_) == 2 and all(" FAIL " in r and "SHA-256" in r for r in rows_), out
    report = verify_repository(models_named(repo, MLP), server.http_url, server.grpc_url,
                               VerifyOptions(requests=16, concurrency=8))
    assert report.ok, [(r.model, r.protocol, r.detail) for r in report.failures]


# ---------------------------------------------------------------------------------------------
# more instances than the machine's memory


def test_a_build_asking_more_instances_than_memory_holds_is_warned(tmp_path, run_cli):
    """Each Python-backend instance is its own process (~300 MB before weights): a build whose
    instances cannot fit in this machine's memory says so, with what to change."""
    instances = psutil.virtual_memory().total // (300 << 20) + 8
    code, out, err = run_cli("build", f"{ROOT}/tests/fixtures/models.py:tiny_mlp", "--input",
                             "x:float32:16", "--variants", "python", "--cpu-instances", instances,
                             "--out", tmp_path / "repo")
    assert code == 0, err  # a warning, not a refusal: the repository may be served elsewhere
    warning = "WARNING: the CPU instances need about"
    assert warning in err and "lower --cpu-instances" in err, err
    assert f"{instances} CPU instance(s)" in out + err


# ---------------------------------------------------------------------------------------------
# the server killed during a bench


def test_server_killed_mid_bench_keeps_what_was_measured_and_names_what_is_missing(repo,
                                                                                   tmp_path):
    from generator.bench.results import Results

    out = tmp_path / "bench"
    concurrency = [1, 2, 4, 8, 16]
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator.cli", "bench", "--repo", str(repo), "--models", MLP,
         "--out", str(out), "--concurrency", ",".join(map(str, concurrency)), "--instances",
         "1", "--no-ceiling", "--measurement-interval", "300", "--stability", "100"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_first_point(proc, out, 180)
        (server,) = [p for p in psutil.Process(proc.pid).children(recursive=True)
                     if p.name() == "tritonserver"]
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(server.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, stderr  # partial: some points failed or were never measured
    assert "Traceback" not in stderr and "exited with status -9" in stderr
    results = Results.load(out / "results.json")
    assert not results.complete
    assert "exited with status -9" in (results.stopped_by or "")
    measured = [p for p in results.points if p.status != "failed"]
    assert measured and all(p.throughput > 0 for p in measured)  # kept, with their numbers
    assert len(results.points) < len(concurrency)
    report = (out / "report.md").read_text()
    assert "STOPPED EARLY (tritonserver (embedded) exited with status -9" in report
    # ... and it names the points it never measured
    recorded = {p.concurrency for p in results.points}
    lines = [ln for ln in report.splitlines() if "Not measured" in ln]
    assert len(lines) == 1, f"the report does not list the points never measured:\n{report}"
    line = lines[0]
    named = {int(c) for c in re.findall(r"\bc(\d+)\b", line)}
    assert named == set(concurrency) - recorded, line
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


# ---------------------------------------------------------------------------------------------
# a Python-backend stub killed with SIGKILL during traffic


class Traffic:
    """Client threads (half HTTP, half gRPC) sending MLP requests until stopped; each outcome
    is recorded with its time and checked against the eager model."""

    def __init__(self, server, eager, spec, threads: int = 6):
        self.eager, self.spec = eager, spec
        self.outcomes: list[tuple[float, float, str]] = []  # (start, seconds, "ok" | error)
        self.wrong = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(p, i), daemon=True)
                        for i, p in enumerate(protocols(server) * (threads // 2))]

    def _loop(self, proto: Protocol, seed: int) -> None:
        client = proto.client()
        rng = np.random.default_rng(seed)
        while not self.stop.is_set():
            x = rng.standard_normal((int(rng.integers(1, 5)), 16)).astype(np.float32)
            t = time.monotonic()
            try:
                got = mlp_request(proto, client, x)
                outcome = "ok"
                good = np.allclose(got, self.eager(x), self.spec.rtol, self.spec.atol)
            except InferenceServerException as e:
                outcome, good = error_message(e), True
            with self.lock:
                self.outcomes.append((t, time.monotonic() - t, outcome))
                self.wrong += not good
        client.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads), "a client hung"

    def since(self, t0: float) -> list[tuple[float, float, str]]:
        with self.lock:
            return [o for o in self.outcomes if o[0] >= t0]


def kill_and_wait(proc: psutil.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    wait_dead(proc)


def wait_dead(proc: psutil.Process) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:  # tritonserver never reaps it
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"stub {proc.pid} still runs")


def test_stub_killed_mid_traffic_fails_requests_cleanly_and_revive_brings_it_back(served, repo):
    """What Triton 24.10 does when a Python-backend stub dies: requests routed to the dead
    instance fail after about a second ("Stub process '<instance>' is not healthy."), the other
    instance keeps answering correctly, nothing hangs, and the model stays READY: the server
    neither restarts the stub nor marks the model unready. verify reports the model as FAIL;
    EmbeddedServer.revive (which gen-repo serve runs every half second) loads it again, and
    traffic is whole again."""
    server = served
    eager, spec = eager_mlp(repo)
    victims = sorted(stubs_of(server, MLP), key=lambda p: p.create_time())[-2:]
    others = {p.pid for p in psutil.Process(server.pid).children()} - {p.pid for p in victims}
    with Traffic(server, eager, spec) as traffic:
        time.sleep(1.0)
        assert traffic.outcomes and all(o[2] == "ok" for o in traffic.outcomes)
        killed_at = time.monotonic()
        kill_and_wait(victims[0])
        time.sleep(4.0)
        after = traffic.since(killed_at)
        client = Protocol("http", server.http_url).client()
        ready_after_kill = client.is_model_ready(MLP)
        client.close()
    assert traffic.wrong == 0  # whatever answered, answered right
    errors = [o for o in after if o[2] != "ok"]
    assert errors, "no request failed after the stub was killed"
    assert all("is not healthy" in o[2] and "Stub process" in o[2] for o in errors), \
        {o[2] for o in errors}
    assert max(o[1] for o in after) < 10  # clean, quick failures; no hangs
    assert sum(o[2] == "ok" for o in after) > len(errors)  # the surviving instance answers
    assert ready_after_kill  # Triton 24.10 still reports the model READY
    assert server.exit_code() is None
    alive_others = {p.pid for p in psutil.Process(server.pid).children()
                    if p.status() != psutil.STATUS_ZOMBIE}
    assert others <= alive_others  # no other model's stub was touched

    # verify sees it: the model is ready but answers with errors
    report = verify_repository(models_named(repo, MLP), server.http_url, server.grpc_url,
                               VerifyOptions(requests=32, concurrency=8))
    assert not report.ok
    assert any("is not healthy" in r.detail for r in report.failures), \
        [r.detail for r in report.results]

    # recovery: revive sees the dead stub and loads the model again, with new instances
    statuses = server.revive()
    assert [(s.name, s.state) for s in statuses] == [(MLP, READY)], statuses
    fresh = sorted(stubs_of(server, MLP), key=lambda p: p.create_time())[-2:]
    assert not {p.pid for p in fresh} & {p.pid for p in victims}
    assert server.revive() == []  # every stub runs: nothing to do
    with Traffic(server, eager, spec) as traffic:
        time.sleep(2.0)
    assert traffic.outcomes and all(o[2] == "ok" for o in traffic.outcomes), \
        {o[2] for o in traffic.outcomes}
    assert traffic.wrong == 0
    report = verify_repository(models_named(repo, MLP), server.http_url, server.grpc_url,
                               VerifyOptions(requests=32, concurrency=8))
    assert report.ok, [r.detail for r in report.failures]


# A gRPC request that kills the stub in Triton 24.10: a negative dim on a dynamic axis whose
# byte size overflows int64 to the payload's length ([2, -2**63] x 4 bytes = -2**66 = 0 mod 2**64,
# an empty payload) passes the server core's checks; the stub then builds a numpy array of that
# shape, numpy raises "negative dimensions are not allowed" inside the stub's C++ code, and the
# process aborts. (-1 itself is refused; HTTP refuses every negative dim.)
STUB_KILLING_REQUEST = [("x", "FP32", [2, -(1 << 63)], b"")]


@pytest.mark.parametrize("how", ["SIGKILL", "request"])
def test_serve_loads_a_model_again_when_its_stub_dies(repo, tmp_path, how):
    """The real `gen-repo serve`: a single-instance model whose stub dies -- killed, or aborted by
    a malformed gRPC request that passes Triton's checks -- fails every request until serve
    notices (within a second) and loads it again; then it answers, and Ctrl-C still stops
    everything."""
    procs: list[psutil.Process] = []
    with serve_process(repo, tmp_path / "serve.log", "--models", FAULTY) as (proc, out, ports):
        out.until("Ctrl-C", timeout=180)
        procs = [p for p in psutil.Process(proc.pid).children(recursive=True)]
        (stub,) = [p for p in procs if p.name() == STUB_PROCESS]
        proto = Protocol("http", f"localhost:{ports.http}")
        good = rows(2, seed=9)
        assert_answers(ask_faulty(proto, good), good)
        if how == "SIGKILL":
            kill_and_wait(stub)
        else:
            answer = grpc_infer(f"localhost:{ports.grpc}", FAULTY, STUB_KILLING_REQUEST)
            assert "not healthy" in answer.error, answer  # the stub died under it
            wait_dead(stub)
        warning = out.until("died", timeout=30)
        assert FAULTY in warning and "loading" in warning
        row = out.until(FAULTY, timeout=120, start=True)  # its row in a status table
        assert row.split()[:3] == [FAULTY, "python", READY], row
        assert_answers(ask_faulty(proto, good), good)
        procs = [p for p in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, out.rest()
    assert not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
