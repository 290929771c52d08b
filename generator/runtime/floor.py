# Triton Python-backend "floor" model written by gen-repo bench: the least a Python-backend model
# can do for a request -- read each input, answer outputs of the model's shapes and dtypes
# (zeros) -- with no torch and no forward pass. Served beside a model's variants, it measures the
# Python backend's own cost (server <-> stub round trip, tensors through shared memory, response
# objects): no Python model can be faster, so each variant's time splits into floor + forward
# pass + what its model.py adds. This file is static; the output shapes come from the config
# parameter `floor_outputs` (JSON: [[name, numpy dtype, [dims without the batch dim]], ...]).

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.input_names = [i["name"] for i in config["input"]]
        self.outputs = [(name, np.dtype(dtype), tuple(dims))
                        for name, dtype, dims in json.loads(params["floor_outputs"])]
        self._answers = {}  # rows -> output arrays (zeros), made once per batch size

    def _answer(self, rows):
        arrays = self._answers.get(rows)
        if arrays is None:
            lead = (rows,) if self.batching else ()
            arrays = self._answers[rows] = [np.zeros(lead + dims, dtype)
                                            for _, dtype, dims in self.outputs]
        return arrays

    def execute(self, requests):
        responses = []
        for request in requests:
            arrays = [pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                      for name in self.input_names]
            rows = arrays[0].shape[0] if self.batching else None
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, a) for (name, _, _), a in zip(self.outputs,
                                                                     self._answer(rows))]))
        return responses
