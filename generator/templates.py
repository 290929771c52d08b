"""The project's Jinja2 templates (templates/k8s: what deploy writes) and how they are rendered."""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def jinja_environment(folder: Path):
    """How every template of the project is rendered: undefined names are errors, block tags
    leave no blank lines, nothing is HTML-escaped."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
