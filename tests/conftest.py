"""Shared test helpers. Tests run the real tools: real exports, real servers, real perf_analyzer."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "models.py"


def fixture_source(factory: str) -> str:
    return f"{FIXTURES}:{factory}"


def load_benchmark(name: str):
    """benchmarks/<name>.py as module ``benchmark_<name>`` (benchmarks/ goes on sys.path for
    the modules it imports)."""
    import importlib.util

    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}",
                                                  ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


# scripts/test.sh runs the suite in pytest-xdist workers, a whole file per worker (--dist
# loadfile). xdist hands out the files with the most tests first; these take minutes each (in
# this order), so they go first instead: a worker left alone with one at the end would idle the
# others (longest first). Only the order of the work changes.
SLOWEST_FILES = ("test_coverage.py", "test_reliability.py", "test_gpu_kit.py",
                 "test_serve_faults.py", "test_tune.py", "test_bench.py", "test_row_shapes.py",
                 "test_compiled_variants.py", "test_docker.py", "test_serve_signals.py")


def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    def rank(scope: str) -> int:
        name = scope.rsplit("/", 1)[-1]
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    class SlowestFirst(LoadFileScheduling):
        ordered = False

        def _assign_work_unit(self, node):
            if not self.ordered:  # the queue is complete before the first file is handed out
                queue = sorted(self.workqueue.items(), key=lambda item: rank(item[0]))
                self.workqueue.clear()
                self.workqueue.update(queue)
                self.ordered = True
            super()._assign_work_unit(node)

    return SlowestFirst(config, log)
