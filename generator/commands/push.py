"""gen-repo push: upload a model repository to S3 (or an S3-compatible store), model by model."""

from __future__ import annotations

from ..errors import SpecError
from ..repository.s3 import S3Location, is_s3_url
from ..repository.selection import select_models
from .common import add_repo_args
from .parser import DefaultsHelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "push", help="upload a model repository to S3 for many servers to read",
        description="Upload the repository's models to s3://BUCKET/PATH with boto3 (credentials"
                    " from the usual AWS environment variables, AWS_PROFILE or ~/.aws). Each"
                    " model's files go first and its config.pbtxt last, every upload is read"
                    " back and checked (size, ETag, SHA-256), and files already in the bucket"
                    " are not sent again. An interrupted push leaves no model half-visible;"
                    " run it again to complete it.",
        formatter_class=DefaultsHelpFormatter)
    p.add_argument("dest", metavar="S3_URL",
                   help="s3://BUCKET/PATH (with --endpoint-url for S3-compatible stores) or"
                        " Triton's form s3://HOST:PORT/BUCKET/PATH")
    add_repo_args(p)
    p.add_argument("--endpoint-url", default=None, metavar="URL",
                   help="S3-compatible store, e.g. http://127.0.0.1:9000 (MinIO); default:"
                        " AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS S3")
    p.add_argument("--region", default=None,
                   help="AWS region (default: AWS_DEFAULT_REGION / the profile's, else us-east-1)")
    p.add_argument("--create-bucket", action="store_true",
                   help="create the bucket when it does not exist")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would be uploaded, change nothing")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..repository import s3 as s3mod
    from ..ship.push import push

    if is_s3_url(args.repo):
        raise SpecError(f"--repo {args.repo} is the source of a push and must be a local"
                        " directory.", "Pass the directory gen-repo build wrote (default:"
                                       " model_repository) and the bucket as S3_URL.")
    location = S3Location.parse(args.dest, args.endpoint_url or s3mod.endpoint_from_env())
    models = select_models(args.repo, args.models)
    report = push(models, location, s3mod.client(location, args.region),
                  create_bucket=args.create_bucket, dry_run=args.dry_run)
    print(report.table())
    if not args.dry_run:
        print(f"repository: {location.triton_url}")
        print(f"serve it:   gen-repo serve --repo {location.triton_url}")
        print(f"deploy it:  gen-repo deploy k8s --repo {location.triton_url} --out deploy/")
    return 0
