"""Health counts (runbook: "Weekly or after material admin edits"): row counts of the
admin and kb tables, recorded as evidence; an empty canonical table fails."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from opsgate.schema import CONTRACT_TABLES

pytestmark = pytest.mark.health

#: Tables that are never legitimately empty on a live deployment.
CANONICAL = ("admin_content_state", "admin_migrations", "kb_entities", "kb_edges")


def test_row_counts(target_db: psycopg.Connection[Any], evidence: dict[str, Any]) -> None:
    counts: dict[str, int | None] = {}
    for table in CONTRACT_TABLES:
        exists = target_db.execute("SELECT to_regclass(%s) IS NOT NULL",
                                   (f"public.{table}",)).fetchone()
        if not (exists and exists[0]):
            counts[table] = None
            continue
        row = target_db.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        counts[table] = int(row[0]) if row else 0
    evidence["counts"] = counts
    absent = [t for t, n in counts.items() if n is None]
    empty = [t for t in CANONICAL if counts.get(t) == 0]
    problems = ([f"missing tables: {', '.join(absent)}"] if absent else []) + (
        [f"empty canonical tables: {', '.join(empty)}"] if empty else [])
    assert not problems, "; ".join(problems) + f" (counts: {counts})"
