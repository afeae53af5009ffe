"""The variable registry (`opsgate.config.VARIABLES`, the flags of `opsgate.gate.CHECKS`),
docs/configuration.md and opsgate's source say the same thing: no variable is read that
is not listed, none is listed that is not read, and only `Settings` reads them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from opsgate.config import FLAG_DEFAULTS, RUN_VARIABLES, VARIABLES
from opsgate.gate import CHECKS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
#: The flags table sits with the checks it lists (docs/adding-a-check.md).
CHECKS_DOC = ROOT / "docs" / "checks.md"

#: Environment variables opsgate reads that are not its configuration: the platform's,
#: CI's, pytest's and libpq's. Everything else read from the environment is a variable
#: of the registry, read by `Settings` alone.
NOT_CONFIGURATION = frozenset({
    "PATH", "HOME", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "PGSSLMODE",
    "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "GITHUB_STEP_SUMMARY", "GITHUB_SERVER_URL",
    "GITHUB_REPOSITORY", "GITHUB_RUN_ID", "CI"})


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end != -1 else None]


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]  # the header


def documented_variables() -> set[str]:
    names: set[str] = set()
    for row in _table_rows(_section(DOC.read_text(), "## Variables")):
        names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", row[0]))
    return names


def test_every_variable_is_documented_and_every_documented_one_is_read() -> None:
    documented = documented_variables()
    assert sorted(set(VARIABLES) - documented) == [], "in VARIABLES, not in the docs"
    assert sorted(documented - set(VARIABLES)) == [], "in the docs, not in VARIABLES"


def test_the_flags_table_is_the_gate_table() -> None:
    rows = _table_rows(_section(CHECKS_DOC.read_text(), "## Flags and markers"))
    documented = {row[2].strip("`"): (row[1].strip("`"), row[3] == "true",
                                      row[0].strip("`")) for row in rows}
    assert documented == {c.flag: (c.marker, c.default_on, c.module) for c in CHECKS}
    assert {c.flag: c.default_on for c in CHECKS} == FLAG_DEFAULTS


def _sources() -> list[Path]:
    """opsgate's code and what it ships: the checks and the migrations."""
    return sorted(p for top in ("opsgate", "checks", "migrations")
                  for p in (ROOT / top).rglob("*.py"))


def test_every_opsgate_name_in_the_source_is_a_registered_variable() -> None:
    """A new OPSGATE_*/RUN_OPS_* name in code, message or docstring is registered (and
    so documented) in the same change."""
    known = set(VARIABLES) | set(FLAG_DEFAULTS)
    unknown = {f"{p.relative_to(ROOT)}: {name}"
               for p in _sources()
               for name in re.findall(r"\b(?:OPSGATE|RUN_OPS)_[A-Z][A-Z0-9_]*\b", p.read_text())
               if name not in known}
    assert sorted(unknown) == []


def _environment_reads(tree: ast.AST) -> list[tuple[ast.AST, str | None, int]]:
    """(enclosing function, key read or None when not a constant, line) of every
    ``os.environ.get(K)``, ``os.environ[K]``, ``os.getenv(K)`` and ``K in os.environ``,
    ``os.environ`` being any expression that names it."""
    found: list[tuple[ast.AST, str | None, int]] = []

    def key(node: ast.expr | None) -> str | None:
        return node.value if isinstance(node, ast.Constant) and isinstance(
            node.value, str) else None

    def names_environ(node: ast.expr) -> bool:
        return "os.environ" in ast.unparse(node)

    def visit(node: ast.AST, scope: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scope = node
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if (f.attr == "get" and names_environ(f.value)) or ast.unparse(f) == "os.getenv":
                found.append((scope, key(node.args[0]) if node.args else None, node.lineno))
        elif isinstance(node, ast.Subscript) and names_environ(node.value):
            found.append((scope, key(node.slice), node.lineno))
        elif isinstance(node, ast.Compare) and any(
                isinstance(op, ast.In | ast.NotIn) for op in node.ops) and any(
                names_environ(c) for c in node.comparators):
            found.append((scope, key(node.left), node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, tree)
    return found


def test_only_settings_reads_configuration_from_the_environment() -> None:
    """``Settings.load`` is the one reader: a variable read anywhere else from
    ``os.environ`` would ignore ``--env-file`` (as OPSGATE_HASH_CONNECTIONS and
    ``opsgate migrate``'s OPSGATE_MIGRATIONS_DIR did)."""
    known = set(VARIABLES) | set(FLAG_DEFAULTS)
    wrong = []
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        for scope, name, line in _environ_reads_of(path):
            in_load = rel == "opsgate/config.py" and getattr(scope, "name", "") == "load"
            if name is None or in_load:
                continue
            if name in known or name not in NOT_CONFIGURATION:
                wrong.append(f"{rel}:{line} reads {name}")
    assert wrong == []


def _environ_reads_of(path: Path) -> list[tuple[ast.AST, str | None, int]]:
    return _environment_reads(ast.parse(path.read_text(), str(path)))


@pytest.mark.parametrize("source", [
    'import os\nx = os.environ.get("OPSGATE_HASH_CONNECTIONS", "")\n',
    'import os\nx = (os.environ if e is None else e).get("OPSGATE_HASH_CONNECTIONS")\n',
    'import os\nx = os.getenv("DATABASE_URL")\n',
    'import os\nx = os.environ["OPSGATE_PGBOUNCER"]\n',
    'import os\nx = "VERCEL_ENV" in os.environ\n',
])
def test_the_scan_sees_each_way_of_reading(source: str) -> None:
    reads = _environment_reads(ast.parse(source))
    assert [name for _, name, _ in reads] == [re.findall(r'"([A-Z_]+)"', source)[0]]


def test_the_variables_a_sandbox_run_keeps_are_the_documented_ones() -> None:
    text = DOC.read_text()
    listed = text[text.index("<!-- run-variables -->"):text.index("<!-- /run-variables -->")]
    assert set(re.findall(r"`([A-Z][A-Z0-9_]*)`", listed)) == set(RUN_VARIABLES)
    assert set(VARIABLES) >= RUN_VARIABLES
