"""Every file of a built model is recorded (gen_repo.sha256) and checked before a server loads
it: real byte flips, added code, config and record edits, a removed or damaged manifest, a
missing file -- each refused by name on a real tritonserver while an intact model serves;
``gen-repo seal`` records a deliberate edit; ``sha256sum -c`` reads the same file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from generator.repository import layout, manifest
from generator.status import FAILED, READY
from generator.serve.verify import VerifyOptions, verify_repository
from tests.integration.conftest import embedded_server, models_named

pytestmark = pytest.mark.integration

SOURCE = "tiny_mlp_python"


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def _edit_record_hash(d: Path) -> None:
    record = json.loads((d / layout.RECORD).read_text())
    record["artifacts"]["model.package"] = "0" * 64
    (d / layout.RECORD).write_text(json.dumps(record, indent=2) + "\n")


def _drop_artifact_hash(d: Path) -> None:
    cfg = d / layout.CONFIG
    lines = cfg.read_text().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if '"artifact_sha256"' in line)
    start = max(n for n in range(i) if lines[n].startswith("parameters {"))
    end = next(n for n in range(i, len(lines)) if lines[n] == "}\n")
    cfg.write_text("".join(lines[:start] + lines[end + 1:]))


def _max_batch_size_7(d: Path) -> None:
    cfg = d / layout.CONFIG
    text = cfg.read_text()
    assert "max_batch_size: 8" in text
    cfg.write_text(text.replace("max_batch_size: 8", "max_batch_size: 7"))


# name of the damaged copy -> (the damage, what the refusal must name)
DAMAGE = {
    "flipped_model_py": (lambda d: _flip_byte(d / "1/model.py", 100), "1/model.py differs"),
    "code_added": (lambda d: _append(d / "1/model.py", "\nopen('/tmp/x', 'w')\n"),
                   "1/model.py differs"),
    "flipped_artifact": (lambda d: _flip_byte(d / "1/model.package", 2000),
                         "1/model.package differs"),
    "unhashed_config": (_drop_artifact_hash, "config.pbtxt differs"),
    "batch_edited": (_max_batch_size_7, "config.pbtxt differs"),
    "record_edited": (_edit_record_hash, "gen_repo.json differs"),
    "file_added": (lambda d: (d / "1/helper.py").write_text("import os\n"),
                   "1/helper.py is not one of the files gen-repo wrote"),
    "file_missing": (lambda d: (d / "gen_repo_samples_b.npz").unlink(),
                     "gen_repo_samples_b.npz is missing"),
    "no_manifest": (lambda d: (d / manifest.MANIFEST).unlink(), "it has no gen_repo.sha256"),
    "manifest_damaged": (lambda d: _append(d / manifest.MANIFEST, "not a line\n"),
                         "is not '<sha256>  <file>'"),
}


@pytest.fixture(scope="module")
def repo(tiny_repo, tmp_path_factory) -> Path:
    """The intact model and one damaged copy per DAMAGE entry (its config renamed and its files
    recorded first, as a copy made on purpose would be; then the damage)."""
    from tests.integration.conftest import copy_model

    repo = tmp_path_factory.mktemp("file_check") / "repo"
    shutil.copytree(tiny_repo / SOURCE, repo / SOURCE)
    for name, (damage, _) in DAMAGE.items():
        damage(copy_model(repo, SOURCE, name))
    return repo


def test_each_damage_is_named_and_refused_while_the_intact_model_serves(repo, tmp_path,
                                                                        run_cli):
    names = [SOURCE, *DAMAGE]
    with embedded_server(repo, tmp_path, models_named(repo, *names)) as (server, statuses):
        assert statuses[SOURCE].state == READY, statuses[SOURCE]
        for name, (_, named) in DAMAGE.items():
            s = statuses[name]
            assert s.state == FAILED and named in s.reason, (name, s)
            assert f"gen-repo seal --repo {repo} --models {name}" in s.tip, s.tip
        log = server.log_path.read_text(errors="replace")
        assert not any(f"'{name}'" in log for name in DAMAGE), "a damaged model reached Triton"
        # verify fails them without a request, and passes the intact one
        report = verify_repository(models_named(repo, SOURCE, "code_added"), server.http_url,
                                   server.grpc_url, VerifyOptions(requests=4, concurrency=2))
        by_model = {(r.model, r.protocol): r for r in report.results}
        assert {r.status for (m, _), r in by_model.items() if m == SOURCE} == {"OK"}
        assert all("1/model.py differs" in r.detail for (m, _), r in by_model.items()
                   if m == "code_added")

        # an edit made on purpose: seal records it, and the model loads
        code, out, err = run_cli("seal", "--repo", repo, "--models", "batch_edited")
        files = len(manifest.read(repo / SOURCE))
        assert code == 0 and f"batch_edited: recorded {files} files" in out, out + err
        assert "config.pbtxt differs" in err  # what it found is said before it records
        (again,) = server.load(models_named(repo, "batch_edited"))
        assert again.state == READY, again
        client = server._client(10)
        try:
            assert client.get_model_config("batch_edited")["max_batch_size"] == 7
        finally:
            client.close()


def test_sha256sum_reads_the_manifest(repo):
    done = subprocess.run(["sha256sum", "--check", "--strict", manifest.MANIFEST],
                          cwd=repo / SOURCE, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": OK") == len(manifest.read(repo / SOURCE)) >= 9
    done = subprocess.run(["sha256sum", "--check", manifest.MANIFEST],
                          cwd=repo / "flipped_artifact", capture_output=True, text=True)
    assert done.returncode == 1 and "1/model.package: FAILED" in done.stdout
