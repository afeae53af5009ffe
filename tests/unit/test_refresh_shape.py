"""The refresh's shape, as the architecture asks for it (its functions' length is held
by tests/unit/test_function_length.py): no bare ``assert`` guarding what happens at run time (``python -O``
drops them), and one typed summary whose JSON is exactly the one docs/refresh.md
documents (a script reads it as ``--json`` and as ``summary.json``)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import opsgate
from opsgate.operation import EXIT_USAGE
from opsgate.refresh.summary import RefreshSummary
from tests.migration_helpers import ROOT

REFRESH = Path(opsgate.__file__).parent / "refresh"


def documented_summary_fields() -> tuple[list[str], set[str]]:
    """The summary's fields as docs/refresh.md lists them ("The summary"), in order, and
    those it marks "only once" (present only when the refresh got that far)."""
    text = (ROOT / "docs" / "refresh.md").read_text()
    section = text.split("### The summary (`--json`, `summary.json`)", 1)[1].split("\n#", 1)[0]
    fields: list[str] = []
    conditional: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        names = re.findall(r"`([a-z_]+)`", line.strip("|").split("|", 1)[0])
        fields += names
        if "only once" in line:
            conditional.update(names)
    return fields, conditional


def test_no_assert_in_the_refresh_package() -> None:
    found = [f"{path.name}:{node.lineno}" for path in sorted(REFRESH.glob("*.py"))
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert not found, "assert statements (gone under python -O): " + ", ".join(found)


def test_the_summary_json_is_the_documented_one() -> None:
    fields, conditional = documented_summary_fields()
    assert {"operation", "mode", "status", "source_hash", "restore_method", "message",
            "exit_code"} <= set(fields)
    assert conditional == {"source_seen", "client_tools"}
    assert len(fields) == len(set(fields))
    summary = RefreshSummary(operation="refresh", mode="dry-run")
    early = summary.finish("failed", EXIT_USAGE, "no DATABASE_URL").as_json()
    assert list(early) == [f for f in fields if f not in conditional]
    assert early["hash_version"] == "canon-v1" and early["exit_code"] == EXIT_USAGE
    assert early["started_at"].endswith("Z") and early["finished_at"].endswith("Z")
    summary.source_seen, summary.client_tools = {"counts": {}}, "pg_dump 17"
    assert list(json.loads(json.dumps(summary.as_json()))) == fields
