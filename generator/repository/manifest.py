"""gen_repo.sha256: the SHA-256 of every file of a model directory, recorded when gen-repo
writes the model and checked before a server loads it.

The file is in ``sha256sum``'s format (``<hex>  <path>``, paths relative to the model
directory), so ``cd MODEL && sha256sum -c gen_repo.sha256`` checks it too. A model without it,
a listed file missing or different, or a file it does not list (code added beside model.py) is
refused. Hashes catch corruption and partial copies -- not someone who can also rewrite the
manifest.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RepositoryError
from .files import sha256_file, write_atomic

MANIFEST = "gen_repo.sha256"
UNHASHED_DIRS = ("__pycache__",)  # what Python writes beside model.py when the server imports it


def model_files(model_dir: Path) -> list[str]:
    """The model directory's files (paths relative to it, '/'-separated), but the manifest and
    Python's byte-code caches."""
    model_dir = Path(model_dir)
    out = []
    for p in model_dir.rglob("*"):
        rel = p.relative_to(model_dir)
        if rel.as_posix() == MANIFEST or any(part in UNHASHED_DIRS for part in rel.parts):
            continue
        if p.is_file():
            out.append(rel.as_posix())
    return sorted(out)


def _text(digests: dict[str, str]) -> str:
    return "".join(f"{digest}  {rel}\n" for rel, digest in sorted(digests.items()))


def write(model_dir: Path) -> dict[str, str]:
    """Record every file of ``model_dir`` as it is now; return {path: sha256}."""
    digests = {rel: sha256_file(Path(model_dir) / rel) for rel in model_files(model_dir)}
    write_atomic(Path(model_dir) / MANIFEST, _text(digests))
    return digests


def read(model_dir: Path) -> dict[str, str] | None:
    """{path: sha256} of ``model_dir``'s manifest; None when it has none."""
    path = Path(model_dir) / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise RepositoryError(f"{path} is unreadable ({e}).",
                              "Rebuild the model with gen-repo build --force.") from e
    digests = {}
    for n, line in enumerate(text.splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or rel in digests:
            raise RepositoryError(f"{path}, line {n}, is not '<sha256>  <file>': {line[:80]!r}.",
                                  "Rebuild the model with gen-repo build --force.")
        digests[rel] = digest.lower()
    return digests


def update(model_dir: Path, *names: str) -> None:
    """Record ``names`` (files or folders, relative to ``model_dir``) again after gen-repo
    rewrote, added or removed them; a model without a manifest is left without."""
    digests = read(model_dir)
    if digests is None:
        return
    current = model_files(model_dir)
    for name in names:
        inside = lambda rel: rel == name or rel.startswith(name.rstrip("/") + "/")  # noqa: E731
        digests = {rel: d for rel, d in digests.items() if not inside(rel)}
        digests.update({rel: sha256_file(Path(model_dir) / rel) for rel in current if inside(rel)})
    write_atomic(Path(model_dir) / MANIFEST, _text(digests))


def problems(model_dir: Path, remote: dict[str, str | None] | None = None) -> list[str]:
    """What differs between ``model_dir`` and its manifest, one phrase per file ([] when all
    match). ``remote``: for a model whose version files stay in a bucket, {path: the SHA-256 the
    push recorded with the object, or None}; the files mirrored into ``model_dir`` are hashed."""
    try:
        recorded = read(model_dir)
    except RepositoryError as e:
        return [e.message.rstrip(".")]
    if recorded is None:
        return [f"it has no {MANIFEST} (the SHA-256 of each of its files, written by gen-repo"
                " build)"]
    local = model_files(model_dir)
    present = set(local) | set(remote or {})
    found = []
    for rel, want in sorted(recorded.items()):
        if rel not in present:
            found.append(f"{rel} is missing")
            continue
        got = sha256_file(Path(model_dir) / rel) if rel in local else remote[rel]
        if got is None:
            found.append(f"{rel} has no SHA-256 recorded in the bucket (not uploaded by"
                         " gen-repo push)")
        elif got != want:
            found.append(f"{rel} differs from the file gen-repo wrote (SHA-256 {got[:12]}…,"
                         f" recorded {want[:12]}…)")
    found += [f"{rel} is not one of the files gen-repo wrote" for rel in sorted(present - set(recorded))]
    return found


def refusal(model, found: list[str]) -> tuple[str, str]:
    """(why ``model`` -- a layout.BuiltModel -- is not loaded, the route), from ``problems``."""
    shown = "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else "")
    if model.remote_digests is not None:
        route = ("Push the model again (gen-repo push) from a repository whose files match (gen-repo"
                 " push checks them first).")
    else:
        route = (f"Rebuild it (gen-repo build --force), or, after an edit you made on purpose,"
                 f" record its files as they are now: gen-repo seal --repo {model.path.parent}"
                 f" --models {model.name}")
    return f"its files do not match its {MANIFEST}: {shown}", route
