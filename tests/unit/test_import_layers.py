"""The package has no import circle, and its packages import downwards only, in ``LAYERS`` order
(the foundation modules -- errors, spec, dtypes, machine, progress, status, table, runtime -- at
the bottom). Every import counts, also the ones inside functions, and importing ``a.b.c`` counts as
importing the packages ``a.b`` and ``a``."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "generator"
# Bottom to top: a module may import its own layer and the layers below it.
LAYERS = ("repository", "variants", "build", "serve", "bench", "tune", "ship", "api", "commands",
          "cli")


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                wanted = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            else:
                continue
            for w in wanted:
                parts = w.split(".")
                for i in range(1, len(parts) + 1):  # a.b.c also runs a/__init__ and a/b/__init__
                    dep = ".".join(parts[:i])
                    if dep in modules and dep != name and not name.startswith(dep + "."):
                        deps.add(dep)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert "generator.build.pipeline" in graph and graph["generator.cli"], "the walk found nothing"
    assert cycles(graph) == []


def test_the_status_words_import_nothing_from_the_package():
    assert import_graph()["generator.status"] == set()


def test_the_walk_finds_a_circle():
    """The check can fail: a made-up circle through a function-level import is found."""
    graph = {k: set(v) for k, v in import_graph().items()}
    graph["generator.spec"].add("generator.variants.registry")  # what spec.py once did
    assert any("generator.spec" in c for c in cycles(graph))


def layer(module: str) -> int:
    """The module's index in LAYERS; -1 for the foundation (the package's loose modules but cli)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} imports {b}" for a, deps in graph.items() for b in deps
                  if layer(b) > layer(a))


def test_packages_import_only_downwards():
    graph = import_graph()
    assert {layer(m) for m in graph} == set(range(-1, len(LAYERS))), "a layer has no module"
    assert upward_imports(graph) == []


def test_the_walk_finds_an_upward_import():
    """The check can fail: serve importing ship (what serve/server.py once did) is found."""
    graph = {k: set(v) for k, v in import_graph().items()}
    graph["generator.serve.server"].add("generator.ship.push")
    graph["generator.spec"].add("generator.repository.layout")
    assert upward_imports(graph) == ["generator.serve.server imports generator.ship.push",
                                     "generator.spec imports generator.repository.layout"]


def test_every_stage_says_what_it_takes_and_gives():
    for stage in [layer for layer in LAYERS[:-1] if layer != "api"]:
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
        assert doc and len(doc) > 80, stage
