"""Plans that do not depend on luck: what apply wrote is analyzed before verify reads it
back, and opsgate's cursors are planned for every row they will read."""

from __future__ import annotations

from pathlib import Path

import psycopg

from opsgate.clients import db
from tests.migration_helpers import cli

#: Fills a table in apply; verify fails if the planner has no statistics for it (a
#: never-analyzed table has reltuples -1 since PostgreSQL 14, 0 before).
FILLING_SCRIPT = '''
from opsgate.migrate import Plan

SOURCE = "none"
TARGET = "neon"
DESCRIPTION = "fills a table that verify reads back"
TARGET_TABLES = ("filled",)

def preconditions(ctx):
    return []

def plan(ctx):
    return Plan(payload={"rows": 5000}, source_counts={})

def apply(ctx, plan):
    ctx.conn.execute("CREATE TABLE filled (id int PRIMARY KEY, v text)")
    ctx.conn.execute("INSERT INTO filled SELECT g, md5(g::text) FROM generate_series(1, 5000) g")

def verify(ctx, plan):
    (tuples,) = ctx.conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'filled'::regclass").fetchone()
    return [] if tuples >= 4000 else [f"filled has no fresh statistics (reltuples {tuples})"]
'''


def test_what_apply_wrote_is_analyzed_before_verify(fresh_db: str, tmp_path: Path) -> None:
    folder = tmp_path / "mig"
    folder.mkdir()
    (folder / "20260303_2003_none_to_neon_filled.py").write_text(FILLING_SCRIPT)
    code, out, err = cli(fresh_db, "run", "20260303_2003_none_to_neon_filled", "--apply",
                         migrations=folder)
    assert code == 0 and out["status"] == "applied", (out, err)
    assert "analyze" in out["timings_s"], out["timings_s"]


def test_cursors_are_planned_for_every_row_and_the_setting_ends_with_the_transaction(
        fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        (default,) = conn.execute("SHOW cursor_tuple_fraction").fetchone()  # type: ignore[misc]
        with db.transaction(conn, read_only=True):
            (inside,) = conn.execute("SHOW cursor_tuple_fraction").fetchone()  # type: ignore[misc]
        (after,) = conn.execute("SHOW cursor_tuple_fraction").fetchone()  # type: ignore[misc]
    assert (default, inside, after) == ("0.1", "1", "0.1")
