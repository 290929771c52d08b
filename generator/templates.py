"""The project's Jinja2 templates (templates/k8s: what deploy writes) and how they are rendered.

The top-level ``templates/`` folder travels as package data: pyproject.toml maps it to the
package ``generator._templates``, so it is found by that name in a wheel or sdist install
(site-packages/generator/_templates) and in the editable one (the checkout's folder) alike --
never through the checkout's layout.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import ToolError

PACKAGE = "generator._templates"


@lru_cache(maxsize=1)
def templates_dir() -> Path:
    """The folder of the project's templates, wherever gen-repo is installed."""
    import importlib.resources

    tip = ("Reinstall gen-repo (`pip install --force-reinstall --no-deps <wheel>`, or `bash"
           " scripts/setup.sh` in a checkout): its templates are package data.")
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError as e:
        raise ToolError(f"this installation of gen-repo lacks its templates (the package"
                        f" {PACKAGE}).", tip) from e
    if not isinstance(root, Path) or not (root / "k8s").is_dir():
        raise ToolError(f"this installation of gen-repo lacks its templates: no folder k8s in"
                        f" {root}.", tip)
    return root


def jinja_environment(folder: Path):
    """How every template of the project is rendered: undefined names are errors, block tags
    leave no blank lines, nothing is HTML-escaped."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
