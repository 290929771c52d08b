"""Scale out through S3: push to a real S3-compatible server, serve from it, verify, break it.

The S3 server is moto in server mode, started by the fixture on a free 127.0.0.1 port with IAM
authentication switched on (so wrong credentials are refused like on AWS) and a bounded lifetime.
Nothing here talks to anything but 127.0.0.1: no ~/.aws, no instance metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from generator.repository import layout, manifest, s3
from generator.repository.s3 import SHA_KEY
from generator.ship import push
from generator.ship.push import digests
from generator.serve.ports import Ports, free_ports
from generator.serve.server import EmbeddedServer
from generator.status import READY, SKIPPED
from generator.serve.verify import OK, VerifyOptions, verify_repository
from tests.conftest import ROOT
from tests.integration.conftest import PYTORCH_BACKEND, sigint_as_default

pytestmark = pytest.mark.integration

BUCKET = "models"
REGION = "us-east-1"
MOTO_LIFETIME_S = 1800  # the server is killed after this even if the test session dies
READ_ONLY_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}
WRITE_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
GEN_REPO = [sys.executable, "-m", "generator.cli"]
# `python -m moto.server`, with one fix: moto 5.2.5 computes a new object's ETag on first use,
# reading its buffer without the object's lock, so a listing and a HEAD of the same fresh object
# at once can cache a wrong ETag (gen-repo push's read-back check then rightly refuses it).
MOTO_SERVER = """
import sys
from moto.s3.models import FakeKey
from moto.server import main

unlocked = FakeKey.etag.fget


def etag(self):
    with self.lock:
        return unlocked(self)


FakeKey.etag = property(etag)
main(sys.argv[1:])
"""


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str  # http://127.0.0.1:PORT
    writer: tuple[str, str]  # (access key id, secret): s3:*
    reader: tuple[str, str]  # s3:GetObject + s3:ListBucket only
    log: Path

    def url(self, prefix: str) -> str:
        """Triton's form of the repository at ``prefix`` in the test bucket."""
        return f"s3://{self.endpoint_url.split('://')[1]}/{BUCKET}/{prefix}"

    def client(self, keys=None):
        key, secret = keys or self.writer
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def env(self, keys=None) -> dict[str, str]:
        key, secret = keys or self.writer
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_DEFAULT_REGION": REGION}

    def listing(self, prefix: str) -> dict[str, str]:
        """{key under prefix/: ETag} as the bucket holds it now."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                        Prefix=prefix + "/")
        return {o["Key"][len(prefix) + 1:]: o["ETag"].strip('"')
                for page in pages for o in page.get("Contents", [])}


def _iam_user(iam, name: str, policy: dict) -> tuple[str, str]:
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 (+ IAM) on 127.0.0.1 with authentication after the six set-up calls below."""
    (port,) = free_ports(1)
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="6")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["timeout", "-k", "5", str(MOTO_LIFETIME_S), sys.executable, "-c", MOTO_SERVER,
             "-H", "127.0.0.1", "-p", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        server = S3Server(endpoint, _iam_user(iam, "writer", WRITE_POLICY),
                          _iam_user(iam, "reader", READ_ONLY_POLICY), log)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def aws_env(s3_server, monkeypatch, tmp_path):
    """The writer's credentials in the environment, and nothing else of AWS's chain."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


def push_cli(run_cli, server: S3Server, repo: Path, prefix: str, *extra):
    """gen-repo push (in-process) of ``repo`` to ``prefix``, AWS-style URL + --endpoint-url."""
    return run_cli("push", f"s3://{BUCKET}/{prefix}", "--repo", repo, "--endpoint-url",
                   server.endpoint_url, *extra)


def status_rows(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in stdout.splitlines()
            if line.split() and line.split()[1] in ("UPLOADED", "UNCHANGED", "PLANNED")}


def local_etags(model_dir: Path) -> dict[str, str]:
    """What push must put in the bucket: the model's files (bytecode caches a served model's
    stub writes are left out) with their ETags."""
    return {f.rel: f.etag for f in push.model_files(model_dir)}


def write_log(s3c) -> list[tuple[str, str]]:
    """Record every write call of a boto3 client: [(operation, key)], in the order sent."""
    calls = []

    def record(params, model, **_):
        if model.name in ("PutObject", "CreateMultipartUpload", "DeleteObject"):
            calls.append((model.name, params.get("Key", "")))

    s3c.meta.events.register("before-parameter-build.s3", record)
    return calls


# ---------------------------------------------------------------------------------------------
# push -> serve from S3 -> verify over HTTP and gRPC


def test_push_serve_from_s3_and_verify(aws_env, tiny_repo, run_cli, tmp_path):
    code, out, err = push_cli(run_cli, aws_env, tiny_repo, "e2e")
    assert code == 0, err
    names = [m.name for m in layout.list_models(tiny_repo)]
    assert set(status_rows(out)) == set(names)
    assert all(r[1] == "UPLOADED" for r in status_rows(out).values())
    url = aws_env.url("e2e")
    assert f"gen-repo serve --repo {url}" in out
    for name in names:  # every object verified against the local bytes
        assert {k.split("/", 1)[1]: v for k, v in aws_env.listing("e2e").items()
                if k.startswith(name + "/")} == local_etags(tiny_repo / name)

    location = s3.S3Location.parse(url)
    models = s3.remote_models(location, cache=tmp_path / "cache")  # references from the bucket
    assert [m.name for m in models] == names
    ports = Ports(*free_ports(3))
    with EmbeddedServer(url, ports, log_path=tmp_path / "tritonserver.log",
                        env=s3.triton_env()) as server:
        statuses = {st.name: st for st in server.load(models)}
        served = [n for n in names if PYTORCH_BACKEND or not n.endswith("_libtorch")]
        for name in names:  # libtorch from the bucket too, on a real PyTorch backend
            expected = READY if name in served else SKIPPED
            assert statuses[name].state == expected, statuses[name]
        report = verify_repository(models, server.http_url, server.grpc_url,
                                   VerifyOptions(concurrency=8, requests=16))
        for name in served:
            for protocol in ("http", "grpc"):
                r = report.result(name, protocol)
                assert r.status == OK, r.detail
        assert report.ok and not report.failures
        # the CLI's verify, with the local repository as the reference
        code, out, err = run_cli("verify", "--repo", tiny_repo, "--models", "tiny_mlp_python",
                                 "--http-url", server.http_url, "--grpc-url", server.grpc_url,
                                 "--requests", "8", "--concurrency", "4")
        assert code == 0, out + err
    log = (tmp_path / "tritonserver.log").read_text()
    assert url in log  # it really read the bucket


def test_objects_changed_in_the_bucket_are_named_before_a_load(aws_env, model_copy, tmp_path):
    """What serve checks for a model read from S3: the mirrored top-level files are hashed, and
    each object under the version directory must carry the SHA-256 its push recorded, equal to
    the model's gen_repo.sha256."""
    from generator.ship.push import push

    location = s3.S3Location.parse(aws_env.url("tamper"))
    s3c = s3.client(location)
    push(layout.list_models(model_copy), location, s3c)
    (model,) = s3.remote_models(location, cache=tmp_path / "ok")
    assert model.file_problems() == [] and set(model.remote_digests) == {
        "1/model.package", "1/model.py", "1/weights.pt"}
    raw = aws_env.client()
    key = f"tamper/{model.name}"
    raw.put_object(Bucket=BUCKET, Key=f"{key}/1/model.py", Body=b"import os\n")  # no metadata
    raw.put_object(Bucket=BUCKET, Key=f"{key}/1/model.package", Body=b"x",
                   Metadata={SHA_KEY: "0" * 64})
    raw.put_object(Bucket=BUCKET, Key=f"{key}/1/extra.py", Body=b"")
    raw.delete_object(Bucket=BUCKET, Key=f"{key}/gen_repo_samples_b.npz")
    (model,) = s3.remote_models(location, cache=tmp_path / "changed")
    found = model.file_problems()
    assert found == [
        "1/model.package differs from the file gen-repo wrote (SHA-256 000000000000…, recorded"
        f" {manifest.read(model_copy / model.name)['1/model.package'][:12]}…)",
        "1/model.py has no SHA-256 recorded in the bucket (not uploaded by gen-repo push)",
        "gen_repo_samples_b.npz is missing",
        "1/extra.py is not one of the files gen-repo wrote"], found
    reason, tip = manifest.refusal(model, found)
    assert "gen-repo push" in tip and "seal" not in tip


def test_serve_and_verify_cli_from_s3(aws_env, tiny_repo, run_cli, tmp_path):
    """`gen-repo serve --repo s3://...` in its own process, `gen-repo verify --repo s3://...`."""
    code, _, err = push_cli(run_cli, aws_env, tiny_repo, "cli")
    assert code == 0, err
    url = aws_env.url("cli")
    http, grpc, metrics = free_ports(3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "serve.out", "wb") as out:
        serve = subprocess.Popen(
            [*GEN_REPO, "serve", "--repo", url, "--models", "tiny_mlp_python,seq_encoder",
             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
             "--log-file", str(tmp_path / "tritonserver.log")],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            preexec_fn=sigint_as_default)
    try:
        deadline = time.monotonic() + 300
        while "serving" not in (tmp_path / "serve.out").read_text():
            assert serve.poll() is None, (tmp_path / "serve.out").read_text()
            assert time.monotonic() < deadline, "gen-repo serve did not come up"
            time.sleep(0.5)
        code, out, err = run_cli("verify", "--repo", url, "--models", "tiny_mlp_python,seq_encoder",
                                 "--http-url", f"localhost:{http}", "--grpc-url",
                                 f"localhost:{grpc}", "--requests", "8", "--concurrency", "4")
        assert code == 0, out + err
        assert sum(" OK " in line for line in out.splitlines()) == 4  # 2 models x 2 protocols
    finally:
        serve.send_signal(signal.SIGINT)
        assert serve.wait(60) == 0, (tmp_path / "serve.out").read_text()


# ---------------------------------------------------------------------------------------------
# the upload order, re-pushes


@pytest.fixture
def model_copy(tiny_repo, tmp_path) -> Path:
    """A repository holding a copy of tiny_mlp_python only, free to edit."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo / "tiny_mlp_python", repo / "tiny_mlp_python")
    return repo


def test_config_goes_last_and_unchanged_models_upload_nothing(aws_env, model_copy):
    from generator.ship.push import push

    location = s3.S3Location.parse(aws_env.url("order"))
    s3c = s3.client(location)
    calls = write_log(s3c)
    models = layout.list_models(model_copy)
    report = push(models, location, s3c)
    assert [r.state for r in report.results] == ["UPLOADED"]
    keys = [k for _, k in calls]
    assert keys[-1] == "order/tiny_mlp_python/config.pbtxt"
    assert sorted(keys) == sorted(f"order/tiny_mlp_python/{rel}"
                                  for rel in local_etags(model_copy / "tiny_mlp_python"))
    # stored SHA-256 metadata matches the local file
    head = aws_env.client().head_object(Bucket=BUCKET, Key="order/tiny_mlp_python/1/model.py")
    assert head["Metadata"][SHA_KEY] == digests(model_copy / "tiny_mlp_python/1/model.py")[0]

    calls.clear()  # unchanged: nothing uploaded, nothing deleted
    report = push(models, location, s3c)
    assert [r.state for r in report.results] == ["UNCHANGED"] and calls == []

    # a changed file: config.pbtxt deleted first, the changed file, config.pbtxt last
    with open(model_copy / "tiny_mlp_python/1/model.py", "a") as f:
        f.write("\n# changed\n")
    (model_copy / "tiny_mlp_python/gen_repo_samples_b.npz").unlink()  # gone locally: stale
    manifest.write(model_copy / "tiny_mlp_python")  # changed on purpose
    report = push(layout.list_models(model_copy), location, s3c)
    assert calls == [("DeleteObject", "order/tiny_mlp_python/config.pbtxt"),
                     ("PutObject", "order/tiny_mlp_python/1/model.py"),
                     ("PutObject", "order/tiny_mlp_python/gen_repo.sha256"),
                     ("DeleteObject", "order/tiny_mlp_python/gen_repo_samples_b.npz"),
                     ("PutObject", "order/tiny_mlp_python/config.pbtxt")]
    assert report.results[0].deleted == 1
    assert aws_env.listing("order") == {f"tiny_mlp_python/{k}": v for k, v in
                                        local_etags(model_copy / "tiny_mlp_python").items()}

    calls.clear()  # only config.pbtxt changed: its hash, then itself, no window without it
    cfg = model_copy / "tiny_mlp_python/config.pbtxt"
    cfg.write_text(cfg.read_text() + "\n# note\n")
    manifest.write(model_copy / "tiny_mlp_python")
    dry = push(layout.list_models(model_copy), location, s3c, dry_run=True)
    assert [r.state for r in dry.results] == ["PLANNED"] and calls == []
    push(layout.list_models(model_copy), location, s3c)
    assert calls == [("PutObject", "order/tiny_mlp_python/gen_repo.sha256"),
                     ("PutObject", "order/tiny_mlp_python/config.pbtxt")]


def test_a_poller_never_sees_half_a_model(aws_env, model_copy, run_cli):
    """List the bucket in a loop while pushes run: whenever config.pbtxt is there, the model's
    files are all of one push, never a mix."""
    model = model_copy / "tiny_mlp_python"
    (model / "1" / "padding.bin").write_bytes(os.urandom(24 * 2**20))  # a slower upload
    manifest.write(model)
    states = [local_etags(model)]
    stop, seen, bad = threading.Event(), [], []

    def poll():
        while not stop.is_set():
            now = {k.split("/", 1)[1]: v for k, v in aws_env.listing("poll").items()}
            seen.append(now)
            if "config.pbtxt" in now and now not in states:
                bad.append(now)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        code, _, err = push_cli(run_cli, aws_env, model_copy, "poll")
        assert code == 0, err
        (model / "1" / "padding.bin").write_bytes(os.urandom(24 * 2**20))
        manifest.write(model)
        states.append(local_etags(model))
        code, _, err = push_cli(run_cli, aws_env, model_copy, "poll")
        assert code == 0, err
    finally:
        stop.set()
        poller.join(30)
    assert not bad, f"a listing showed config.pbtxt beside a mix of files: {bad[0]}"
    assert any("config.pbtxt" not in s and s for s in seen)  # it did watch the pushes happen
    assert seen[-1] == states[-1]


# ---------------------------------------------------------------------------------------------
# interrupted pushes


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_push_leaves_no_config_and_a_rerun_completes_it(aws_env, model_copy,
                                                                    run_cli, tmp_path, sig):
    prefix = f"stop-{sig.name.lower()}"
    model = model_copy / "tiny_mlp_python"
    (model / "1" / "weights.bin").write_bytes(os.urandom(96 * 2**20))  # two parts, seconds
    manifest.write(model)
    before = "tiny_mlp_python/1/model.py"  # uploaded just before weights.bin
    with open(tmp_path / "push.err", "wb") as err:
        proc = subprocess.Popen(
            [*GEN_REPO, "push", f"s3://{BUCKET}/{prefix}", "--repo", str(model_copy),
             "--endpoint-url", aws_env.endpoint_url],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=err,
            cwd=ROOT, preexec_fn=sigint_as_default)
    deadline = time.monotonic() + 120
    while before not in aws_env.listing(prefix):
        assert proc.poll() is None, (tmp_path / "push.err").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    code = proc.wait(60)
    stderr = (tmp_path / "push.err").read_text()
    held = aws_env.listing(prefix)
    assert "tiny_mlp_python/config.pbtxt" not in held, "interrupted, yet visible"
    # S3 never shows a partial object: weights.bin is absent or complete, whenever the signal hit
    assert held.get("tiny_mlp_python/1/weights.bin") in \
        (None, local_etags(model)["1/weights.bin"])
    assert s3.model_names({k: None for k in held}) == []  # servers listing models skip it
    if sig == signal.SIGINT:
        assert code == 130
        assert "stopped before its config.pbtxt was uploaded" in stderr
        assert "Run gen-repo push again" in stderr
    else:
        assert code == -signal.SIGKILL

    code, out, err = push_cli(run_cli, aws_env, model_copy, prefix)  # completes it
    assert code == 0, err
    row = status_rows(out)["tiny_mlp_python"]
    total = len(local_etags(model))
    assert row[1] == "UPLOADED" and row[2] == f"{total - len(held)}/{total}"  # only what lacked
    assert aws_env.listing(prefix) == {f"tiny_mlp_python/{k}": v
                                       for k, v in local_etags(model).items()}


# ---------------------------------------------------------------------------------------------
# credentials


def test_wrong_credentials_are_a_clear_error_and_change_nothing(aws_env, model_copy, run_cli,
                                                                monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    code, out, err = push_cli(run_cli, aws_env, model_copy, "creds")
    assert code == 1
    assert "ERROR: the S3 store at" in err and "rejected the credentials" in err
    assert "SignatureDoesNotMatch" in err and "TIP: Set AWS_ACCESS_KEY_ID" in err
    assert "Traceback" not in err
    assert aws_env.listing("creds") == {}

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
    code, _, err = push_cli(run_cli, aws_env, model_copy, "creds")
    assert code == 1 and "InvalidAccessKeyId" in err
    with pytest.raises(Exception) as e:  # serve and verify read the bucket the same way
        s3.remote_models(s3.S3Location.parse(aws_env.url("creds")), cache=tmp_path)
    assert "rejected the credentials" in str(e.value)


def test_read_only_credentials_leave_nothing_half_visible(aws_env, model_copy, run_cli,
                                                          monkeypatch):
    for k, v in aws_env.env(aws_env.reader).items():
        monkeypatch.setenv(k, v)
    code, out, err = push_cli(run_cli, aws_env, model_copy, "readonly")
    assert code == 1
    assert "access denied" in err and "s3:PutObject" in err and "TIP:" in err
    assert "stopped before its config.pbtxt was uploaded" in err
    assert "tiny_mlp_python/config.pbtxt" not in aws_env.listing("readonly")


def test_missing_bucket(aws_env, model_copy, run_cli):
    url = "s3://no-such-bucket/x"
    code, _, err = run_cli("push", url, "--repo", model_copy, "--endpoint-url",
                           aws_env.endpoint_url)
    assert code == 1 and "bucket 'no-such-bucket' does not exist" in err
    assert "--create-bucket" in err
    code, out, err = run_cli("push", url, "--repo", model_copy, "--endpoint-url",
                             aws_env.endpoint_url, "--create-bucket")
    assert code == 0, err
    assert "tiny_mlp_python/config.pbtxt" in {
        o["Key"][2:] for o in aws_env.client().list_objects_v2(Bucket="no-such-bucket")["Contents"]}


def test_create_bucket_accepts_an_existing_bucket_and_explains_an_unreachable_store(
        aws_env, model_copy, run_cli):
    code, _, err = push_cli(run_cli, aws_env, model_copy, "again", "--create-bucket")
    assert code == 0, err  # the bucket exists already: that is what was asked for
    (port,) = free_ports(1)  # nothing listens there
    code, _, err = run_cli("push", f"s3://{BUCKET}/x", "--repo", model_copy, "--endpoint-url",
                           f"http://127.0.0.1:{port}", "--create-bucket")
    assert code == 1 and "could not reach the S3 endpoint" in err, err
    assert "create the bucket" in err and "Traceback" not in err


def test_multipart_etag_matches_the_store(aws_env, model_copy):
    """Files above the part size go up in parts; their ETag is predicted exactly, so a re-push
    of them is recognised as unchanged too, as is one with another part size."""
    from generator.ship.push import push

    (model_copy / "tiny_mlp_python/1/big.bin").write_bytes(os.urandom(11 * 2**20))
    manifest.write(model_copy / "tiny_mlp_python")
    location = s3.S3Location.parse(aws_env.url("multipart"))
    s3c = s3.client(location)
    part = 5 * 2**20  # S3's smallest part: 3 parts
    assert push(layout.list_models(model_copy), location, s3c, part_bytes=part).results[0].state \
        == "UPLOADED"
    etag = aws_env.listing("multipart")["tiny_mlp_python/1/big.bin"]
    assert etag.endswith("-3") and etag == digests(model_copy / "tiny_mlp_python/1/big.bin",
                                                   part)[1]
    assert push(layout.list_models(model_copy), location, s3c, part_bytes=part).results[0].state \
        == "UNCHANGED"
    # pushed with another part size, the ETag differs from the local one: the stored SHA-256
    # decides (as for SSE-KMS objects, whose ETag is no MD5), and nothing is sent again
    calls = write_log(s3c)
    assert push(layout.list_models(model_copy), location, s3c).results[0].state == "UNCHANGED"
    assert calls == []
