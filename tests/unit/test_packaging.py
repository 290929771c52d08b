"""What the wheel and the sdist carry: every package of the product, and its run-time data as
package data (tests/integration/test_install.py installs both and runs them)."""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

from generator.templates import PACKAGE, templates_dir
from tests.conftest import ROOT


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_directory_is_in_the_distribution():
    """pyproject.toml lists the packages (a mapped data package rules out `find`): a package
    directory added under generator/ and not listed would be missing from the wheel."""
    on_disk = {"gen_repo"} | {
        ".".join(d.relative_to(ROOT).parts) for d in [ROOT / "generator",
                                                       *(ROOT / "generator").rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))}
    listed = set(_setuptools()["packages"])
    assert on_disk <= listed, f"not in pyproject.toml's packages: {sorted(on_disk - listed)}"
    mapped = {p for p in listed if p.startswith(PACKAGE)}
    assert listed - on_disk == mapped, sorted(listed - on_disk - mapped)


def test_the_templates_folder_travels_as_package_data():
    """templates/ stays the project's folder; the product finds it by package name, so the same
    lookup works in the editable install (the checkout) and in a wheel (site-packages)."""
    config = _setuptools()
    assert config["package-dir"][PACKAGE] == "templates"
    assert (ROOT / "templates" / "__init__.py").is_file()  # a package, for the editable finder
    patterns = config["package-data"][f"{PACKAGE}.k8s"]
    k8s = ROOT / "templates" / "k8s"
    files = {p.name for p in k8s.iterdir() if p.is_file()}
    shipped = {p.name for pattern in patterns for p in k8s.glob(pattern)}
    assert files and files == shipped, f"templates/k8s files not in package-data: {files - shipped}"
    assert templates_dir() == Path(str(importlib.resources.files(PACKAGE)))
    assert (templates_dir() / "k8s" / "deployment.yaml.j2").is_file()
