"""Talk to a Triton server over HTTP or gRPC with one interface and plain-Python answers.

tritonclient's HTTP client answers with JSON dicts and its gRPC client with protobufs (or JSON
with int64 values as strings); ``Protocol`` hides the difference for the checks of verify.
"""

from __future__ import annotations

import numpy as np

from ..errors import ServerError
from . import control

PROTOCOLS = ("http", "grpc")
# A gRPC error message travels as metadata, which a default channel caps (above 8 KB it refuses
# some, above 16 KB all: RESOURCE_EXHAUSTED "received metadata size exceeds soft limit"). An error
# of the PyTorch backend quotes the whole TorchScript traceback (7-10 KB). verify's clients read
# errors up to 1 MiB.
GRPC_MAX_METADATA = 1 << 20

Tensor = tuple[str, np.ndarray, str]  # name, array, wire dtype


class Protocol:
    """One client protocol (HTTP or gRPC) to one server, its answers as plain Python."""

    def __init__(self, kind: str, url: str, timeout: float = 300.0):
        if kind not in PROTOCOLS:
            raise ValueError(kind)
        self.kind, self.url, self.timeout = kind, url, timeout
        self.label = "HTTP" if kind == "http" else "gRPC"
        if kind == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        self.module = module

    def client(self):
        if self.kind == "http":
            return self.module.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                     network_timeout=self.timeout)
        from tritonclient.grpc._client import MAX_GRPC_MESSAGE_SIZE

        return self.module.InferenceServerClient(self.url, channel_args=[
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_metadata_size", GRPC_MAX_METADATA)])

    def _json(self, client, method: str, *args):
        kwargs = {"as_json": True} if self.kind == "grpc" else {}
        return getattr(client, method)(*args, **kwargs)

    def check_server(self) -> str | None:
        """Raise ServerError if nothing answers; a note when it is live but not ready."""
        client = self.client()
        try:
            live = client.is_server_live()
            ready = client.is_server_ready()
        except Exception as e:
            raise ServerError(
                f"no Triton server answers over {self.label} at {self.url}: {error_message(e)}.",
                "Start one with `gen-repo serve --repo DIR` (in another terminal), or pass the"
                f" server's address with --{self.kind}-url.") from e
        finally:
            client.close()
        if not live:
            raise ServerError(f"the Triton server at {self.url} ({self.label}) is not live.",
                              "Check its log; restart it with gen-repo serve.")
        return None if ready else (f"{self.label}: the server reports not ready (a model failed to"
                                   " load or is loading); ready models are verified anyway")

    def metadata(self, client, model: str) -> dict[str, list[tuple[str, str, list[int]]]]:
        meta = self._json(client, "get_model_metadata", model)
        return {kind: [(t["name"], t["datatype"], [int(d) for d in t.get("shape", [])])
                       for t in meta.get(kind, [])] for kind in ("inputs", "outputs")}

    def config(self, client, model: str) -> dict:
        cfg = self._json(client, "get_model_config", model)
        return cfg.get("config", cfg) if self.kind == "grpc" else cfg

    def index(self, client) -> dict[str, dict]:
        """The server's repository index. A restricted API (control.py): the key of a server
        gen-repo started here as this user is sent; elsewhere the server may refuse it."""
        kwargs = {"as_json": True} if self.kind == "grpc" else {}
        idx = client.get_model_repository_index(headers=control.headers_for(self.url, self.kind) or None,
                                                **kwargs)
        entries = idx if isinstance(idx, list) else idx.get("models", [])
        return {e["name"]: e for e in entries}

    def _model_stats(self, client, model: str) -> list[dict]:
        return self._json(client, "get_inference_statistics", model)["model_stats"]

    def stats(self, client, model: str) -> tuple[int, int]:
        """(successful requests, model executions) so far."""
        stats = self._model_stats(client, model)
        requests = sum(int(s.get("inference_stats", {}).get("success", {}).get("count", 0))
                       for s in stats)
        return requests, _executions(stats)

    def counts(self, client, model: str) -> tuple[int, int]:
        """(inferences, model executions) so far: rows computed, and the executions that
        computed them (their ratio is the batch the dynamic batcher formed)."""
        stats = self._model_stats(client, model)
        return sum(int(s.get("inference_count", 0)) for s in stats), _executions(stats)

    def infer(self, client, model: str, tensors: list[Tensor],
              outputs: list[str]) -> dict[str, np.ndarray]:
        inputs = []
        for name, array, wire in tensors:
            t = self.module.InferInput(name, list(array.shape), wire)
            t.set_data_from_numpy(array)
            inputs.append(t)
        kwargs = {"client_timeout": self.timeout} if self.kind == "grpc" else {}
        result = client.infer(model, inputs,
                              outputs=[self.module.InferRequestedOutput(n) for n in outputs],
                              **kwargs)
        answers = {n: as_numpy(result, n) for n in outputs}
        return {n: a for n, a in answers.items() if a is not None}


def as_numpy(result, name: str) -> np.ndarray | None:
    """Output ``name`` of an infer result (HTTP or gRPC) in the dtype the server sent it in:
    tritonclient's HTTP result gives an empty output (no detections, say) as float64 whatever
    its datatype."""
    array = result.as_numpy(name)
    if array is None or array.size:
        return array
    from tritonclient.utils import triton_to_np_dtype

    output = result.get_output(name)
    datatype = output["datatype"] if isinstance(output, dict) else output.datatype
    return array.astype(triton_to_np_dtype(datatype) or array.dtype)


def _executions(stats: list[dict]) -> int:
    return sum(int(s.get("execution_count", 0)) for s in stats)


def error_message(e: BaseException) -> str:
    msg = getattr(e, "message", None)
    text = msg() if callable(msg) else str(e)
    return " ".join(str(text or type(e).__name__).split())
