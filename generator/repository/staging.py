"""Writing a model directory into a repository: each build stages it in a fresh folder on the
repository's file system and renames it into place, so a reader sees the old model or the new
one, never half; a lock keeps two builds out of one repository at a time."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import RepositoryError

STAGING_PREFIX = ".gen-repo-staging-"
LOCK = ".gen-repo-build.lock"  # in a repository while a build writes it


@contextlib.contextmanager
def build_lock(out: Path):
    """Hold ``out`` for one build: a second build into the same repository at the same time is
    refused (both would pass the check for existing models, and one would silently replace the
    other's). The lock file is removed when the build ends, and so is a repository this lock
    had to create if the build left it empty."""
    import fcntl

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(f.fileno()).st_ino != os.stat(path).st_ino:
            raise BlockingIOError  # locked a file the build before removed as it ended
    except (BlockingIOError, FileNotFoundError) as e:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RepositoryError(f"another gen-repo build is writing {out} ({holder}).",
                              "Wait for it to finish, or build into another --out.") from e
    f.seek(0)
    f.truncate()
    f.write(f"gen-repo build, pid {os.getpid()}\n")
    f.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        f.close()  # releases the lock


def _staging_parent(out: Path) -> Path:
    """Where ``out``'s staging directories go: beside it, or inside it when ``out`` is a mount
    point (the finished directory is renamed into place, which works within one file system)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_dir() and os.stat(out).st_dev != os.stat(out.parent).st_dev:
        return out
    return out.parent


def staging_dir(out: Path, model_name: str) -> Path:
    """A fresh staging directory on the file system of the repository ``out``, named after this
    process so that a later run can tell it was left by a killed one."""
    out = out.resolve()  # absolute: the check runs in another working directory
    return Path(tempfile.mkdtemp(
        prefix=f"{STAGING_PREFIX}{out.name}-{model_name}-pid{os.getpid()}-",
        dir=_staging_parent(out)))


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove staging dirs left by runs that were killed (their process is gone)."""
    out = out.resolve()
    places = [out.parent] + ([out] if out.is_dir() else [])
    return remove_orphans(p for place in places for p in place.glob(f"{STAGING_PREFIX}*"))


def remove_orphans(folders) -> list[Path]:
    """Remove each folder whose name carries the pid (``-pid<N>-``) of a process that is gone
    (or no pid at all): what a killed gen-repo left behind."""
    import psutil

    removed = []
    for p in folders:
        pid = next((int(part[3:]) for part in p.name.split("-")
                    if part.startswith("pid") and part[3:].isdigit()), None)
        if p.is_dir() and (pid is None or not psutil.pid_exists(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def swap_in(staging: Path, final: Path) -> None:
    """Rename staging -> final; an existing final (--force) is moved aside first, then deleted."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.chmod(0o755)  # mkdtemp makes it 0700: a server running as another user must read it
    trash = None
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}old-pid{os.getpid()}-",
                                      dir=staging.parent))  # its file system
        os.replace(final, trash / final.name)
    os.replace(staging, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
