"""Hostile and broken requests against a real embedded tritonserver, over HTTP and gRPC.

Requests are sent raw (hand-made HTTP bodies and gRPC protobufs, not tritonclient), so a test can
say anything: negative or huge dims, a datatype that does not exist, a payload that disagrees with
its shape, inputs missing, repeated or unknown. Hypothesis generates them from each model's spec.
The property: a request the server accepts gets exactly what the eager model does with it (its
answer, or its exception as an error response); any other request gets an error response, quickly;
and no request takes down the server or a Python-backend stub process.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from generator import dtypes
from generator.repository import layout
from generator.runtime.model import load_model, run_batch
from generator.status import READY
from tests.integration.conftest import (build_fixture, embedded_server, models_named,
                                        needs_pytorch_backend)
from tests.integration.raw_requests import NUMPY, Answer, Raw, grpc_infer, http_infer

pytestmark = pytest.mark.integration

MODELS = ["tiny_mlp_python", "seq_encoder_python"]  # fixed float dims; dynamic int64 + bool
# The same two as TorchScript on the real PyTorch backend, when there is one.
LIBTORCH_MODELS = ["tiny_mlp_libtorch", "seq_encoder_libtorch"]
EXAMPLES = int(os.environ.get("GEN_REPO_FUZZ_EXAMPLES", 300))  # per model and protocol
# The test suite replays the same examples every run, so a result is reproducible; set
# GEN_REPO_FUZZ_RANDOM=1 (and a larger GEN_REPO_FUZZ_EXAMPLES) to explore new ones.
RANDOM = bool(os.environ.get("GEN_REPO_FUZZ_RANDOM"))

WIRE_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1,
              "INT16": 2, "INT32": 4, "INT64": 8, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8,
              "BYTES": None}
MAX_PAYLOAD = 1 << 20  # a request body never exceeds this (big inputs: test_reliability)


# ---------------------------------------------------------------------------------------------
# the server, the models, and what each should answer


class Served:
    """A served model: its spec facts and the eager model loaded exactly as the server does."""

    def __init__(self, path: Path):
        built = layout.BuiltModel(path)
        self.name = built.name
        self.backend = built.backend
        spec = built.spec
        self.max_batch = spec.max_batch_size
        self.inputs = [(t.name, dtypes.lookup(t.dtype).wire, list(t.dims)) for t in spec.inputs]
        self.outputs = [t.name for t in spec.outputs]
        self.low_high = {t.name: (t.low, t.high) for t in spec.inputs}
        self.atol, self.rtol = spec.atol, spec.rtol
        self._net = load_model(path / layout.VERSION, built.record["load_params"])

    def eager(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        outs = run_batch(self._net, [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return {n: o.numpy() for n, o in zip(self.outputs, outs)}


@pytest.fixture(scope="module")
def served(tiny_repo, tmp_path_factory):
    models = models_named(tiny_repo, *MODELS)
    with embedded_server(tiny_repo, tmp_path_factory.mktemp("hostile"), models) as (server,
                                                                                    statuses):
        assert all(statuses[n].state == READY for n in MODELS), statuses
        yield server, {n: Served(tiny_repo / n) for n in MODELS}, stub_pids(server)


@pytest.fixture(scope="module")
def served_libtorch(tiny_repo, tmp_path_factory):
    """tiny_mlp and seq_encoder as TorchScript, on their own server with the PyTorch backend."""
    repo = tmp_path_factory.mktemp("hostile-libtorch") / "repo"
    shutil.copytree(tiny_repo / "tiny_mlp_libtorch", repo / "tiny_mlp_libtorch")
    build_fixture(repo, "seq_encoder", "libtorch")
    models = models_named(repo, *LIBTORCH_MODELS)
    with embedded_server(repo, tmp_path_factory.mktemp("hostile"), models) as (server, statuses):
        assert all(statuses[n].state == READY for n in LIBTORCH_MODELS), statuses
        yield server, {n: Served(repo / n) for n in LIBTORCH_MODELS}, stub_pids(server)


def stub_pids(server) -> dict[int, str]:
    """{pid: model} of the running Python-backend stubs."""
    out = {}
    for p in psutil.Process(server.pid).children():
        try:
            if "stub" in p.name() and p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = Path(p.cmdline()[1]).parent.parent.name
        except (psutil.Error, IndexError):
            pass
    return out


def assert_unharmed(server, stubs: dict[int, str]) -> None:
    """The server runs and every stub process of the start still runs (none died or restarted)."""
    assert server.exit_code() is None, "tritonserver exited"
    assert stub_pids(server) == stubs, "a Python-backend stub process died or was replaced"


def send(server, protocol: str, model: str, inputs: Raw) -> Answer:
    if protocol == "http":
        return http_infer(server.http_url, model, inputs)
    return grpc_infer(server.grpc_url, model, inputs)


# ---------------------------------------------------------------------------------------------
# hypothesis: requests built from a model's spec, most of them broken in one or more ways

ODD_DIMS = [0, -1, -7, 9, 1 << 20, 1 << 31, 1 << 40, (1 << 63) - 1, -(1 << 63)]


@st.composite
def requests(draw, model: Served) -> Raw:
    """Raw inputs built from the model's spec, most of them broken in one or more ways."""
    batch = draw(st.one_of(st.integers(1, model.max_batch), st.sampled_from(
        [0, model.max_batch + 1, 64, -1, 1 << 33])))
    lengths: dict[int, int] = {}  # dynamic axis position -> length shared by all inputs
    raw: Raw = []
    for name, wire, dims in model.inputs:
        if draw(st.integers(0, 9)) == 0:  # missing input
            continue
        datatype = wire if draw(st.integers(0, 3)) else draw(st.sampled_from(
            sorted(WIRE_BYTES) + ["FOO", ""]))
        shape = [batch] + [d if d != -1 else lengths.setdefault(i, draw(st.integers(0, 12)))
                           for i, d in enumerate(dims)]
        shape_kind = draw(st.integers(0, 7))
        if shape_kind == 0:  # one dim replaced by an odd value
            shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from(ODD_DIMS))
        elif shape_kind == 1:  # rank changed
            shape = shape[1:] if draw(st.booleans()) else shape + [draw(st.integers(1, 3))]
        size = WIRE_BYTES.get(datatype) or 1
        if all(0 <= d <= MAX_PAYLOAD for d in shape) and datatype in NUMPY and \
                math.prod(shape) * size <= MAX_PAYLOAD:
            payload = _values(draw, model, name, datatype, shape).tobytes()
        else:
            payload = draw(st.binary(max_size=64))
        if draw(st.integers(0, 7)) == 0:  # payload that disagrees with the shape
            cut = draw(st.integers(-8, 8).filter(lambda n: n != 0))
            payload = payload[:cut] if cut < 0 else payload + bytes(cut)
        raw.append((name, datatype, shape, payload))
    extra = draw(st.integers(0, 9))
    if extra == 0 and raw:  # the same input twice
        raw.append(raw[0])
    elif extra == 1:  # an input the model does not have
        name = draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                            min_size=1, max_size=12).filter(
                                lambda n: n not in {i[0] for i in model.inputs}))
        raw.append((name, "FP32", [1, 2], bytes(8)))
    if draw(st.booleans()):
        raw.reverse()  # the order of inputs in a request does not matter
    return raw


def accepted_arrays(model: Served, raw: Raw) -> list[np.ndarray] | None:
    """The input arrays (in the model's order) when the request passes the server's checks
    (names, datatypes, ranks, fixed dims, one batch size within 1..max_batch_size, payload
    sizes); None when the server must refuse it. Whether the values make sense together (two
    dynamic lengths that differ, ids outside a table) is the model's business."""
    by_name = {}
    for name, datatype, shape, payload in raw:
        if name in by_name:
            return None
        by_name[name] = (datatype, shape, payload)
    if set(by_name) != {name for name, _, _ in model.inputs}:
        return None
    arrays, batches = [], set()
    for name, wire, dims in model.inputs:
        datatype, shape, payload = by_name[name]
        if datatype != wire or len(shape) != 1 + len(dims) or any(d < 0 for d in shape) or \
                any(d != -1 and d != s for d, s in zip(dims, shape[1:])):
            return None
        if len(payload) != math.prod(shape) * WIRE_BYTES[wire] or \
                not 1 <= shape[0] <= model.max_batch:
            return None
        batches.add(shape[0])
        arrays.append(np.frombuffer(payload, NUMPY[wire]).reshape(shape).copy())
    if len(batches) != 1:
        return None
    return arrays


def _values(draw, model: Served, name: str, datatype: str, shape: list[int]) -> np.ndarray:
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    dtype = NUMPY[datatype]
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        low, high = model.low_high.get(name, (0, 10))
        if draw(st.integers(0, 9)) == 0:  # ids outside the embedding table
            low, high = high, high + 1000
        return rng.integers(low, high, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def empty(raw: Raw) -> bool:
    """No input holds an element (some dim is 0 in every shape, every payload is empty)."""
    return all(not payload and 0 in shape for _, _, shape, payload in raw)


def unanswered_in_24_10(raw: Raw) -> bool:
    """A request the Python backend of Triton 24.10 never answers: batch 0 in every input and no
    element anywhere (test_reliability.py proves it; docs/reliability.md explains it). The server
    core keeps the batch size in 32 bits, so a batch dim of 2³², 2³³, 2⁴⁰… is batch 0 as well."""
    return bool(raw) and empty(raw) and all(
        shape and shape[0] % (1 << 32) == 0 for _, _, shape, _ in raw)


def kills_the_stub_in_24_10(raw: Raw) -> bool:
    """A request that aborts the Python-backend stub of Triton 24.10: an input with a dim below
    -1 whose byte size, computed in int64, wraps around to its payload's length (shape
    [2, -2**63] with an empty payload) passes the server core's checks, and numpy refuses the
    negative dim inside the stub's C++ code. test_reliability.py proves it (and that `gen-repo
    serve` loads the model again); docs/reliability.md explains it."""
    return any(any(d < -1 for d in shape) and WIRE_BYTES.get(datatype)
               and (math.prod(shape) * WIRE_BYTES[datatype]) % (1 << 64) == len(payload)
               for _, datatype, shape, payload in raw)


def check(server, model: Served, protocol: str, raw: Raw, stubs) -> str:
    """Send one request and judge the answer; whether it was to be refused or to reach the model."""
    arrays = accepted_arrays(model, raw)
    answer = send(server, protocol, model.name, raw)
    if arrays is None:
        # The server core also accepts a few malformed requests that hold no element at all (an
        # input of batch 0 beside inputs of batch N: its batch check takes 0 for "not set yet");
        # they are harmless, so only requests with data must be refused.
        assert answer.error or empty(raw), f"a malformed request was answered: {raw!r:.600}"
    else:
        try:
            want = model.eager(arrays)
        except Exception as e:  # the model itself refuses these values: so must the server
            assert answer.error, f"eager raised {e!r} but the server answered"
            if model.backend == "python":  # gen-repo's model.py: "<type>: <message>"
                assert type(e).__name__ in answer.error, (e, answer.error)
            else:  # the PyTorch backend quotes the TorchScript error, last line included
                last = str(e).strip().splitlines()[-1].split(": ", 1)[-1]
                assert last in answer.error, (e, answer.error)
        else:
            assert not answer.error, f"a well-formed request was refused: {answer.error}"
            assert set(answer.outputs) == set(want)
            for name, w in want.items():
                np.testing.assert_allclose(answer.outputs[name], w, model.rtol, model.atol,
                                           equal_nan=True, err_msg=name)
    assert_unharmed(server, stubs)
    return "refused" if arrays is None else "reached the model"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model_name", [*MODELS, *[pytest.param(m, marks=needs_pytorch_backend)
                                                   for m in LIBTORCH_MODELS]])
def test_generated_requests_are_answered_or_refused_and_nothing_crashes(request, model_name,
                                                                        protocol):
    server, models, stubs = request.getfixturevalue(
        "served_libtorch" if model_name in LIBTORCH_MODELS else "served")
    model = models[model_name]
    seen = {"refused": 0, "reached the model": 0}

    @settings(max_examples=EXAMPLES, derandomize=not RANDOM, deadline=None, database=None,
              print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(requests(model))
    def run(raw):
        assume(not unanswered_in_24_10(raw) and not kills_the_stub_in_24_10(raw))
        seen[check(server, model, protocol, raw, stubs)] += 1

    run()
    print(f"\n{model_name} over {protocol}: {seen}")
    assert seen["refused"] and seen["reached the model"], seen  # both kinds really happened


# ---------------------------------------------------------------------------------------------
# each kind of broken request of the issue, named, with the error it gets


def _x(batch: int = 2, dtype=np.float32, width: int = 16) -> bytes:
    return np.ones((batch, width), dtype).tobytes()


CASES = {  # label: (inputs, fragment of the error, over HTTP / over gRPC when they differ)
    "wrong dtype": ([("x", "FP64", [2, 16], _x(dtype=np.float64))],
                    "data-type is 'FP64', but model 'tiny_mlp_python' expects 'FP32'"),
    "unknown dtype": ([("x", "FOO", [2, 16], _x())], "data-type is '<invalid>'"),
    "BYTES for a number": ([("x", "BYTES", [2, 16], _x())],
                           "data-type is 'BYTES', but model 'tiny_mlp_python' expects 'FP32'"),
    "rank too high": ([("x", "FP32", [2, 16, 1], _x())], "unexpected shape for input 'x'"),
    "no batch dim": ([("x", "FP32", [16], _x(1))], "batch-size must be <= 8"),
    "scalar": ([("x", "FP32", [], _x(1)[:4])], "input 'x' has no shape"),
    "wrong dim": ([("x", "FP32", [2, 15], _x(width=15))], "unexpected shape for input 'x'"),
    "negative batch": ([("x", "FP32", [-2, 16], _x())],
                       ("Unable to parse 'shape'", "byte size mismatch for input 'x'")),
    "negative dim": ([("x", "FP32", [2, -16], _x())],
                     ("Unable to parse 'shape'", "unexpected shape for input 'x'")),
    "huge batch": ([("x", "FP32", [1 << 40, 16], _x())], "byte size mismatch for input 'x'"),
    "huge dims": ([("x", "FP32", [1 << 62, 1 << 62], _x())], "unexpected shape for input 'x'"),
    "zero batch": ([("x", "FP32", [0, 16], b"")], "byte size mismatch for input 'x'"),
    "batch above max_batch_size": ([("x", "FP32", [9, 16], _x(9))],
                                   "batch-size must be <= 8"),
    "payload too short": ([("x", "FP32", [2, 16], _x()[:-4])],
                          "byte size mismatch for input 'x'"),
    "payload too long": ([("x", "FP32", [2, 16], _x() + bytes(4))],
                         "byte size mismatch for input 'x'"),
    "missing input": ([], "missing required input(s) ['x']"),
    "extra input": ([("x", "FP32", [2, 16], _x()), ("y", "FP32", [2, 16], _x())],
                    "expected 1 inputs but got 2"),
    "repeated input": ([("x", "FP32", [2, 16], _x()), ("x", "FP32", [2, 16], _x())],
                       "input 'x' already exists in request"),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_each_kind_of_broken_request_gets_an_error_naming_it(served, protocol):
    server, models, stubs = served
    for label, (inputs, fragment) in CASES.items():
        if isinstance(fragment, tuple):
            fragment = fragment[0] if protocol == "http" else fragment[1]
        answer = send(server, protocol, "tiny_mlp_python", inputs)
        assert fragment in answer.error, (label, answer)
        assert answer.code in ({"400", "500"} if protocol == "http" else
                               {"INVALID_ARGUMENT", "INTERNAL"}), (label, answer.code)
    # inputs a Triton check cannot see, refused by the model: ids outside the embedding table,
    # and two inputs whose dynamic lengths disagree
    seq = models["seq_encoder_python"]
    tokens = np.full((1, 5), 10 ** 6, np.int64)
    mask = np.ones((1, 5), np.bool_)
    for inputs, error in (([("tokens", "INT64", [1, 5], tokens.tobytes()),
                            ("mask", "BOOL", [1, 5], mask.tobytes())],
                           "IndexError: index out of range in self"),
                          ([("tokens", "INT64", [1, 5], np.ones((1, 5), np.int64).tobytes()),
                            ("mask", "BOOL", [1, 4], mask[:, :4].tobytes())],
                           "RuntimeError: For mask_type == 1 mask shape should be (B, L)")):
        answer = send(server, protocol, seq.name, inputs)
        assert error in answer.error, answer
    assert_unharmed(server, stubs)
    # and a good request still gets the right answer
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    model = models["tiny_mlp_python"]
    answer = send(server, protocol, model.name, [("x", "FP32", [3, 16], x.tobytes())])
    np.testing.assert_allclose(answer.outputs["output"], model.eager([x])["output"],
                               model.rtol, model.atol)


def test_broken_http_bodies_get_an_error(served):
    server, _, stubs = served
    good = [("x", "FP32", [1, 16], _x(1))]
    for label, kwargs in {
        "not json": {"body": b"{nope" + _x(1), "header_length": 5},
        "header length past the body": {"header_length": 10 ** 6},
        "header length zero": {"header_length": 0},
        "empty body": {"body": b"", "header_length": 0},
    }.items():
        answer = http_infer(server.http_url, "tiny_mlp_python", good, **kwargs)
        assert answer.error and answer.code.startswith(("4", "5")), (label, answer)
    answer = http_infer(server.http_url, "no_such_model", good)
    assert "no_such_model" in answer.error
    assert_unharmed(server, stubs)
