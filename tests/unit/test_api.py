"""The Python API's own parts: example tensors to input specs, what a training script's model
classes take from the script, the refusals (a notebook, unknown options). The whole path, a
training script run as __main__, is tests/integration/test_api.py."""

from __future__ import annotations

import ast
import sys
import types

import pytest
import torch
from torch import nn

from generator import api
from generator.build import objects
from generator.errors import SourceError, SpecError


class _TwoInputs(nn.Module):
    def forward(self, tokens, mask, scale=None):
        return tokens * mask


def test_example_tensors_become_input_specs_with_dynamic_axes_and_ranges():
    tokens = torch.tensor([[3, 9, 4], [5, 1, 7]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    specs, arrays = objects.example_inputs(_TwoInputs(), (tokens, mask), True,
                                           {"tokens": [1]}, {"mask": (0, 2)})
    assert [(s.name, s.dtype, s.dims, s.low, s.high) for s in specs] == [
        ("tokens", "int64", (-1,), 1, 10), ("mask", "bool", (3,), 0, 2)]
    assert arrays["tokens"].shape == (2, 3) and arrays["mask"].dtype == bool
    specs, _ = objects.example_inputs(_TwoInputs(), {"mask": mask}, False, None, None)
    assert specs[0].dims == (2, 3)  # no batching: every axis is the tensor's own


@pytest.mark.parametrize("inputs, kw, fragment", [
    ((torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2)), {},
     "names 3 parameter(s)"),
    ({"tokens": [1, 2]}, {}, "are not tensors"),
    ({"tokens": torch.zeros(2, 3)}, {"dynamic_axes": {"tokenz": [1]}}, "not inputs"),
    ({"tokens": torch.zeros(2, 3)}, {"dynamic_axes": {"tokens": [0]}}, "always dynamic"),
    ({"tokens": torch.tensor(1.0)}, {}, "0-d tensor"),
    ("tokens", {}, "must be a tensor"),
])
def test_bad_example_inputs_are_spec_errors(inputs, kw, fragment):
    with pytest.raises(SpecError) as e:
        objects.example_inputs(_TwoInputs(), inputs, True, kw.get("dynamic_axes"), None)
    assert fragment in e.value.message and e.value.tip


SCRIPT = '''
from __future__ import annotations
import argparse
import json
import torch
from torch import nn
import gen_repo

VOCAB = 50
UNUSED = 3


def pool(x):
    return x.mean(1)


class Inner(nn.Module):
    def forward(self, x):
        return torch.relu(pool(x)) * SCALE


SCALE = 2.0


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 4)
        self.inner = Inner()

    def forward(self, tokens):
        return self.inner(self.emb(tokens))


def train(model):
    json.dumps({})


model = Net()
train(model)
gen_repo.build(model, torch.zeros(2, 3, dtype=torch.long))
'''


def test_a_scripts_model_takes_only_what_its_classes_use():
    body = ast.parse(SCRIPT).body
    kept = objects._needed(body, {"Net"})
    text = "\n".join(ast.unparse(node) for node in kept)
    for wanted in ("from __future__ import annotations", "import torch", "from torch import nn",
                   "VOCAB = 50", "def pool", "class Inner", "SCALE = 2.0", "class Net"):
        assert wanted in text, wanted
    for dropped in ("argparse", "json", "gen_repo", "UNUSED", "def train", "model = Net()"):
        assert dropped not in text, dropped


def test_a_model_class_from_a_notebook_is_refused_with_the_route(monkeypatch):
    notebook = types.ModuleType("__main__")  # an interactive session: no __file__
    exec("import torch\nclass Cell(torch.nn.Linear):\n    pass\n", notebook.__dict__)
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    with pytest.raises(SourceError) as e:
        objects.from_object(notebook.Cell(2, 2))
    assert "interactive session" in e.value.message and ".py file" in e.value.tip


def test_unknown_options_and_models_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(SpecError) as e:
        api.build(nn.Linear(2, 2), torch.zeros(1, 2), out=tmp_path, max_batch=4)
    assert "unknown option 'max_batch'" in e.value.message and "max_batch_size" in e.value.message
    with pytest.raises(SpecError) as e:
        api.build(42, out=tmp_path)
    assert "the model is a int" in e.value.message
    with pytest.raises(SpecError) as e:
        api.bench(tmp_path, url="localhost:8001", instances=(1, 2))
    assert "--instances needs bench's own server" in e.value.message
    assert not any(tmp_path.iterdir())


def test_the_cli_and_the_api_make_the_same_spec(tmp_path):
    from generator.cli import make_parser
    from generator.commands.build import spec_from_args

    args = make_parser().parse_args(["build", "torchvision:resnet18", "--max-batch-size", "4",
                                     "--cpu-instances", "2", "--out", str(tmp_path)])
    assert spec_from_args(args) == api.build_spec(source="torchvision:resnet18",
                                                  max_batch_size=4, cpu_instances=2,
                                                  out=str(tmp_path))


def test_tune_settings_say_which_options_were_given_as_their_flags():
    settings, given = api.tune_settings(concurrency=(4, 1), objective="min_latency",
                                        queue_delays_us=["off", 100], preferred=False)
    assert given == {"--objective": "min-latency", "--concurrency": [1, 4],
                     "--queue-delays-us": ["off", 100], "--no-preferred-batch-sizes": False}
    assert settings.concurrency == (1, 4) and not settings.space.preferred
    with pytest.raises(SpecError) as e:
        api.tune_settings(queue_delays_us=["soon"])
    assert "--queue-delays-us" in e.value.message
