"""S3 model repositories: where one lives, a client for it, and reading its models back.

Two spellings name the same place:

    s3://models/prod  + --endpoint-url http://127.0.0.1:9000    (the AWS tools' form)
    s3://127.0.0.1:9000/models/prod                              (Triton's form)
    s3://https://minio.example:9000/models/prod                  (Triton's form, HTTPS)
    s3://models/prod                                             (AWS S3 itself, both tools)

Triton talks plain HTTP to a custom endpoint unless the URL says ``https://`` after ``s3://``;
it reads credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN and the
region from AWS_DEFAULT_REGION (else from AWS_PROFILE / the default profile). Its URL parser
accepts only ``[0-9a-z.-]`` in bucket names and ``[0-9a-zA-Z._-]`` in each path segment; other
characters make it misread the URL, so they are refused here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import RepositoryError, SpecError

DEFAULT_REGION = "us-east-1"
SHA_KEY = "gen-repo-sha256"  # what push records with each object: x-amz-meta-gen-repo-sha256
BUCKET_RE = re.compile(r"[0-9a-z][0-9a-z.\-]{1,61}[0-9a-z]")
SEGMENT_RE = re.compile(r"[0-9a-zA-Z._\-]+")
HOST_PORT_RE = re.compile(r"([0-9a-zA-Z\-.]+):([0-9]+)")
URL_EXAMPLE = "s3://BUCKET/PATH --endpoint-url http://HOST:PORT, or s3://HOST:PORT/BUCKET/PATH"


def is_s3_url(text: str | os.PathLike) -> bool:
    return str(text).startswith("s3://")


def check_segments(path: str, where: str) -> None:
    """Refuse a path Triton's S3 URL parser would misread (one segment at a time)."""
    for seg in path.split("/"):
        if not SEGMENT_RE.fullmatch(seg):
            raise SpecError(
                f"{where}: '{path}' has the path segment '{seg}', which Triton's S3 reader cannot"
                " parse (it allows letters, digits, '.', '_' and '-' only).",
                "Rename it; Triton would otherwise misread the repository URL.")


@dataclass(frozen=True)
class S3Location:
    """A model repository in a bucket: ``bucket``/``prefix`` at ``endpoint`` (None: AWS S3)."""

    bucket: str
    prefix: str = ""  # no leading or trailing slash; "" = the bucket's root
    endpoint: str | None = None  # "host:port" of an S3-compatible store
    https: bool = False  # scheme for ``endpoint`` (Triton's default is HTTP)

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None) -> "S3Location":
        if not is_s3_url(url):
            raise SpecError(f"'{url}' is not an s3:// URL.", f"Write it as {URL_EXAMPLE}.")
        rest = url[len("s3://"):]
        scheme = None
        for s in ("https://", "http://"):
            if rest.startswith(s):
                scheme, rest = s[:-3], rest[len(s):]
        parts = [p for p in rest.split("/") if p]
        endpoint = None
        if parts and HOST_PORT_RE.fullmatch(parts[0]):
            endpoint, parts = parts[0], parts[1:]
        elif scheme:
            raise SpecError(f"'{url}' names a scheme but no HOST:PORT after it.",
                            "Write it as s3://https://HOST:PORT/BUCKET/PATH.")
        https = scheme == "https"
        if endpoint_url:
            flag_endpoint, flag_https = _split_endpoint_url(endpoint_url)
            if endpoint and (endpoint, https) != (flag_endpoint, flag_https):
                raise SpecError(f"'{url}' names the endpoint {endpoint} but --endpoint-url (or"
                                f" AWS_ENDPOINT_URL) says {endpoint_url}.",
                                "Give the endpoint once: in the URL or in --endpoint-url.")
            endpoint, https = flag_endpoint, flag_https
        if not parts:
            raise SpecError(f"'{url}' names no bucket.", f"Write it as {URL_EXAMPLE}.")
        bucket, prefix = parts[0], "/".join(parts[1:])
        if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
            raise SpecError(f"'{bucket}' (in '{url}') is not a valid bucket name.",
                            "Bucket names are 3-63 characters of lowercase letters, digits, '.'"
                            " and '-'; Triton accepts no others.")
        if prefix:
            check_segments(prefix, url)
        return cls(bucket, prefix, endpoint, https)

    @property
    def bucket_path(self) -> str:
        """``bucket/prefix`` (just ``bucket`` at its root)."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    @property
    def endpoint_url(self) -> str | None:
        """For boto3: ``http://host:port`` (None for AWS S3)."""
        if not self.endpoint:
            return None
        return f"{'https' if self.https else 'http'}://{self.endpoint}"

    @property
    def storage_uri(self) -> str:
        """``s3://bucket/prefix``: the form of the AWS tools and KServe's storageUri."""
        return f"s3://{self.bucket_path}"

    @property
    def triton_url(self) -> str:
        """The --model-repository value for tritonserver."""
        if not self.endpoint:
            return self.storage_uri
        scheme = "https://" if self.https else ""
        return f"s3://{scheme}{self.endpoint}/{self.bucket_path}"

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    @property
    def key_prefix(self) -> str:
        """Every object of the repository starts with this ("" for the bucket's root)."""
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return self.triton_url


def endpoint_from_env() -> str | None:
    """The endpoint boto3 itself would take from the environment (AWS_ENDPOINT_URL[_S3])."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _split_endpoint_url(endpoint_url: str) -> tuple[str, bool]:
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise SpecError(f"--endpoint-url '{endpoint_url}' is not an http(s)://HOST[:PORT] URL.",
                        "Example: --endpoint-url http://127.0.0.1:9000")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    endpoint = f"{parts.hostname}:{port}"
    if not HOST_PORT_RE.fullmatch(endpoint):
        raise SpecError(f"--endpoint-url host '{parts.hostname}' cannot be used by Triton, whose S3"
                        " reader accepts host names and IPv4 addresses only.",
                        "Use a host name or an IPv4 address.")
    return endpoint, parts.scheme == "https"


# ---------------------------------------------------------------------------------------------
# clients, credentials, errors


def session(region: str | None = None):
    """A boto3 session: credentials from the usual chain (environment, AWS_PROFILE, config)."""
    try:
        import boto3
    except ImportError as e:  # pragma: no cover - a dependency of the project
        from ..errors import ToolError

        raise ToolError("S3 repositories need the boto3 package, which is not installed.",
                        "Install the project's environment: bash scripts/setup.sh") from e
    return boto3.session.Session(region_name=region)


def client(location: S3Location, region: str | None = None):
    from botocore.config import Config

    sess = session(region)
    config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=10,
                    read_timeout=120,
                    s3={"addressing_style": "path"} if location.endpoint else {})
    return sess.client("s3", endpoint_url=location.endpoint_url, config=config,
                       region_name=sess.region_name or DEFAULT_REGION)


def triton_env(region: str | None = None) -> dict[str, str]:
    """Environment that gives tritonserver the credentials boto3 resolves here.

    Triton reads only the environment and AWS profiles; resolving the chain here (SSO, assumed
    roles, credential processes included) lets the server use whatever works for gen-repo.
    """
    sess = session(region)
    env = {"AWS_DEFAULT_REGION": sess.region_name or DEFAULT_REGION}
    creds = sess.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        env["AWS_ACCESS_KEY_ID"] = frozen.access_key
        env["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
    return env


CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                    "ExpiredToken", "InvalidClientTokenId", "AuthorizationHeaderMalformed"}
CREDENTIALS_TIP = ("Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_DEFAULT_REGION), or"
                   " AWS_PROFILE naming a profile in ~/.aws/credentials, to credentials of this"
                   " store.")


def storage_error(e: Exception, location: S3Location, action: str) -> RepositoryError:
    """A clear RepositoryError for a boto3/botocore failure while doing ``action``."""
    from botocore import exceptions as bx

    where = location.endpoint_url or "AWS S3"
    if isinstance(e, bx.NoCredentialsError):
        return RepositoryError(f"no AWS credentials were found to {action} in {location}.",
                               CREDENTIALS_TIP)
    if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return RepositoryError(f"could not reach the S3 endpoint {where} to {action}: {e}.",
                               "Is the store running and reachable from here? Check"
                               " --endpoint-url (or the HOST:PORT in the s3:// URL).")
    if isinstance(e, bx.ClientError):
        err = e.response.get("Error", {})
        code, message = str(err.get("Code", "")), err.get("Message") or ""
        detail = f"{code}: {message}".rstrip(": ")
        if code in CREDENTIAL_CODES:
            return RepositoryError(f"the S3 store at {where} rejected the credentials ({detail})"
                                   f" while trying to {action}.", CREDENTIALS_TIP)
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return RepositoryError(
                f"access denied to {action} in s3://{location.bucket} at {where} ({detail}).",
                f"The credentials need s3:ListBucket, s3:GetObject, s3:PutObject and"
                f" s3:DeleteObject on bucket {location.bucket}.")
        if code in ("NoSuchBucket", "404") and "bucket" in action:
            flag = f" --endpoint-url {where}" if location.endpoint else ""
            return RepositoryError(f"bucket '{location.bucket}' does not exist at {where}.",
                                   "Create it first: gen-repo push --create-bucket, or"
                                   f" `aws s3 mb s3://{location.bucket}{flag}`.")
        return RepositoryError(f"S3 refused to {action} in {location} ({detail}).",
                               "Rerun with -v for the details of the request.")
    if isinstance(e, bx.BotoCoreError):
        return RepositoryError(f"could not {action} in {location}: {e}.",
                               "Check the endpoint, the credentials and the network.")
    raise TypeError(f"not an S3 error: {e!r}")  # pragma: no cover - a bug in the caller


@dataclass(frozen=True)
class RemoteObject:
    size: int
    etag: str  # without quotes


def list_objects(s3, location: S3Location) -> dict[str, RemoteObject]:
    """Every object under the repository's prefix: {key relative to the prefix: object}."""
    from botocore import exceptions as bx

    found: dict[str, RemoteObject] = {}
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=location.bucket,
                                                              Prefix=location.key_prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(location.key_prefix):]
                found[rel] = RemoteObject(obj["Size"], obj["ETag"].strip('"'))
    except (bx.BotoCoreError, bx.ClientError) as e:
        raise storage_error(e, location, "list the bucket") from e
    return found


def model_names(objects: dict[str, RemoteObject], config: str = "config.pbtxt") -> list[str]:
    """Models of a listing: directories holding a config.pbtxt (a model without one is not yet
    complete, so it is not a model)."""
    return sorted(rel.split("/")[0] for rel in objects
                  if rel.count("/") == 1 and rel.endswith("/" + config))


def remote_models(location: S3Location, cache: Path | None = None, region: str | None = None):
    """The models of an S3 repository as ``layout.BuiltModel`` objects, for serve and verify.

    Each model's config.pbtxt and top-level gen_repo_* files (record, samples, references, file
    hashes: a few kB) are mirrored into a local cache directory, where they are hashed; the
    artifacts under the version directories stay in the bucket, where the server reads them: their
    SHA-256 is the one gen-repo push recorded with each object (read back with a HEAD request).
    """
    from botocore import exceptions as bx

    from ..repository import layout
    from ..machine import cache_dir

    s3 = client(location, region)
    objects = list_objects(s3, location)
    names = model_names(objects, layout.CONFIG)
    if not names:
        raise RepositoryError(f"model repository '{location}' holds no models (no"
                              f" */{layout.CONFIG}).",
                              f"Push one first: gen-repo push {location.storage_uri}"
                              + (f" --endpoint-url {location.endpoint_url}" if location.endpoint
                                 else ""))
    root = (cache or cache_dir()) / "s3" / hashlib.sha256(str(location).encode()).hexdigest()[:16]
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".s3-", dir=root.parent))
    try:
        for rel in objects:
            model, _, name = rel.partition("/")
            if model not in names or not name or "/" in name:  # not a top-level file
                continue
            (staging / model).mkdir(exist_ok=True)
            try:
                s3.download_file(location.bucket, location.key(rel), str(staging / rel))
            except (bx.BotoCoreError, bx.ClientError) as e:
                raise storage_error(e, location, f"download {rel}") from e
        shutil.rmtree(root, ignore_errors=True)
        try:
            os.replace(staging, root)
        except OSError:  # another process mirrored it meanwhile
            if not root.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [layout.BuiltModel(root / name, _recorded_digests(s3, location, objects, name))
            for name in names]


def _recorded_digests(s3, location: S3Location, objects: dict[str, RemoteObject],
                      model: str) -> dict[str, str | None]:
    """{file: the SHA-256 push recorded with its object, or None} for each object of ``model``
    under its version directories (its top-level files are mirrored and hashed locally)."""
    from botocore import exceptions as bx

    out = {}
    for rel in sorted(objects):
        name = rel[len(model) + 1:]
        if not rel.startswith(model + "/") or "/" not in name:
            continue
        try:
            head = s3.head_object(Bucket=location.bucket, Key=location.key(rel))
        except (bx.BotoCoreError, bx.ClientError) as e:
            raise storage_error(e, location, f"read the metadata of {rel}") from e
        out[name] = head.get("Metadata", {}).get(SHA_KEY)
    return out
