"""Exactly one module writes config.pbtxt: repository/config.py (write_config). Any other code
line that names the config file (CONFIG, "config.pbtxt") beside a write or an open is found."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

WRITER = ROOT / "generator" / "repository" / "config.py"
WRITES = re.compile(r"write_text|write_bytes|write_atomic|open\(|copyfile|copy2|replace\(")
NAMES = re.compile(r"\bCONFIG\b|config\.pbtxt")


def writes_of_config(source: str) -> list[int]:
    """Line numbers of code (not strings or comments) naming the config file and a write."""
    strings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    found = []
    for n, line in enumerate(source.splitlines(), 1):
        code = line.split("#", 1)[0]
        if n in strings and not re.search(r"[\w)]\s*[/(]", code):  # only a string there
            continue
        if NAMES.search(code) and WRITES.search(code):
            found.append(n)
    return found


def test_only_the_config_module_writes_config_pbtxt():
    found = []
    for path in sorted((ROOT / "generator").rglob("*.py")):
        if path != WRITER:
            found += [f"{path.relative_to(ROOT)}:{n}" for n in writes_of_config(path.read_text())]
    assert found == []
    assert writes_of_config(WRITER.read_text()), "the writer itself is not seen"


def test_the_grep_finds_a_second_writer():
    made_up = ('from .layout import CONFIG\n\n\ndef f(d, text):\n'
               '    (d / CONFIG).write_text(text)  # a second writer\n'
               '    write_atomic(d / "config.pbtxt", text)\n'
               '    """a docstring: config.pbtxt is written by write_config"""\n')
    assert writes_of_config(made_up) == [5, 6]
