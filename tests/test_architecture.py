"""The architecture, checked: no import cycles, SQL in one room, front ends on the public API.

The import graph is grimp's (the library behind import-linter), which sees every import
statement, those inside functions and under ``TYPE_CHECKING`` included. The layer and
independence contracts themselves are import-linter's, run by ``make lint``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_DUMP = """
import json, sys, grimp
g = grimp.build_graph("lamina", include_external_packages=True)
print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))
"""


class Graph:
    """Module -> the modules it imports directly (externals by their top-level name)."""

    def __init__(self, edges: dict[str, list[str]]) -> None:
        self.edges = {m: set(d) for m, d in edges.items()}
        self.modules = set(self.edges)

    def find_modules_directly_imported_by(self, module: str) -> set[str]:
        return self.edges.get(module, set())

    def find_modules_that_directly_import(self, module: str) -> set[str]:
        return {m for m, deps in self.edges.items() if module in deps}


@pytest.fixture(scope="module")
def imports(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    # grimp reads sources from the filesystem; the editable install maps core/ and tui/
    # through an import hook it does not follow, so it gets a lamina/ view of them.
    view = tmp_path_factory.mktemp("view")
    (view / "lamina").mkdir()
    for name in ("core", "tui"):
        (view / "lamina" / name).symlink_to(ROOT / name)
    env = dict(os.environ, PYTHONPATH=str(view))
    out = subprocess.run(
        [sys.executable, "-c", _DUMP], capture_output=True, text=True, env=env, check=True
    ).stdout
    g = Graph(json.loads(out))
    assert len([m for m in g.modules if m.startswith("lamina.core")]) > 50
    return g


def _core_modules(imports: Graph) -> list[str]:
    return sorted(m for m in imports.modules if m.startswith("lamina.core"))


def _strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def test_no_module_of_the_core_takes_part_in_an_import_cycle(imports: Graph) -> None:
    modules = _core_modules(imports)
    edges = {
        m: {d for d in imports.find_modules_directly_imported_by(m) if d.startswith("lamina.core")}
        for m in modules
    }
    assert _strongly_connected(modules, edges) == []


def test_the_cycle_finder_finds_cycles() -> None:
    # The check above must be able to fail.
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(["a", "b", "c", "d"], edges) == [["a", "b", "c"]]


def test_sqlite3_is_imported_only_by_the_store(imports: Graph) -> None:
    importers = imports.find_modules_that_directly_import("sqlite3")
    outside = sorted(m for m in importers if not m.startswith("lamina.core.embedded.store"))
    assert outside == []
    assert "lamina.core.embedded.store.index" in importers


def test_front_ends_use_only_the_public_core_api(imports: Graph) -> None:
    offenders = []
    for module in sorted(m for m in imports.modules if m.startswith("lamina.tui")):
        for imported in imports.find_modules_directly_imported_by(module):
            if imported.startswith("lamina.core."):
                offenders.append(f"{module} -> {imported}")
    assert offenders == []


def _sources() -> list[Path]:
    return sorted(p for d in ("core", "tui") for p in (ROOT / d).rglob("*.py"))


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lamina"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offenders.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
    assert offenders == []


def test_the_public_api_names_what_it_exports() -> None:
    import lamina.core

    missing = [name for name in lamina.core.__all__ if not hasattr(lamina.core, name)]
    assert missing == []


@pytest.mark.parametrize("folder", ["core/build", "core/backends", "core/cache"])
def test_no_folder_that_tools_treat_as_output_or_that_was_retired(folder: str) -> None:
    assert not (ROOT / folder).exists()
