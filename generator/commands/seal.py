"""gen-repo seal: record the SHA-256 of every file of each model as it is now."""

from __future__ import annotations

from .. import progress
from ..errors import SpecError
from ..repository import manifest
from ..repository.s3 import is_s3_url
from ..repository.selection import select_models
from .common import add_repo_args
from .parser import DefaultsHelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser(
        "seal", help="record each model's files (gen_repo.sha256) after an edit made on purpose",
        description="gen-repo build records the SHA-256 of every file of a model in its"
                    f" {manifest.MANIFEST}, and serve, verify, bench and tune refuse to load a"
                    " model whose files differ, are missing or were added. After you changed a"
                    " model on purpose (a config.pbtxt edited by hand, a model directory written"
                    " by another tool), seal records its files as they are now. It trusts what"
                    " it finds: seal only models whose files you know.",
        formatter_class=DefaultsHelpFormatter)
    add_repo_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="show what differs from each model's record, change nothing")
    p.set_defaults(run=run)


def run(args) -> int:
    if is_s3_url(args.repo):
        raise SpecError(f"--repo {args.repo}: seal works on a local repository.",
                        "Seal the local copy, then gen-repo push it again.")
    for model in select_models(args.repo, args.models):
        found = model.file_problems()
        if not found:
            print(f"{model.name}: {manifest.MANIFEST} matches its files; unchanged")
            continue
        for line in found:
            progress.info(f"{model.name}: {line}")
        if args.dry_run:
            print(f"{model.name}: would record its {len(manifest.model_files(model.path))} files")
        else:
            digests = manifest.write(model.path)
            print(f"{model.name}: recorded {len(digests)} files in {manifest.MANIFEST}")
    return 0
