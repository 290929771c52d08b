"""The Python API end to end, as users run it: the README's training script (its model class in
__main__) builds, serves, verifies and benches; a quiet run prints nothing at all."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from generator.repository import layout
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "examples" / "from_python" / "train_and_serve.py"


def test_the_training_script_builds_serves_verifies_and_benches(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "repo"),
                           "--bench-out", str(tmp_path / "bench")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "2 of 2 variants written" in out
    assert "tiny_ranker_python HTTP OK" in out and "tiny_ranker_python gRPC OK" in out
    assert "tiny_ranker: at concurrency 8" in out and (tmp_path / "bench/report.md").is_file()
    assert "must provide gen_repo" not in out  # the script's own imports stay out of the model
    model = layout.BuiltModel(tmp_path / "repo" / "tiny_ranker_python")
    assert model.record["spec"]["source"] == "python:__main__.TinyRanker"
    assert model.spec.inputs[0].dims == (-1,) and model.spec.inputs[0].high == 200
    with zipfile.ZipFile(model.path / "1" / "model.package") as z:
        main = next(n for n in z.namelist() if n.endswith("gen_repo_main_train_and_serve.py"))
        source = z.read(main).decode()
    assert "class TinyRanker" in source and "def train" not in source
    assert "import gen_repo" not in source and "argparse" not in source


QUIET = '''
import torch
import gen_repo


class Doubler(torch.nn.Module):
    def forward(self, x):
        return x * 2


model = Doubler()
report = gen_repo.build(model, torch.ones(2, 4), out={out!r}, variants=["python"])
assert report.exit_code == 0, report.table()
with gen_repo.serve({out!r}) as served:
    assert served.ready == ["doubler_python"], served.statuses
    assert gen_repo.verify({out!r}, served=served, requests=8, concurrency=2).ok
'''


def test_the_api_prints_nothing_unless_asked(tmp_path):
    script = tmp_path / "quiet.py"
    script.write_text(QUIET.format(out=str(tmp_path / "repo")))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == "" and done.stderr == "", done.stdout + done.stderr


def test_the_readme_shows_this_very_script():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## From Python"):]
    block = section[section.index("```python\n") + len("```python\n"):]
    assert block[:block.index("```\n")] == SCRIPT.read_text()
