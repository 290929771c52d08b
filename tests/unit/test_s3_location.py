"""S3 repository URLs (both spellings), error translation, and push's local digests (no server)."""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from generator.errors import RepositoryError, SpecError
from generator.ship.push import digests, model_files
from generator.repository.s3 import RemoteObject, S3Location, model_names, storage_error


@pytest.mark.parametrize("url, endpoint, triton, storage, endpoint_url", [
    ("s3://models/prod", "http://127.0.0.1:9000", "s3://127.0.0.1:9000/models/prod",
     "s3://models/prod", "http://127.0.0.1:9000"),
    ("s3://127.0.0.1:9000/models/prod", None, "s3://127.0.0.1:9000/models/prod",
     "s3://models/prod", "http://127.0.0.1:9000"),
    ("s3://https://minio.example:9443/models/a/b/", None,
     "s3://https://minio.example:9443/models/a/b", "s3://models/a/b", "https://minio.example:9443"),
    ("s3://models/prod", "https://s3.example.com", "s3://https://s3.example.com:443/models/prod",
     "s3://models/prod", "https://s3.example.com:443"),
    ("s3://models", None, "s3://models", "s3://models", None),
    ("s3://models//deep/er/", None, "s3://models/deep/er", "s3://models/deep/er", None),
])
def test_both_spellings(url, endpoint, triton, storage, endpoint_url):
    loc = S3Location.parse(url, endpoint)
    assert loc.triton_url == triton and loc.storage_uri == storage
    assert loc.endpoint_url == endpoint_url
    assert S3Location.parse(loc.triton_url) == loc  # Triton's form reads back the same


def test_keys():
    loc = S3Location.parse("s3://127.0.0.1:9000/models/prod")
    assert loc.key("m_python", "config.pbtxt") == "prod/m_python/config.pbtxt"
    assert loc.key_prefix == "prod/"
    assert S3Location.parse("s3://models").key("m", "x") == "m/x"
    assert S3Location.parse("s3://models").key_prefix == ""


@pytest.mark.parametrize("url, endpoint, words", [
    ("/tmp/repo", None, "not an s3:// URL"),
    ("s3://", None, "names no bucket"),
    ("s3://127.0.0.1:9000", None, "names no bucket"),
    ("s3://My_Bucket/x", None, "not a valid bucket name"),
    ("s3://models/a b", None, "cannot parse"),
    ("s3://models/x+y", None, "cannot parse"),
    ("s3://https://models/x", None, "no HOST:PORT"),
    ("s3://models/x", "ftp://host:21", "--endpoint-url"),
    ("s3://models/x", "http://[::1]:9000", "IPv4"),
    ("s3://10.0.0.1:9000/models/x", "http://10.0.0.2:9000", "Give the endpoint once"),
])
def test_bad_urls(url, endpoint, words):
    with pytest.raises(SpecError) as e:
        S3Location.parse(url, endpoint)
    assert words in e.value.message + e.value.tip


def test_model_names_need_a_config():
    objects = {"a/config.pbtxt": RemoteObject(1, "x"), "a/1/model.py": RemoteObject(1, "x"),
               "half/1/model.py": RemoteObject(1, "x"), "b/config.pbtxt": RemoteObject(1, "x"),
               "c/1/config.pbtxt": RemoteObject(1, "x")}
    assert model_names(objects) == ["a", "b"]


def _client_error(code: str, message: str = "no") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "ListObjectsV2")


@pytest.mark.parametrize("error, action, words", [
    (_client_error("InvalidAccessKeyId"), "list the bucket", "rejected the credentials"),
    (_client_error("SignatureDoesNotMatch"), "list the bucket", "rejected the credentials"),
    (_client_error("AccessDenied"), "upload prod/m/x", "access denied"),
    (_client_error("NoSuchBucket"), "list the bucket", "does not exist"),
    (NoCredentialsError(), "list the bucket", "no AWS credentials"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "list the bucket",
     "could not reach"),
    (_client_error("SlowDown", "reduce your rate"), "upload x", "SlowDown: reduce your rate"),
])
def test_storage_errors_are_one_clear_paragraph(error, action, words):
    loc = S3Location.parse("s3://127.0.0.1:9000/models/prod")
    e = storage_error(error, loc, action)
    assert isinstance(e, RepositoryError) and words in e.message and e.tip
    assert "\n" not in e.message


def test_digests_single_part_and_multipart(tmp_path):
    data = bytes(range(256)) * 4096 * 3  # 3 MiB
    f = tmp_path / "blob"
    f.write_bytes(data)
    sha, etag = digests(f, part_bytes=8 * 2**20)
    assert sha == hashlib.sha256(data).hexdigest() and etag == hashlib.md5(data).hexdigest()
    mib = 2**20
    _, etag = digests(f, part_bytes=mib)  # 3 parts: MD5 of the parts' MD5s, "-3"
    parts = b"".join(hashlib.md5(data[i:i + mib]).digest() for i in range(0, len(data), mib))
    assert etag == f"{hashlib.md5(parts).hexdigest()}-3"


def test_model_files_config_last_hidden_files_skipped(tmp_path):
    m = tmp_path / "m_python"
    (m / "1" / "__pycache__").mkdir(parents=True)
    for rel in ("config.pbtxt", "1/model.py", "1/__pycache__/model.pyc", ".DS_Store",
                "gen_repo.json", "zz.npz"):
        (m / rel).write_text(rel)
    assert [f.rel for f in model_files(m)] == ["1/model.py", "gen_repo.json", "zz.npz",
                                               "config.pbtxt"]


def test_model_files_refuse_names_triton_cannot_read(tmp_path):
    m = tmp_path / "m_python"
    (m / "1").mkdir(parents=True)
    (m / "config.pbtxt").write_text("x")
    (m / "1" / "my model.pt").write_text("x")
    with pytest.raises(SpecError, match="my model.pt"):
        model_files(m)
