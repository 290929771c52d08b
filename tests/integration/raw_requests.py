"""Raw inference requests, sent by hand (not tritonclient) so a test can say anything in them.

A request is a list of (name, datatype, shape, payload bytes) per input: negative or huge dims, a
datatype that does not exist, a payload that disagrees with its shape. An answer that takes
longer than TIMEOUT raises AssertionError (the request hung).
"""

from __future__ import annotations

import http.client
import json

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

TIMEOUT = 10.0  # seconds: an answer later than this counts as a hang
NUMPY = {"BOOL": np.bool_, "INT64": np.int64, "INT32": np.int32, "FP32": np.float32,
         "FP64": np.float64, "FP16": np.float16, "UINT8": np.uint8, "INT8": np.int8}


Raw = list[tuple[str, str, list[int], bytes]]


class Answer:
    def __init__(self, outputs: dict[str, np.ndarray] | None = None, error: str = "",
                 code: str = ""):
        self.outputs, self.error, self.code = outputs, error, code

    def __repr__(self):
        return f"Answer(error={self.error!r}, code={self.code})" if self.error else \
            f"Answer({ {k: v.shape for k, v in self.outputs.items()} })"


def http_infer(url: str, model: str, inputs: Raw, body: bytes | None = None,
               header_length: int | None = None) -> Answer:
    header = json.dumps({"inputs": [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
        for n, d, s, b in inputs], "parameters": {"binary_data_output": True}}).encode()
    if body is None:
        body = header + b"".join(b for *_, b in inputs)
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request("POST", f"/v2/models/{model}/infer", body, {
            "Inference-Header-Content-Length": str(header_length if header_length is not None
                                                   else len(header)),
            "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        data = resp.read()
    except TimeoutError as e:
        raise AssertionError(f"no answer within {TIMEOUT} s: the request hung") from e
    finally:
        conn.close()
    json_length = int(resp.getheader("Inference-Header-Content-Length") or len(data))
    try:
        doc = json.loads(data[:json_length])
    except ValueError:
        return Answer(error=f"unparsable answer {data[:200]!r}", code=str(resp.status))
    if resp.status != 200:
        return Answer(error=doc.get("error", "") or "(empty error)", code=str(resp.status))
    outputs, offset = {}, json_length
    for o in doc["outputs"]:  # binary outputs, in order after the JSON header
        size = o["parameters"]["binary_data_size"]
        outputs[o["name"]] = np.frombuffer(data[offset:offset + size], NUMPY[o["datatype"]]) \
            .reshape(o["shape"])
        offset += size
    return Answer(outputs)


GRPC_OPTIONS = [("grpc.max_metadata_size", 1 << 20)]


def grpc_infer(url: str, model: str, inputs: Raw, options=None) -> Answer:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, payload in inputs:
        t = request.inputs.add()
        t.name, t.datatype = name, datatype
        t.shape.extend(shape)
        request.raw_input_contents.append(payload)
    # A PyTorch-backend error carries its TorchScript traceback (7-10 KB), over the 8 KB from which
    # a default channel may answer RESOURCE_EXHAUSTED instead of the error (see protocols.py).
    with grpc.insecure_channel(url, options=GRPC_OPTIONS if options is None else options) as channel:
        try:
            resp = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                request, timeout=TIMEOUT)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AssertionError(f"no answer within {TIMEOUT} s: the request hung") from e
            return Answer(error=e.details() or "(empty error)", code=e.code().name)
    outputs = {}
    for out, raw in zip(resp.outputs, resp.raw_output_contents):
        outputs[out.name] = np.frombuffer(raw, NUMPY[out.datatype]).reshape(list(out.shape))
    return Answer(outputs)
