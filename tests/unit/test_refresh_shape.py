"""The refresh's shape, as the architecture asks for it (its functions' length is held
by tests/unit/test_function_length.py, its lack of ``assert`` by
tests/unit/test_no_assert.py): one typed summary whose JSON is exactly the one
docs/refresh.md documents (a script reads it as ``--json`` and as ``summary.json``)."""

from __future__ import annotations

import json
import re

import pytest

from opsgate.operation import EXIT_USAGE
from opsgate.refresh.summary import RefreshSummary
from tests.migration_helpers import ROOT


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


def test_the_table_names_the_target_by_the_url_it_writes_through(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The refresh restores through the target's direct URL: the table showed only the
    pooled DATABASE_URL it was named by, while the refusal and the work used the other."""
    from opsgate.refresh.cli import _table

    _table({"tables": [], "mode": "dry-run", "status": "planned",
            "source": {"database": "postgresql://u:***@src:5432/app"},
            "target": {"database": "postgresql://u:***@pooler:6432/app",
                       "database_direct": "postgresql://u:***@direct:5432/app"}})
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["source: postgresql://u:***@src:5432/app",
                       "target: postgresql://u:***@direct:5432/app (DATABASE_URL "
                       "postgresql://u:***@pooler:6432/app)"], out
