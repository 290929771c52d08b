"""Shared test helpers. Tests run the real tools: real exports, real servers, real perf_analyzer."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "models.py"


def fixture_source(factory: str) -> str:
    return f"{FIXTURES}:{factory}"


@pytest.fixture
def run_cli(capsys):
    """Run ``gen-repo ARGS`` in-process; return (exit code, stdout, stderr)."""
    from generator.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _restore_sys_path():
    saved = list(sys.path)
    yield
    sys.path[:] = saved
