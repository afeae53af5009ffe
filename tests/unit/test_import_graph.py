"""opsgate's modules import each other without cycles, and nothing of pytest's private
``_pytest`` package.

A cycle makes the import order matter (a module sees its partner half-initialised) and
tempts the next change to hide an import inside a function. The graph is what runs at
import time: module-level imports, class bodies and module-level ``if``/``try`` blocks
included; imports inside functions, and under ``if TYPE_CHECKING:``, are not edges.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def modules(package: Path) -> dict[str, Path]:
    """Every module of ``package`` (a folder) by its dotted name."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _import_time(body: Iterable[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of ``body`` that run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time(node.body)
            yield from _import_time(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(h.body for h in node.handlers)):
                yield from _import_time(block)
        elif isinstance(node, ast.ClassDef | ast.With | ast.For | ast.While):
            yield from _import_time(node.body)


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports when it is imported."""

    def nearest(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str | None] = set()
    for node in _import_time(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            found.update(nearest(alias.name) for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:  # `from pkg import module` imports that module
            full = f"{base}.{alias.name}"
            found.add(full if full in known else nearest(base))
    return {m for m in found if m is not None and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of ``graph``, each once: graphlib names one, whose first edge is
    then taken out, until none is left."""
    edges = {node: set(targets) for node, targets in graph.items()}
    found: list[list[str]] = []
    while True:
        try:
            graphlib.TopologicalSorter(edges).prepare()
        except graphlib.CycleError as exc:
            cycle: list[str] = exc.args[1]  # [a, b, ..., a], each importing the one before
            edges[cycle[1]].discard(cycle[0])
            ring = cycle[:0:-1]  # each importing the next, the first not repeated
            first = ring.index(min(ring))
            found.append([*ring[first:], *ring[:first], ring[first]])
        else:
            return found


def import_cycles(package: Path) -> list[str]:
    known = modules(package)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    return [" -> ".join(cycle) for cycle in cycles(graph)]


def test_opsgate_has_no_import_cycle() -> None:
    found = import_cycles(ROOT / "opsgate")
    assert not found, "import cycles: " + "; ".join(found)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "pkg"


def test_the_walk_names_each_cycle(tmp_path: Path) -> None:
    package = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "import pkg.a\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..sub import d\n",
        "pkg/sub/d.py": "class K:\n    from . import e\n",
        "pkg/sub/e.py": "try:\n    import pkg.sub.c\nexcept ImportError:\n    pass\n",
    })
    assert sorted(import_cycles(package)) == [
        "pkg.a -> pkg.b -> pkg.a", "pkg.sub.c -> pkg.sub.d -> pkg.sub.e -> pkg.sub.c"]


def test_imports_in_functions_and_for_type_checking_are_no_edges(tmp_path: Path) -> None:
    package = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from typing import TYPE_CHECKING\nfrom pkg import b\n"
                    "if TYPE_CHECKING:\n    from pkg import c\n",
        "pkg/b.py": "def f():\n    from pkg import a\n",
        "pkg/c.py": "import pkg.a\n",
    })
    assert import_cycles(package) == []


@pytest.mark.parametrize("package", ["opsgate"])
def test_no_private_pytest_module_is_imported(package: str) -> None:
    """pytest's private modules change in any release: opsgate uses its public API only
    (anywhere, functions and type checking included)."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                      if n == "_pytest" or n.startswith("_pytest.")]
    assert not found, "; ".join(found)
