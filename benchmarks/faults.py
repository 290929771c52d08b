"""Faults against a running `gen-repo serve`, and how long it takes to serve right again.

    .venv/bin/python benchmarks/faults.py [--out faults.md] [--stop-seconds 30] [--kills 5]

Builds tests/fixtures/faulty.py:faulty (row-wise sum and max over a dynamic axis) as two models
(faulty_python and other_python), starts the real `gen-repo serve` on free ports, and applies
each fault in turn: a stub SIGKILLed, a stub SIGSTOPped then SIGCONTed, the server SIGKILLed,
the server SIGTERMed, the server SIGSTOPped for good (hung), a model unloaded through model
control (with the control key), and repeated gRPC requests that abort a stub. After each, both
models are asked every 0.2 s (HTTP, 2 s timeout) until they answer as before; the recovery time
is from the fault to that answer (an unloaded model is expected to stay unloaded, its neighbour
to keep answering). serve must never exit. Writes a markdown table (and prints it).
The same functions drive tests/integration/test_serve_faults.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL, OTHER = "faulty_python", "other_python"
STUB, SERVER = "triton_python_backend_stub", "tritonserver"
ROW = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)


def build(repo: Path) -> None:
    """The faulty fixture (python) as MODEL and OTHER in ``repo``: a dynamic axis, which the
    stub-aborting gRPC request needs."""
    for name in (MODEL, OTHER):
        subprocess.run([sys.executable, "-m", "generator.cli", "-q", "build",
                        f"{ROOT}/tests/fixtures/faulty.py:faulty", "--input", "x:float32:-1",
                        "--variants", "python", "--name", name.removesuffix("_python"),
                        "--threads", "1", "--out", str(repo)], check=True, cwd=ROOT)


def ask(http_url: str, model: str):
    """The model's answer to ROW (output 0), or None when it does not answer within 2 s."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url, connection_timeout=2, network_timeout=2)
    try:
        x = httpclient.InferInput("x", list(ROW.shape), "FP32")
        x.set_data_from_numpy(ROW)
        result = client.infer(model, [x])
        return result.as_numpy(result.get_response()["outputs"][0]["name"])
    except Exception:
        return None
    finally:
        client.close()


def processes(serve_pid: int, name: str, model: str | None = None) -> list:
    """Running processes called ``name`` under ``serve_pid`` (a stub: of ``model``)."""
    import psutil

    out = []
    for p in psutil.Process(serve_pid).children(recursive=True):
        try:
            if p.name() == name and p.status() != psutil.STATUS_ZOMBIE and (
                    model is None or f"/{model}/" in " ".join(p.cmdline())):
                out.append(p)
        except psutil.Error:
            pass
    return out


def zombies(serve_pid: int) -> int:
    import psutil

    count = 0
    for p in psutil.Process(serve_pid).children(recursive=True):
        try:
            count += p.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            pass
    return count


def grpc_abort_stub(grpc_url: str, model: str) -> str:
    """Send the gRPC request that aborts a Triton 24.10 Python-backend stub (a dynamic dim of
    -2**63: its byte size wraps to the empty payload's, so the core lets it through); the
    server's error message."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32")
    tensor.shape.extend([2, -(1 << 63)])
    request.raw_input_contents.append(b"")
    with grpc.insecure_channel(grpc_url) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
            return ""
        except grpc.RpcError as e:
            return e.details() or ""


@dataclass
class Outcome:
    fault: str
    recovered: bool
    seconds: float | None  # from the fault to the first right answer of every model expected
    note: str = ""


class Served:
    """A running `gen-repo serve` of ``repo``: its process, ports and the answers to expect."""

    def __init__(self, repo: Path, log: Path, extra: tuple[str, ...] = ()):
        from generator.serve.ports import Ports, free_ports

        self.ports = Ports(*free_ports(3))
        self.http = f"127.0.0.1:{self.ports.http}"
        self.grpc = f"127.0.0.1:{self.ports.grpc}"
        self.log = log
        self.out = open(log.with_suffix(".out"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "generator.cli", "serve", "--repo", str(repo), "--http-port",
             str(self.ports.http), "--grpc-port", str(self.ports.grpc), "--metrics-port",
             str(self.ports.metrics), "--log-file", str(log), *extra], cwd=ROOT,
            stdout=self.out,
            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.expected = {}
        deadline = time.monotonic() + 300
        while len(self.expected) < 2:
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, "serve did not come up:\n" + self.output()
            for m in (MODEL, OTHER):
                if m not in self.expected and (answer := ask(self.http, m)) is not None:
                    self.expected[m] = answer
            time.sleep(0.5)

    def output(self) -> str:
        if not self.out.closed:
            self.out.flush()
        return self.log.with_suffix(".out").read_text()

    def right(self, model: str) -> bool:
        answer = ask(self.http, model)
        return answer is not None and np.array_equal(answer, self.expected[model])

    def wait_recovered(self, t0: float, models, timeout: float) -> float | None:
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                return None
            if all(self.right(m) for m in models):
                return time.monotonic() - t0
            time.sleep(0.2)
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        return self.proc.returncode


def signal_one(served: Served, name: str, model: str | None, sig) -> None:
    (proc, *_) = processes(served.proc.pid, name, model)
    proc.send_signal(sig)


def inject(served: Served, fault: str, stop_seconds: float = 30, kills: int = 5,
           timeout: float = 180) -> Outcome:
    """Apply ``fault`` to the running serve and wait until it serves right again."""
    both = (MODEL, OTHER)
    t0 = time.monotonic()
    note = ""
    if fault == "stub SIGKILL":
        signal_one(served, STUB, MODEL, signal.SIGKILL)
    elif fault == "stub SIGSTOP/SIGCONT":
        signal_one(served, STUB, MODEL, signal.SIGSTOP)
        time.sleep(stop_seconds)
        signal_one(served, STUB, MODEL, signal.SIGCONT)
        note = f"stopped {stop_seconds:g} s; time counted from SIGCONT"
        t0 = time.monotonic()
    elif fault in ("server SIGKILL", "server SIGTERM"):
        signal_one(served, SERVER, None, signal.SIGKILL if "KILL" in fault else signal.SIGTERM)
    elif fault == "server SIGSTOP":
        signal_one(served, SERVER, None, signal.SIGSTOP)  # never continued: a hung server
        note = "never continued: serve kills the hung server and starts another"
    elif fault == "remote unload":
        import tritonclient.http as httpclient

        from generator.serve import control

        client = httpclient.InferenceServerClient(served.http)
        client.unload_model(OTHER, headers=control.headers_for(served.http, "http"))
        client.close()
        both = (MODEL,)
        note = f"{OTHER} stays unloaded (a model-control action); {MODEL} keeps serving"
    elif fault == "gRPC stub kills":
        times = []
        for _ in range(kills):
            t = time.monotonic()
            error = grpc_abort_stub(served.grpc, MODEL)
            if "not healthy" not in error:
                return Outcome(fault, False, None, f"the request did not abort the stub: {error!r}")
            took = served.wait_recovered(t, both, timeout)
            if took is None:
                return Outcome(fault, False, None, f"not recovered after {len(times)} kills")
            times.append(took)
        note = (f"{kills} kills, recovery {min(times):.1f}-{max(times):.1f} s each;"
                f" {zombies(served.proc.pid)} dead stub process(es) left under the server")
        return Outcome(fault, served.proc.poll() is None, max(times), note)
    else:
        raise ValueError(fault)
    took = served.wait_recovered(t0, both, timeout)
    if fault == "remote unload" and took is not None and served.right(OTHER):
        return Outcome(fault, False, took, f"{OTHER} still answers after its unload")
    return Outcome(fault, took is not None and served.proc.poll() is None, took, note)


FAULTS = ("stub SIGKILL", "stub SIGSTOP/SIGCONT", "server SIGKILL", "server SIGTERM",
          "server SIGSTOP", "remote unload", "gRPC stub kills")


def table(outcomes: list[Outcome]) -> str:
    rows = ["| fault | recovered by serve | seconds | note |", "|---|---|---|---|"]
    for o in outcomes:
        rows.append(f"| {o.fault} | {'yes' if o.recovered else 'NO'} |"
                    f" {'-' if o.seconds is None else f'{o.seconds:.1f}'} | {o.note} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="faults.md")
    parser.add_argument("--stop-seconds", type=float, default=30)
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="gen-repo-faults-") as tmp:
        repo = Path(tmp) / "repo"
        build(repo)
        outcomes = []
        for fault in FAULTS:  # a fresh serve per fault: one fault's leftovers never mix in
            served = Served(repo, Path(tmp) / f"serve-{len(outcomes)}.log")
            try:
                outcome = inject(served, fault, args.stop_seconds, args.kills)
            finally:
                code = served.stop()
            if code != 0:
                outcome.recovered = False
                outcome.note += f"; serve exited {code}"
            print(f"{fault}: {outcome}", flush=True)
            outcomes.append(outcome)
    text = table(outcomes)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0 if all(o.recovered for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
