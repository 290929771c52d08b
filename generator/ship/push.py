"""Publish a local model repository to S3, one model at a time, config.pbtxt last.

For each model:

1. compare every local file with the object the bucket holds under the same name: same size and
   same ETag (the MD5 the store computes from the bytes it received; for a multipart upload, the
   MD5 of the parts' MD5s, with the part size used here) means unchanged. Same size with another
   ETag (changed, or an ETag that is no MD5: SSE-KMS, SSE-C, other part sizes) is decided by the
   SHA-256 gen-repo stores in each object's metadata;
2. nothing changed: nothing is uploaded (a re-push of an unchanged model costs one listing);
3. otherwise, when the model is visible (its config.pbtxt is in the bucket) and a file other
   than config.pbtxt changes or goes away, config.pbtxt is deleted first, so no server ever
   reads the old config.pbtxt beside new files; then the changed files are uploaded and each is
   verified (size, ETag, SHA-256), objects the local model no longer has are deleted, and
   config.pbtxt is uploaded last and verified.

A push stopped anywhere (Ctrl-C, network, credentials) leaves each model either as it was or
without a config.pbtxt, which servers that list models by their config.pbtxt (gen-repo serve)
skip. Running the push again completes it: files already there and verified are not sent again.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import progress, table
from ..errors import RepositoryError
from ..repository import manifest
from ..repository.layout import CONFIG, outside_link
from ..repository.s3 import (SHA_KEY, RemoteObject, S3Location, check_segments, list_objects,
                             storage_error)

UPLOADED, UNCHANGED, PLANNED = "UPLOADED", "UNCHANGED", "PLANNED"
PART_BYTES = 64 * 2**20  # multipart threshold and part size (the ETag of a file depends on it)
READ_BYTES = 2**20
LOUD_BYTES = 16 * 2**20  # files at least this big get progress lines while they upload


@dataclass(frozen=True)
class LocalFile:
    rel: str  # path inside the model directory, "/"-separated
    path: Path
    size: int
    sha256: str
    etag: str  # the ETag the store computes for this file uploaded with PART_BYTES parts


def digests(path: Path, part_bytes: int = PART_BYTES) -> tuple[str, str]:
    """(SHA-256, expected ETag) of a file, read once."""
    sha, whole, part_md5s = hashlib.sha256(), hashlib.md5(), []
    part, in_part = hashlib.md5(), 0
    with open(path, "rb") as f:
        while chunk := f.read(min(READ_BYTES, part_bytes - in_part)):
            sha.update(chunk)
            whole.update(chunk)
            part.update(chunk)
            in_part += len(chunk)
            if in_part == part_bytes:
                part_md5s.append(part.digest())
                part, in_part = hashlib.md5(), 0
    if in_part:
        part_md5s.append(part.digest())
    size = path.stat().st_size
    if size < part_bytes:  # one PUT: the ETag is the MD5 of the bytes
        return sha.hexdigest(), whole.hexdigest()
    return sha.hexdigest(), f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def model_files(model_dir: Path, part_bytes: int = PART_BYTES) -> list[LocalFile]:
    """The files of a model directory (hidden files and __pycache__ left out), gen_repo.sha256
    and config.pbtxt last."""
    files = []
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir).as_posix()
        if not p.is_file() or any(s.startswith(".") or s == "__pycache__" for s in rel.split("/")):
            continue
        check_segments(f"{model_dir.name}/{rel}", f"local repository {model_dir.parent}")
        outside_link(p, model_dir)
        sha, etag = digests(p, part_bytes)
        files.append(LocalFile(rel, p, p.stat().st_size, sha, etag))
    return sorted(files, key=lambda f: (f.rel == CONFIG, f.rel == manifest.MANIFEST, f.rel))


@dataclass
class ModelPlan:
    name: str
    files: list[LocalFile]
    upload: list[LocalFile]  # new or changed; gen_repo.sha256, then config.pbtxt (if in it) last
    stale: list[str]  # objects of the model (paths inside it) the local model no longer has
    visible: bool  # its config.pbtxt is in the bucket now

    @property
    def unchanged(self) -> bool:
        return not self.upload and not self.stale

    @property
    def hide_first(self) -> bool:
        """Delete config.pbtxt before touching anything else of a visible model (gen_repo.sha256
        changes with every file, config.pbtxt too: it alone does not hide the model)."""
        return self.visible and (bool(self.stale) or any(
            f.rel not in (CONFIG, manifest.MANIFEST) for f in self.upload))

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.upload)


@dataclass
class ModelResult:
    name: str
    state: str  # UPLOADED | UNCHANGED | PLANNED
    sent: int
    total: int
    nbytes: int
    deleted: int
    detail: str = ""


@dataclass
class PushReport:
    location: S3Location
    results: list[ModelResult] = field(default_factory=list)

    def table(self) -> str:
        rows = [(r.name, r.state, f"{r.sent}/{r.total}", human_bytes(r.nbytes), r.detail)
                for r in self.results]
        return table.format_table(("MODEL", "STATUS", "FILES SENT", "BYTES", "DETAIL"), rows)


def human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""  # pragma: no cover


class _UploadProgress:
    """boto3 transfer callback: a line at each quarter of a big file (called from threads)."""

    def __init__(self, label: str, size: int):
        self.label, self.size, self.done, self.shown = label, size, 0, 0
        self.lock = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        with self.lock:
            self.done += nbytes
            quarter = 4 * self.done // max(self.size, 1)
            if quarter > self.shown and self.size >= LOUD_BYTES:
                self.shown = quarter
                progress.info(f"  {self.label}: {human_bytes(self.done)} of"
                              f" {human_bytes(self.size)}")


class Pusher:
    """Uploads models into one S3 location through one boto3 client."""

    def __init__(self, location: S3Location, s3, part_bytes: int = PART_BYTES):
        self.location = location
        self.s3 = s3
        self.part_bytes = part_bytes

    # -- calls to the store, each failure turned into a RepositoryError ------------------------
    def _call(self, action: str, fn, **kw):
        from boto3.exceptions import S3UploadFailedError
        from botocore import exceptions as bx

        try:
            return fn(**kw)
        except (bx.BotoCoreError, bx.ClientError) as e:
            raise storage_error(e, self.location, action) from e
        except S3UploadFailedError as e:  # s3transfer wraps the ClientError it got
            cause = e.__context__
            if isinstance(cause, (bx.BotoCoreError, bx.ClientError)):
                raise storage_error(cause, self.location, action) from e
            raise RepositoryError(f"could not {action}: {e}.", "Re-run gen-repo push.") from e

    def create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        kw = {"Bucket": self.location.bucket}
        region = self.s3.meta.region_name
        if region and region != "us-east-1":
            kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._call("create the bucket", self.s3.create_bucket, **kw)
            progress.info(f"created bucket {self.location.bucket}")
        except RepositoryError as e:  # a bucket that exists already is what was asked for
            cause = e.__cause__
            if not (isinstance(cause, ClientError) and cause.response.get("Error", {}).get(
                    "Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")):
                raise

    def _remote_sha(self, rel: str) -> str | None:
        key = self.location.key(rel)
        head = self._call(f"read {key}", self.s3.head_object, Bucket=self.location.bucket, Key=key)
        return head.get("Metadata", {}).get(SHA_KEY)

    # -- planning ------------------------------------------------------------------------------
    def _same(self, f: LocalFile, rel: str, remote: RemoteObject | None) -> bool:
        if remote is None or remote.size != f.size:
            return False
        if remote.etag == f.etag:
            return True
        # Same size, another ETag: changed, or an ETag that is no MD5 of the bytes (SSE-KMS,
        # SSE-C, or uploaded in parts of another size). The stored SHA-256 decides.
        return self._remote_sha(rel) == f.sha256

    def plan(self, models) -> list[ModelPlan]:
        """What each model (a layout.BuiltModel) needs; one listing of the bucket for all."""
        objects = list_objects(self.s3, self.location)
        plans = []
        for model in models:
            files = model_files(model.path, self.part_bytes)
            mine = {rel[len(model.name) + 1:]: obj for rel, obj in objects.items()
                    if rel.startswith(model.name + "/")}
            upload = [f for f in files if not self._same(f, f"{model.name}/{f.rel}",
                                                         mine.get(f.rel))]
            local = {f.rel for f in files}
            stale = sorted(rel for rel in mine if rel not in local)
            plans.append(ModelPlan(model.name, files, upload, stale, CONFIG in mine))
        return plans

    # -- doing ---------------------------------------------------------------------------------
    def _upload(self, name: str, f: LocalFile) -> None:
        from boto3.s3.transfer import TransferConfig

        key = self.location.key(name, f.rel)
        config = TransferConfig(multipart_threshold=self.part_bytes,
                                multipart_chunksize=self.part_bytes, max_concurrency=4)
        self._call(f"upload {key}", self.s3.upload_file, Filename=str(f.path),
                   Bucket=self.location.bucket, Key=key, Config=config,
                   ExtraArgs={"Metadata": {SHA_KEY: f.sha256}},
                   Callback=_UploadProgress(f"{name}/{f.rel}", f.size))
        problems = self._mismatches(key, f)
        if not problems:
            return
        if f.rel == CONFIG:  # never leave a config.pbtxt that is not the local one
            self._delete(name, CONFIG)
        raise RepositoryError(
            f"s3://{self.location.bucket}/{key} does not match {f.path} after the upload: "
            + "; ".join(problems) + f". {name} has no config.pbtxt in the bucket, so servers do"
            " not load it.",
            "Re-run gen-repo push; if this repeats, the store changes objects on upload (check"
            " its encryption or compression settings).")

    def _mismatches(self, key: str, f: LocalFile) -> list[str]:
        """Read the object's head back: its size, ETag and SHA-256 must be the local file's.

        The ETag is the MD5 of the stored bytes unless the object is encrypted with KMS or a
        customer key; then size and SHA-256 are checked, and the checksum the SDK sends with
        every upload (verified by the store) covers the bytes.
        """
        head = self._call(f"read back {key}", self.s3.head_object, Bucket=self.location.bucket,
                          Key=key)
        etag = head.get("ETag", "").strip('"')
        problems = []
        if head.get("ContentLength") != f.size:
            problems.append(f"{head.get('ContentLength')} bytes instead of {f.size}")
        etag_is_md5 = not (str(head.get("ServerSideEncryption", "")).startswith("aws:kms")
                           or head.get("SSECustomerAlgorithm"))
        if etag_is_md5 and etag != f.etag:
            problems.append(f"ETag {etag} instead of {f.etag} (the MD5 of the local bytes)")
        if head.get("Metadata", {}).get(SHA_KEY) != f.sha256:
            problems.append(f"no matching {SHA_KEY} metadata")
        return problems

    def _delete(self, name: str, rel: str) -> None:
        key = self.location.key(name, rel)
        self._call(f"delete {key}", self.s3.delete_object, Bucket=self.location.bucket, Key=key)

    def execute(self, plan: ModelPlan) -> ModelResult:
        total = len(plan.files)
        if plan.unchanged:
            return ModelResult(plan.name, UNCHANGED, 0, total, 0, 0, "already in the bucket")
        config = next(f for f in plan.files if f.rel == CONFIG)
        others = [f for f in plan.upload if f.rel != CONFIG]
        complete = plan.visible
        try:
            if plan.hide_first:
                self._delete(plan.name, CONFIG)
                complete = False
                progress.info(f"{plan.name}: config.pbtxt removed while its files change")
            if others:
                progress.info(f"{plan.name}: uploading {len(others)} file(s),"
                              f" {human_bytes(sum(f.size for f in others))}")
            for f in others:
                self._upload(plan.name, f)
            for rel in plan.stale:
                self._delete(plan.name, rel)
            self._upload(plan.name, config)
            complete = True
        except BaseException:
            if not complete:
                progress.warn(
                    f"the push of {plan.name} stopped before its config.pbtxt was uploaded: the"
                    " bucket holds no config.pbtxt for it (at most some of its files), so"
                    " gen-repo serve does"
                    " not load it (a tritonserver that loads every directory of the bucket"
                    " reports it as failed). Run gen-repo push again to complete it.")
            raise
        detail = "verified; config.pbtxt last"
        if plan.stale:
            detail += f"; {len(plan.stale)} stale object(s) deleted"
        return ModelResult(plan.name, UPLOADED, len(others) + 1, total,
                           sum(f.size for f in others) + config.size, len(plan.stale), detail)


def push(models, location: S3Location, s3, *, create_bucket: bool = False,
         dry_run: bool = False, part_bytes: int = PART_BYTES) -> PushReport:
    """Upload each model (a layout.BuiltModel) into ``location``; see the module docstring.
    Models whose files do not match their gen_repo.sha256 are refused before anything is sent."""
    refused = [(m, m.file_problems()) for m in models]
    refused = [(m, found) for m, found in refused if found]
    if refused:
        reason, tip = manifest.refusal(*refused[0])
        raise RepositoryError(f"not pushed: {', '.join(m.name for m, _ in refused)}:"
                              f" {refused[0][0].name}'s {reason}.", tip)
    pusher = Pusher(location, s3, part_bytes)
    if create_bucket and not dry_run:
        pusher.create_bucket()
    report = PushReport(location)
    with progress.step(f"pushing {len(models)} model(s) to {location}"):
        for plan in pusher.plan(models):
            if dry_run:
                state = UNCHANGED if plan.unchanged else PLANNED
                detail = "" if plan.unchanged else (
                    f"would send {len(plan.upload)} file(s)"
                    + (f", delete {len(plan.stale)}" if plan.stale else "")
                    + ("; config.pbtxt removed first" if plan.hide_first else ""))
                report.results.append(ModelResult(plan.name, state, 0, len(plan.files),
                                                  plan.upload_bytes, 0, detail))
            else:
                report.results.append(pusher.execute(plan))
    return report
