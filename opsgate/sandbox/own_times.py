"""The times in a sandbox started from the cache belong to that sandbox, not its template.

A cached template is the database of a sandbox built earlier (minutes or days). Its
data carries the times that build wrote: the provenance runs (the reference API's
``generatedAt``), the entities' and the content state's created/updated times. Read on
a sandbox started just now, they say "this happened hours ago", which it did not, here.
So, before anything else connects, every such time moves forward by the template's age,
in one transaction: the earliest lands on the sandbox's own start, and the order of and
gaps between them stay the build's own.

Left alone: the fixture's own times (the admin history's, months earlier, outside the
build's window) and the ledger (``admin_migrations``), whose rows are the true record of
when the runner applied each migration, to the template (docs/sandbox.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

#: The ledger says when the runner applied a migration: a record, never moved.
LEDGER = "admin_migrations"

#: Around the build's window (the runner's summaries give times to the millisecond).
_SLACK = timedelta(seconds=1)

#: The ``timestamptz`` columns of the public tables (the catalog, not the slower
#: information_schema: this runs at every start from the cache).
_COLUMNS = """
SELECT c.relname, a.attname
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname <> %s
   AND a.atttypid = 'timestamptz'::regtype AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY 1, 2
"""


def build_window(summaries: list[dict[str, Any]]) -> tuple[datetime, datetime] | None:
    """From the first migration's start to the last one's end, as the runner's summaries
    of the template's build say; None when they say nothing usable."""
    starts, ends = [], []
    for s in summaries:
        try:
            starts.append(_parse(s["started_at"]))
            ends.append(_parse(s["finished_at"]))
        except (KeyError, TypeError, ValueError):
            continue
    if not starts or not ends:
        return None
    return min(starts) - _SLACK, max(ends) + _SLACK


def _parse(value: Any) -> datetime:
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def move_to(conn: psycopg.Connection[Any], window: tuple[datetime, datetime],
            start: datetime) -> timedelta | None:
    """Move every time of the template's build (a ``timestamptz`` of a public table, the
    ledger's excepted, inside ``window``) by one shift, so the earliest is ``start``.
    Returns the shift, or None when there was nothing to move. One transaction, which the
    caller commits."""
    lo, hi = window
    tables: dict[str, list[str]] = {}
    for table, column in conn.execute(_COLUMNS, (LEDGER,)):
        tables.setdefault(str(table), []).append(str(column))
    if not tables:
        return None
    inside = {t: sql.SQL(" OR ").join(
        sql.SQL("{c} BETWEEN {lo} AND {hi}").format(
            c=sql.Identifier(c), lo=sql.Literal(lo), hi=sql.Literal(hi)) for c in cols)
        for t, cols in tables.items()}
    earliest_of = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT min(CASE WHEN {c} BETWEEN {lo} AND {hi} THEN {c} END) FROM {t}")
        .format(c=sql.Identifier(c), lo=sql.Literal(lo), hi=sql.Literal(hi),
                t=sql.Identifier(t)) for t, cols in tables.items() for c in cols)
    row = conn.execute(sql.SQL("SELECT min(m) FROM ({}) AS each_column (m)")
                       .format(earliest_of)).fetchone()
    earliest: datetime | None = row[0] if row else None
    if earliest is None or earliest >= start:
        return None
    shift: timedelta = start - earliest
    for table, cols in tables.items():
        # One statement per table: a row's times move together (a CHECK between two of
        # them never sees one moved and the other not).
        moved = sql.SQL(", ").join(
            sql.SQL("{c} = CASE WHEN {c} BETWEEN {lo} AND {hi} THEN {c} + {shift} ELSE {c} END")
            .format(c=sql.Identifier(c), lo=sql.Literal(lo), hi=sql.Literal(hi),
                    shift=sql.Literal(shift)) for c in cols)
        conn.execute(sql.SQL("UPDATE {t} SET {moved} WHERE {inside}").format(
            t=sql.Identifier(table), moved=moved, inside=inside[table]))
    return shift
