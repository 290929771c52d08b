"""What a built model directory holds, and how to read it back (for serve, verify and bench).

    <repo>/<name>_<variant>/
        config.pbtxt                 written last: a directory without it is not a model
        1/<artifact> [1/model.py]
        gen_repo.json                build record: spec, variant, versions, command, hashes, checks
        gen_repo_samples.npz         sample inputs (case "a", batch first when batching), shaped
        gen_repo_reference.npz       as clients send them; eager reference outputs for them, as
                                     clients receive them (a per-row scalar is [B, 1])
        gen_repo_samples_b.npz       a second case: another batch size and other lengths for
        gen_repo_reference_b.npz     the dynamic axes (so verify checks two lengths)
        gen_repo.sha256              the SHA-256 of every other file (manifest.py), checked
                                     before a server loads the model
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import RepositoryError
from ..spec import ModelSpec
from . import manifest
from .config import CONFIG, PYTORCH_PLATFORMS, config_facts, parse_config

RECORD = "gen_repo.json"
SAMPLES = "gen_repo_samples.npz"
REFERENCE = "gen_repo_reference.npz"
VERSION = "1"
# The Python backend's parameter naming a packed Python environment (gen-repo pack-env).
PACKED_ENV_PARAM = "EXECUTION_ENV_PATH"


def case_files(case: str) -> tuple[str, str]:
    """(samples file, reference file) of a sample case ("a" keeps the historical names)."""
    if case == "a":
        return SAMPLES, REFERENCE
    return f"gen_repo_samples_{case}.npz", f"gen_repo_reference_{case}.npz"


@dataclass
class BuiltModel:
    path: Path
    # a model of an S3 repository: {file: the SHA-256 its push recorded, or None}; ``path`` is
    # then a local mirror of its top-level files (s3.remote_models)
    remote_digests: dict[str, str | None] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @cached_property
    def record(self) -> dict:
        p = self.path / RECORD
        if not p.is_file():
            return {}
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RepositoryError(f"{p} is unreadable: {e}.", "Rebuild the model.") from e

    @property
    def built_by_gen_repo(self) -> bool:
        return bool(self.record)

    @cached_property
    def spec(self) -> ModelSpec:
        if not self.record:
            raise RepositoryError(f"{self.path} was not built by gen-repo (no {RECORD}).",
                                  "Build it with gen-repo build.")
        return config_facts(self.config, ModelSpec.from_dict(self.record["spec"]))

    def reread(self) -> None:
        """Forget what was read from the files (after config.pbtxt was rewritten)."""
        for cached in ("config", "spec", "record"):
            self.__dict__.pop(cached, None)

    @property
    def variant(self) -> str:
        return self.record.get("variant", "")

    @property
    def target_release(self) -> str | None:
        """The Triton release its config was written for (None: not recorded, an older build)."""
        return (self.record.get("spec") or {}).get("triton_release")

    def file_problems(self) -> list[str]:
        """What differs between the model's files and its gen_repo.sha256 ([] when all match)."""
        return manifest.problems(self.path, self.remote_digests)

    @cached_property
    def config(self):
        p = self.path / CONFIG
        return parse_config(p.read_text(), str(p))

    @property
    def backend(self) -> str:
        """'python', 'pytorch', ... (platform pytorch_libtorch/torch_aoti map to 'pytorch')."""
        c = self.config
        if c.backend:
            return c.backend
        return "pytorch" if c.platform in PYTORCH_PLATFORMS else c.platform

    def samples(self) -> dict[str, np.ndarray]:
        return _load_npz(self.path / SAMPLES)

    def reference(self) -> dict[str, np.ndarray]:
        return _load_npz(self.path / REFERENCE)

    def cases(self) -> list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Every stored sample case as (name, inputs, reference outputs)."""
        out = []
        for case in ("a", "b"):
            samples, reference = case_files(case)
            if (self.path / samples).is_file():
                out.append((case, _load_npz(self.path / samples),
                            _load_npz(self.path / reference)))
        return out


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # missing, cut, damaged
        raise RepositoryError(f"{path} is missing or unreadable ({type(e).__name__}: {e}).",
                              "Rebuild the model with gen-repo build.") from e


def outside_link(path: Path, root: Path) -> None:
    """Refuse ``path`` (inside ``root``) when a symbolic link on its way leads out of ``root``:
    serving or uploading it would serve or upload whatever the link points to."""
    root = Path(root).resolve()
    if not path.resolve().is_relative_to(root):
        link = next((p for p in [path, *path.parents] if p.is_symlink()), path)
        raise RepositoryError(
            f"{link} is a symbolic link to {os.readlink(link)}, outside the repository {root}:"
            " gen-repo serves and uploads only what lies inside a repository.",
            "Copy the model (or file) into the repository instead of linking to it.")


def list_models(repo: str | Path) -> list[BuiltModel]:
    """Model directories (those holding config.pbtxt) of a local repository, sorted by name."""
    root = Path(repo)
    if not root.is_dir():
        raise RepositoryError(f"model repository '{root}' does not exist.",
                              "Build one first: gen-repo build (or pass --repo DIR).")
    models = [BuiltModel(p) for p in sorted(root.iterdir())
              if p.is_dir() and not p.name.startswith(".") and (p / CONFIG).is_file()]
    for model in models:
        outside_link(model.path, root)
    if not models:
        raise RepositoryError(f"model repository '{root}' holds no models (no */config.pbtxt).",
                              "Build one first: gen-repo build --out " + str(root))
    return models
