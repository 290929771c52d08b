"""Prove a running Triton server answers like the eager model, over HTTP and over gRPC.

For each model of a local repository and each protocol: the model is ready (or SKIPPED with the
server's reason when its backend is absent), its metadata equals the spec, the stored sample
inputs give the stored reference outputs at several batch sizes, many concurrent requests with
different rows each get their own right answer (and the dynamic batcher merges them), and,
optionally, malformed requests are refused with an error naming the problem while the model stays
up. Returns result objects; printing is the command's job.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import dtypes, progress
from ..repository import manifest
from ..repository.compare import Comparison, Mismatch, compare
from ..errors import GenRepoError
from .protocols import PROTOCOLS, Protocol, Tensor, error_message
from ..status import SKIPPED
from .load_errors import clean_load_error, load_failure
from .triton_install import BACKEND_DIRS_ENV

OK, FAIL = "OK", "FAIL"


@dataclass(frozen=True)
class VerifyOptions:
    protocols: tuple[str, ...] = PROTOCOLS
    concurrency: int = 32  # parallel requests in the concurrency check
    requests: int = 64  # requests in the concurrency check (0 = skip it)
    bad_requests: bool = False  # also send malformed requests
    timeout: float = 300.0  # seconds per request


@dataclass
class Result:
    model: str
    backend: str
    protocol: str  # HTTP | gRPC
    status: str  # OK | FAIL | SKIPPED
    detail: str
    max_abs: float | None = None
    facts: dict = field(default_factory=dict)  # e.g. requests / executions of the concurrency check


@dataclass
class VerifyReport:
    results: list[Result]
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status == FAIL]

    @property
    def ok(self) -> bool:
        """No FAIL, and at least one model x protocol verified."""
        return not self.failures and any(r.status == OK for r in self.results)

    def result(self, model: str, protocol: str) -> Result:
        return next(r for r in self.results if r.model == model and r.protocol.lower() == protocol)


class CheckFailed(Exception):
    """One check's failure; its message becomes the FAIL reason."""


# ---------------------------------------------------------------------------------------------
# the checks of one model over one protocol


@dataclass(frozen=True)
class Case:
    """One stored sample case: inputs and the eager model's outputs for them."""

    name: str
    samples: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]


Job = tuple[Case, "int | None", "int | None"]  # a case and a row slice of it


@dataclass
class Target:
    """What one model should answer: its spec and stored cases, sliced along the batch axis."""

    name: str
    backend: str
    spec: object  # ModelSpec
    cases: list[Case]

    def rows(self, case: Case) -> int:
        """Rows of a case (0 when the model has no batch dimension)."""
        if not self.spec.batching:
            return 0
        return int(next(iter(case.samples.values())).shape[0])

    def tensors(self, case: Case, start=None, stop=None) -> list[Tensor]:
        out = []
        for t in self.spec.inputs:
            a = case.samples[t.name]
            out.append((t.name, a[start:stop] if self.spec.batching else a,
                        dtypes.lookup(t.dtype).wire))
        return out

    def expected(self, case: Case, start=None, stop=None) -> dict[str, np.ndarray]:
        return {k: (v[start:stop] if self.spec.batching else v) for k, v in case.reference.items()}

    @property
    def outputs(self) -> list[str]:
        return [t.name for t in self.spec.outputs] or list(self.cases[0].reference)

    def answer(self, proto: Protocol, client, case: Case, start=None, stop=None):
        got = proto.infer(client, self.name, self.tensors(case, start, stop), self.outputs)
        result = compare(got, self.expected(case, start, stop), self.spec.atol, self.spec.rtol)
        # What comes back must have the shape the metadata declares, whatever the references
        # say (a model directory built without a reshape answers [B] for a [-1, 1] output).
        declared = {t.name: api_shape(t, self.spec.batching) for t in self.spec.outputs}
        odd = tuple(Mismatch(n, "shape", f"the server answered {list(np.shape(a))}, its"
                                         f" metadata declares {declared[n]}")
                    for n, a in got.items()
                    if n in declared and not _fits(np.shape(a), declared[n]))
        return Comparison(result.mismatches + odd, result.max_abs) if odd else result

    def jobs(self, count: int) -> list[Job]:
        """``count`` requests cycling through every contiguous row slice of every case."""
        slices = [(c, s, e) for c in self.cases for s, e in row_slices(self.rows(c))]
        return [slices[i % len(slices)] for i in range(count)]


def batch_sizes(batch: int) -> list[int | None]:
    """Batch sizes to try: 1, about half, and all rows; [None] = the whole unbatched sample."""
    return sorted({1, (batch + 1) // 2, batch}) if batch else [None]


def row_slices(rows: int) -> list[tuple[int | None, int | None]]:
    """Every contiguous (start, stop) slice of ``rows`` rows; [(None, None)] when unbatched."""
    if not rows:
        return [(None, None)]
    return [(s, s + n) for n in range(1, rows + 1) for s in range(rows - n + 1)]


def api_shape(t, batching: bool) -> list[int]:
    """The shape a served tensor has in the metadata and on the wire (-1 = any size)."""
    return ([-1] if batching else []) + list(t.api_dims)


def _fits(shape, declared: list[int]) -> bool:
    return len(shape) == len(declared) and all(d in (-1, n) for n, d in zip(shape, declared))


def check_metadata(proto: Protocol, client, target: Target) -> tuple[str, float | None]:
    spec = target.spec
    want = {kind: [(t.name, dtypes.lookup(t.dtype).wire, api_shape(t, spec.batching))
                   for t in tensors]
            for kind, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs))}
    got = proto.metadata(client, target.name)
    problems = []
    for kind in ("inputs", "outputs"):
        if want[kind] and got[kind] != want[kind]:
            problems.append(f"{kind}: server says {_fmt_tensors(got[kind])}, spec says"
                            f" {_fmt_tensors(want[kind])}")
    mbs = int(proto.config(client, target.name).get("max_batch_size", 0))
    if mbs != spec.max_batch_size:
        problems.append(f"max_batch_size: server says {mbs}, spec says {spec.max_batch_size}")
    if problems:
        raise CheckFailed("metadata differs from the spec: " + "; ".join(problems))
    return "metadata ok", None


def _fmt_tensors(items) -> str:
    return ", ".join(f"{n}:{d}{s}" for n, d, s in items) or "none"


def check_batches(proto: Protocol, client, target: Target) -> tuple[str, float | None]:
    worst, done = 0.0, []
    for case in target.cases:
        sizes = batch_sizes(target.rows(case))
        for b in sizes:
            result = target.answer(proto, client, case, 0 if b else None, b)
            if not result.ok:
                raise CheckFailed(f"case {case.name}{f' batch {b}' if b else ''}:"
                                  f" {result.summary()}")
            worst = max(worst, result.max_abs)
        done.append(f"{case.name}:{','.join(map(str, sizes))}" if sizes != [None] else case.name)
    what = "batches" if target.spec.batching else "cases"
    return f"{what} {' '.join(done)} ok", worst


def check_concurrency(proto: Protocol, client, target: Target, options: VerifyOptions,
                      facts: dict) -> tuple[str, float | None]:
    jobs = target.jobs(options.requests)
    local, clients, lock = threading.local(), [], threading.Lock()

    def one(job):
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = proto.client()
            with lock:
                clients.append(c)
        try:
            result = target.answer(proto, c, *job)
        except Exception as e:  # an error response: report it with the rows it was for
            return job, None, error_message(e)
        return job, result, None

    before = settled_stats(proto, client, target.name)
    try:
        with ThreadPoolExecutor(max_workers=max(1, options.concurrency)) as pool:
            outcomes = list(pool.map(one, jobs))
    finally:
        for c in clients:
            c.close()
    after = settled_stats(proto, client, target.name)
    bad = [(job, res.summary() if res else err) for job, res, err in outcomes
           if err or not res.ok]
    if bad:
        (case, start, stop), why = bad[0]
        rows = f"case {case.name} rows {start}:{stop}" if start is not None else f"case {case.name}"
        raise CheckFailed(f"{len(bad)} of {len(jobs)} concurrent requests answered wrongly;"
                          f" first: {rows}: {why}")
    requests, executions = after[0] - before[0], after[1] - before[1]
    facts.update(requests=requests, executions=executions)
    worst = max((res.max_abs for _, res, _ in outcomes), default=0.0)
    return f"{len(jobs)} concurrent ok ({executions} executions)", worst


def settled_stats(proto: Protocol, client, model: str, wait: float = 2.0) -> tuple[int, int]:
    """Statistics once they stop changing (the server counts a request after answering it)."""
    deadline = time.monotonic() + wait
    last = proto.stats(client, model)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = proto.stats(client, model)
        if now == last:
            break
        last = now
    return last


@dataclass(frozen=True)
class BadRequest:
    label: str
    tensors: list
    expect: tuple[str, ...]  # the error message must contain each (case-insensitive)


def bad_requests(target: Target) -> list[BadRequest]:
    """A wrong dtype, a wrong shape, a missing input and (with batching) an oversize batch."""
    spec = target.spec
    good = target.tensors(target.cases[0], 0, 1)
    name, array, wire = good[0]
    other = np.float32 if wire == "FP64" else np.float64
    other_wire = "FP32" if wire == "FP64" else "FP64"
    first_dims = spec.inputs[0].api_dims
    fixed = [i for i, d in enumerate(first_dims) if d != -1]
    lead = 1 if spec.batching else 0
    if fixed:
        axis = lead + fixed[-1]
        shape = list(array.shape)
        shape[axis] += 1
        wrong = np.resize(array, shape)
    else:
        wrong = array[..., np.newaxis]
    cases = [
        BadRequest("wrong dtype", [(name, array.astype(other), other_wire)] + good[1:],
                   (name, "data-type")),
        BadRequest("wrong shape", [(name, wrong, wire)] + good[1:], (name, "shape")),
        BadRequest("missing input", good[1:], (name,)),
    ]
    if spec.batching:
        n = spec.max_batch_size + 1
        big = [(nm, np.resize(a, (n,) + a.shape[1:]), w) for nm, a, w in good]
        cases.append(BadRequest(f"batch {n} > max_batch_size", big, ("batch-size",)))
    return cases


def check_bad_requests(proto: Protocol, client, target: Target,
                       facts: dict) -> tuple[str, float | None]:
    from tritonclient.utils import InferenceServerException

    refused = []
    for case in bad_requests(target):
        try:
            proto.infer(client, target.name, case.tensors, target.outputs)
        except InferenceServerException as e:
            msg = error_message(e)
            missing = [w for w in case.expect if w.lower() not in msg.lower()]
            if missing:
                raise CheckFailed(f"{case.label}: the error does not name {missing}: {msg}") from e
            refused.append(case.label)
            continue
        raise CheckFailed(f"{case.label}: the server answered instead of refusing the request")
    if not (client.is_server_live() and client.is_model_ready(target.name)):
        raise CheckFailed("the server or model went down after the malformed requests")
    case = target.cases[0]
    result = target.answer(proto, client, case, *row_slices(target.rows(case))[0])
    if not result.ok:
        raise CheckFailed(f"a good request after the malformed ones: {result.summary()}")
    facts["bad_requests_refused"] = refused
    return f"{len(refused)} bad requests refused", None


# ---------------------------------------------------------------------------------------------
# one model, one protocol


def _not_ready(proto: Protocol, client, model, repo_hint: str) -> Result | None:
    """None when the model is ready; else its SKIPPED / FAIL result from the repository index."""
    from tritonclient.utils import InferenceServerException

    if client.is_model_ready(model.name):
        return None
    backend = model.backend
    try:
        entry = proto.index(client).get(model.name)
    except InferenceServerException as e:  # a restricted index, on a server started elsewhere
        return Result(model.name, backend, proto.label, FAIL,
                      "not ready, and the server does not say why: its repository index is"
                      f" restricted ({error_message(e)[:200]}); the log of its gen-repo serve"
                      " has each model's status")
    if entry is None:
        return Result(model.name, backend, proto.label, FAIL,
                      f"the server does not know this model: is it serving {repo_hint}?")
    state, reason = entry.get("state", ""), " ".join(entry.get("reason", "").split())
    if backend == "pytorch" and (not state or reason in ("", "unloaded") or "backend" in reason):
        why = f"{state or 'not loaded'}{': ' + reason if reason else ''}"
        return Result(model.name, backend, proto.label, SKIPPED,
                      f"{why}; serve it where a PyTorch backend exists:"
                      f" `gen-repo serve --docker`, `--backend-directory DIR` or"
                      f" {BACKEND_DIRS_ENV}=DIR")
    if reason:
        verdict, why, tip = load_failure(backend, clean_load_error(reason))
        if verdict == SKIPPED:
            return Result(model.name, backend, proto.label, SKIPPED, f"{why}. {tip}")
        reason = why + (f" ({tip})" if tip else "")
    return Result(model.name, backend, proto.label, FAIL,
                  f"not ready: {state or 'not loaded'}{': ' + reason if reason else ''}"
                  + ("" if state else " (load it: gen-repo serve loads every model)"))


def verify_model(proto: Protocol, model, target: Target, options: VerifyOptions,
                 repo_hint: str = "this repository") -> Result:
    from tritonclient.utils import InferenceServerException

    client = proto.client()
    try:
        early = _not_ready(proto, client, model, repo_hint)
        if early:
            return early
        facts: dict = {}
        checks: list[Callable[[], tuple[str, float | None]]] = [
            lambda: check_metadata(proto, client, target),
            lambda: check_batches(proto, client, target),
        ]
        if options.requests > 0:
            checks.append(lambda: check_concurrency(proto, client, target, options, facts))
        if options.bad_requests:
            checks.append(lambda: check_bad_requests(proto, client, target, facts))
        passed, failed, worst = [], [], None
        for check in checks:
            try:
                detail, err = check()
            except CheckFailed as e:
                failed.append(str(e))
                continue
            except InferenceServerException as e:
                failed.append(f"error response: {error_message(e)}")
                continue
            passed.append(detail)
            if err is not None:
                worst = err if worst is None else max(worst, err)
        if failed:
            return Result(model.name, model.backend, proto.label, FAIL, "; ".join(failed),
                          worst, facts)
        return Result(model.name, model.backend, proto.label, OK, "; ".join(passed), worst,
                      facts)
    except (InferenceServerException, OSError, ConnectionError) as e:
        return Result(model.name, model.backend, proto.label, FAIL,
                      f"the server stopped answering: {error_message(e)}")
    finally:
        client.close()


def load_target(model) -> Target:
    cases = [Case(*c) for c in model.cases()] if hasattr(model, "cases") else []
    if not cases:
        cases = [Case("a", model.samples(), model.reference())]
    return Target(model.name, model.backend, model.spec, cases)


def verify_repository(models: list, http_url: str = "127.0.0.1:8000",
                      grpc_url: str = "127.0.0.1:8001", options: VerifyOptions = VerifyOptions(),
                      repo_hint: str = "this repository") -> VerifyReport:
    """Verify each model (a layout.BuiltModel) over each protocol of ``options``; a model whose
    files do not match its gen_repo.sha256 fails without a request."""
    urls = {"http": http_url, "grpc": grpc_url}
    protocols = [Protocol(k, urls[k], options.timeout) for k in options.protocols]
    report = VerifyReport([])
    for proto in protocols:
        note = proto.check_server()
        if note:
            report.notes.append(note)
    for model in models:
        found = model.file_problems()
        if found:  # what is served is not what was built (or cannot be told)
            reason, _ = manifest.refusal(model, found)
            report.results += [Result(model.name, _backend(model), proto.label, FAIL, reason)
                               for proto in protocols]
            continue
        try:
            target = load_target(model)
        except GenRepoError as e:
            status = SKIPPED if not model.built_by_gen_repo else FAIL
            for proto in protocols:
                report.results.append(Result(model.name, _backend(model), proto.label, status,
                                             e.message))
            continue
        for proto in protocols:
            start = time.perf_counter()
            result = verify_model(proto, model, target, options, repo_hint)
            progress.info(f"verified {model.name} over {proto.label}: {result.status} in"
                          f" {time.perf_counter() - start:.1f} s")
            report.results.append(result)
    return report


def _backend(model) -> str:
    try:
        return model.backend
    except GenRepoError:
        return "?"
