"""gen-repo build end to end: real exports, fresh-process parity, configs, errors, atomicity."""

import contextlib
import json
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from generator.repository import layout, staging
from generator.runtime.model import sha256_of
from tests.conftest import ROOT, fixture_source


def _assert_clean_error(code, err, fragment):
    assert code != 0
    assert "ERROR:" in err and "TIP:" in err, err
    assert "Traceback" not in err
    assert fragment in err, err


def _no_staging_left(out: Path):
    return not list(out.parent.glob(f"{staging.STAGING_PREFIX}*"))


@pytest.fixture(scope="module")
def resnet_repo(tmp_path_factory):
    from generator.cli import main

    out = tmp_path_factory.mktemp("resnet") / "repo"
    assert main(["build", "--out", str(out), "--cpu-instances", "2", "-q"]) == 0
    return out


def test_default_build_writes_two_checked_variants(resnet_repo):
    models = {m.name: m for m in layout.list_models(resnet_repo)}
    assert set(models) == {"resnet18_libtorch", "resnet18_python"}
    lt, py = models["resnet18_libtorch"], models["resnet18_python"]
    assert lt.config.platform == "pytorch_libtorch" and (lt.path / "1/model.pt").is_file()
    assert py.config.backend == "python" and (py.path / "1/model.py").is_file()
    for m in (lt, py):
        cfg = m.config
        assert cfg.max_batch_size == 8 and cfg.HasField("dynamic_batching")
        assert [(g.kind, g.count) for g in cfg.instance_group] == [(2, 2)]  # KIND_CPU x2
        assert [(i.name, list(i.dims)) for i in cfg.input] == [("input", [3, 224, 224])]
        assert [(o.name, list(o.dims)) for o in cfg.output] == [("output", [1000])]
        rec = m.record
        assert rec["check"]["ok"] and rec["versions"]["torch"].startswith("2.15.0")
        assert rec["command"][:2] == ["gen-repo", "build"] or rec["command"]
        artifact = rec["load_params"]["artifact"]
        assert sha256_of(m.path / "1" / artifact) == rec["load_params"]["artifact_sha256"]
        assert m.samples()["input"].shape == (4, 3, 224, 224)
        assert m.reference()["output"].shape == (4, 1000)
    assert py.config.parameters["artifact_sha256"].string_value == \
        py.record["load_params"]["artifact_sha256"]
    _assert_torchscript_layout_as_measured(lt)
    assert _no_staging_left(resnet_repo)


def _assert_torchscript_layout_as_measured(lt):
    """A conv net's TorchScript weights are in the layout the build timed as faster, and model.pt
    holds them so (TorchScript keeps strides); the note gives both timings."""
    import torch

    note = next(n for n in lt.record["notes"] if "layout" in n and "per forward pass" in n)
    assert "contiguous" in note and "channels_last" in note and " ms" in note, note
    ts = torch.jit.load(str(lt.path / "1/model.pt"))
    weight = next(p for p in ts.parameters() if p.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last) == \
        note.startswith("weights in channels_last layout"), note


def test_existing_model_needs_force(resnet_repo, run_cli):
    before = sha256_of(resnet_repo / "resnet18_python/1/model.package")
    code, out, err = run_cli("build", "--out", resnet_repo, "--variants", "python")
    _assert_clean_error(code, err, "--force")
    assert sha256_of(resnet_repo / "resnet18_python/1/model.package") == before


def test_force_never_deletes_a_folder_gen_repo_did_not_write(tmp_path, run_cli):
    mine = tmp_path / "repo" / "tiny_mlp_python"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's own file")
    code, out, err = run_cli("build", f"{ROOT}/tests/fixtures/models.py:tiny_mlp", "--input",
                             "x:float32:16", "--variants", "python", "--force", "--out",
                             tmp_path / "repo")
    _assert_clean_error(code, err, "gen-repo did not write")
    assert (mine / "notes.txt").read_text() == "the user's own file"


def test_user_file_model_two_inputs_dict_output_hermetic(tmp_path, run_cli):
    """The package must load where the user's source is not importable."""
    out = tmp_path / "repo"
    code, stdout, err = run_cli(
        "build", f"{ROOT}/examples/ranker/net.py:make_model", "--input",
        "tokens:int64:-1:0..1000", "--input", "mask:bool:-1", "--name", "ranker",
        "--variants", "libtorch,python,python-ts", "--gpu-instances", "2", "--gpus", "0,1",
        "--cpu-instances", "1", "--out", out)
    assert code == 0, err
    py = layout.BuiltModel(out / "ranker_python")
    assert [o.name for o in py.config.output] == ["score", "embedding"]
    # the score is one value per row: served [B, 1], the model returns [B]
    assert [list(o.dims) for o in py.config.output] == [[1], [32]]
    assert [o.HasField("reshape") for o in py.config.output] == [True, False]
    assert [list(i.dims) for i in py.config.input] == [[-1], [-1]]
    groups = sorted((g.kind, g.count, list(g.gpus)) for g in py.config.instance_group)
    assert groups == [(1, 2, [0, 1]), (2, 1, [])]
    # Load the archive in a fresh interpreter, elsewhere, with no path to examples/.
    params = {k: v.string_value for k, v in py.config.parameters.items()}
    assert params["weights"] == "weights.pt" and params["loader"] == "package"
    script = textwrap.dedent(f"""
        import sys, numpy as np, torch
        assert not any('examples' in p for p in sys.path)
        try:
            import pooling
            raise SystemExit('user module importable: test is not hermetic')
        except ImportError:
            pass
        import importlib.util  # the runtime the server runs: model.package + mapped weights.pt
        spec = importlib.util.spec_from_file_location("runtime", {str(py.path / '1/model.py')!r})
        runtime = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(runtime)
        model = runtime.load_model({str(py.path / '1')!r}, {params!r})
        s = np.load({str(py.path / layout.SAMPLES)!r})
        ref = np.load({str(py.path / layout.REFERENCE)!r})
        with torch.inference_mode():
            score, emb = model(torch.from_numpy(s['tokens']), torch.from_numpy(s['mask']))
        assert ref['score'].shape == (score.shape[0], 1)  # stored as clients receive it
        assert np.allclose(score.numpy(), ref['score'][:, 0], atol=1e-5)
        assert np.allclose(emb.numpy(), ref['embedding'], atol=1e-5)
        print('HERMETIC-OK')
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path,
                          capture_output=True, text=True)
    assert "HERMETIC-OK" in proc.stdout, proc.stderr[-2000:]


def test_trace_that_bakes_a_branch_falls_back_to_script(tmp_path, run_cli):
    code, out, err = run_cli("build", fixture_source("branchy"), "--input", "x:float32:4",
                             "--out", tmp_path / "r")
    assert code == 0, err
    assert "fell back to torch.jit.script" in out
    rec = json.loads((tmp_path / "r/branchy_libtorch" / layout.RECORD).read_text())
    assert rec["load_params"]["torchscript_method"] == "script"


def test_untraceable_model_refuses_libtorch_but_ships_python(tmp_path, run_cli):
    out = tmp_path / "r"
    code, stdout, err = run_cli("build", fixture_source("untraceable"), "--input",
                                "x:float32:4", "--out", out)
    assert code == 3  # partial
    assert "libtorch" in stdout and "FAILED" in stdout and "torch.jit.script failed" in stdout
    assert "ERROR: variant libtorch refused" in err and "TIP:" in err and "Traceback" not in err
    assert not (out / "untraceable_libtorch").exists()
    assert (out / "untraceable_python" / "config.pbtxt").is_file()
    assert _no_staging_left(out)


def test_unpicklable_model_refuses_python_variant(tmp_path, run_cli):
    out = tmp_path / "r"
    code, stdout, err = run_cli("build", fixture_source("lambda_attr"), "--input",
                                "x:float32:4", "--out", out)
    assert code == 3
    assert "lambda_attr_python" in stdout and "FAILED" in stdout
    assert (out / "lambda_attr_libtorch" / "config.pbtxt").is_file()
    assert not (out / "lambda_attr_python").exists()


@pytest.mark.parametrize("args,fragment", [
    (["torchvision:resnet19"], 'did you mean "resnet18"'),
    ([fixture_source("raises")], "factory failed on purpose"),
    ([fixture_source("not_a_module")], "not a torch.nn.Module"),
    ([fixture_source("no_such_factory")], "has no attribute"),
    (["tests/fixtures/missing.py:f"], "does not exist"),
    ([fixture_source("tiny_mlp"), "--input", "x:float32"], "NAME:DTYPE:DIMS"),
    ([fixture_source("tiny_mlp"), "--input", "x:float32:7"], "fails on sample inputs"),
    ([fixture_source("tiny_mlp")], "no inputs given"),
    ([fixture_source("tiny_mlp"), "--input", "x:float32:16", "--weights", "nope.pt"],
     "does not exist"),
])
def test_bad_input_gives_clean_error_and_leaves_nothing(tmp_path, run_cli, args, fragment):
    out = tmp_path / "r"
    code, stdout, err = run_cli("build", *args, "--out", out)
    _assert_clean_error(code, err, fragment)
    assert not out.exists() or not any(out.iterdir())
    assert _no_staging_left(out)


def test_bad_spec_file(tmp_path, run_cli):
    f = tmp_path / "s.toml"
    f.write_text("max_batch_sise = 3\n")
    code, out, err = run_cli("build", "--config", f, "--out", tmp_path / "r")
    _assert_clean_error(code, err, 'did you mean "max_batch_size"')
    assert code == 2


def test_spec_file_and_weights(tmp_path, run_cli):
    import torch

    from tests.fixtures.models import tiny_mlp

    model = tiny_mlp()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    f = tmp_path / "mlp.toml"
    f.write_text(f'source = "{fixture_source("tiny_mlp")}"\nweights = "{tmp_path}/w.pt"\n'
                 f'input = ["x:float32:16"]\nname = "mlp"\nvariants = ["python"]\n'
                 f'max_batch_size = 4\n')
    code, out, err = run_cli("build", "--config", f, "--out", tmp_path / "r")
    assert code == 0, err
    m = layout.BuiltModel(tmp_path / "r/mlp_python")
    x = m.samples()["x"]
    expected = (np.maximum(x.sum(1, keepdims=True) * 0.5 + 0.5, 0) * 0.5 * 32 + 0.5)
    assert np.allclose(m.reference()["output"], np.repeat(expected, 4, 1), rtol=1e-4)
    assert m.config.max_batch_size == 4


def test_relative_out_dir(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("build", fixture_source("tiny_mlp"), "--input", "x:float32:16",
                             "--variants", "python", "--out", "rel_repo")
    assert code == 0, err
    assert (tmp_path / "rel_repo/tiny_mlp_python/config.pbtxt").is_file()


def test_demo_stops_at_a_build_error_with_its_message(tmp_path, run_cli):
    """demo runs the real build command first: a source that cannot load stops it there, with the
    build's own ERROR/TIP (the full demo runs in scripts/demo.sh; bench is tested on its own)."""
    out = tmp_path / "repo"
    code, _, err = run_cli("demo", str(tmp_path / "missing.py") + ":make", "--repo", out,
                           "--bench-out", tmp_path / "bench")
    _assert_clean_error(code, err, "missing.py")
    assert "internal error" not in err
    assert not (tmp_path / "bench").exists()
    assert not out.exists() or not any(out.iterdir())


def _tiny(out, *extra):
    return ["build", f"{ROOT}/tests/fixtures/models.py:tiny_mlp", "--input", "x:float32:16",
            "--variants", "python", "--threads", "1", "--out", out, *extra]


def test_a_name_too_long_for_the_file_system_is_one_clear_error(tmp_path, run_cli):
    code, out, err = run_cli(*_tiny(tmp_path / "repo", "--name", "m" * 300))
    _assert_clean_error(code, err, "a file name is too long")
    assert "shorter --name" in err and "internal error" not in err
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").iterdir())
    assert _no_staging_left(tmp_path / "repo")


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (a new folder) while the block runs. CI runs as
    root on a machine that mounts one, so a failed mount fails the test."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr.strip()}"
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_a_full_disk_and_a_file_size_limit_are_refused_before_writing(tmp_path, run_cli):
    with _tmpfs(tmp_path / "small", "256k") as small:
        code, out, err = run_cli("build", "torchvision:resnet18", "--variants", "python",
                                 "--threads", "1", "--out", small / "repo")
        _assert_clean_error(code, err, f"{small / 'repo'} has ")
        assert "free" in err and "--out DIR" in err
        assert list(small.iterdir()) == []
    limited = subprocess.run(
        [sys.executable, "-m", "generator.cli", "build", "torchvision:resnet18", "--variants",
         "python", "--threads", "1", "--out", str(tmp_path / "repo")], cwd=ROOT,
        capture_output=True, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)))
    assert limited.returncode == 1, limited.stderr
    assert "ulimit -f" in limited.stderr and "Traceback" not in limited.stderr


def test_a_mount_point_as_out_builds_on_its_own_file_system(tmp_path, run_cli):
    with _tmpfs(tmp_path / "mnt", "64m") as mnt:
        code, out, err = run_cli(*_tiny(mnt))
        assert code == 0, err
        assert (mnt / "tiny_mlp_python" / "config.pbtxt").is_file()
        code, out, err = run_cli(*_tiny(mnt, "--force"))  # the replaced model's trash too
        assert code == 0, err
        assert sorted(p.name for p in mnt.iterdir()) == ["tiny_mlp_python"]


def test_serve_and_push_refuse_links_that_leave_the_repository(tmp_path, run_cli):
    code, out, err = run_cli(*_tiny(tmp_path / "elsewhere"))
    assert code == 0, err
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "linked_python").symlink_to(tmp_path / "elsewhere" / "tiny_mlp_python")
    code, out, err = run_cli("verify", "--repo", repo, "--http-url", "127.0.0.1:1",
                             "--grpc-url", "127.0.0.1:2")
    _assert_clean_error(code, err, "is a symbolic link to")
    assert "linked_python" in err
    from generator.ship.push import model_files

    secret = tmp_path / "secret.txt"
    secret.write_text("not for upload")
    model = tmp_path / "elsewhere" / "tiny_mlp_python"
    (model / "1" / "notes.txt").symlink_to(secret)
    with pytest.raises(layout.RepositoryError, match="notes.txt is a symbolic link"):
        model_files(model)


def test_two_builds_into_one_repository_at_once_the_second_is_refused(tmp_path, run_cli):
    import time

    repo = tmp_path / "repo"
    first = subprocess.Popen([sys.executable, "-m", "generator.cli", *map(str, _tiny(repo))],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = repo / staging.LOCK
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    code, out, err = run_cli(*_tiny(repo, "--name", "second"))
    _assert_clean_error(code, err, "another gen-repo build is writing")
    assert f"pid {first.pid}" in err
    assert first.wait(300) == 0, first.communicate()
    code, out, err = run_cli(*_tiny(repo, "--name", "second"))  # free again once it is done
    assert code == 0, err
    assert (repo / "tiny_mlp_python").is_dir() and (repo / "second_python").is_dir()
