"""Modules gen-repo writes at build time (the serving wrapper, a training script's model
classes): real files, so that torch.jit.script and torch.package can read their source, in one
folder per process, removed at exit (a killed build's folder goes at the next build)."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..repository.staging import remove_orphans

PREFIX = "gen-repo-modules-"


@functools.lru_cache(maxsize=1)
def folder() -> Path:
    """This process's folder of generated modules."""
    remove_orphans(Path(tempfile.gettempdir()).glob(f"{PREFIX}pid*"))
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}pid{os.getpid()}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def import_source(name: str, source: str):
    """The module ``name`` made of ``source`` (written once into folder(), then imported; a
    module already imported under that name is returned as it is)."""
    module = sys.modules.get(name)
    if module is None:
        path = folder() / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return module
