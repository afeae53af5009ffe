"""The ``admin_migrations`` ledger: one row per committed apply, forced re-runs included.

The runner creates the table when it is missing (like Flyway's schema history), with
the same DDL the admin-schema migration uses, so the very first migration is recorded
too. Rows are only ever appended.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from opsgate.clients.db import one_row

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS admin_migrations (
    id              bigserial PRIMARY KEY,
    name            text        NOT NULL,
    mode            text        NOT NULL CHECK (mode IN ('apply', 'force')),
    status          text        NOT NULL,
    payload_hash    text,
    script_checksum text,
    source_counts   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    target_counts   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    reason          text,
    applied_by      text        NOT NULL DEFAULT current_user,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS admin_migrations_name_idx ON admin_migrations (name, id);
"""

#: Ledger rows that record an operation rather than a script: ``opsgate refresh``
#: appends one to its target per apply. Not a script name (no date, no number), so
#: it can never collide with one; `migrate status` and the ledger check know it.
REFRESH = "opsgate-refresh"
OPERATIONS = frozenset({REFRESH})

# Key space of opsgate's advisory locks ('opsg'); the second key is hashtext(name).
LOCK_CLASS = 0x6F707367
LEDGER_LOCK = 0


def ensure_ledger(conn: psycopg.Connection[Any]) -> None:
    """Create the ledger if missing, serialised so two runners cannot race on it."""
    exists = conn.execute("SELECT to_regclass('public.admin_migrations') IS NOT NULL").fetchone()
    if exists and exists[0]:
        return
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, LEDGER_LOCK))
    conn.execute(LEDGER_DDL)


def ledger_exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('public.admin_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])


def rows(conn: psycopg.Connection[Any], name: str | None = None) -> list[dict[str, Any]]:
    if not ledger_exists(conn):
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        if name is None:
            cur.execute("SELECT * FROM admin_migrations ORDER BY id")
        else:
            cur.execute("SELECT * FROM admin_migrations WHERE name = %s ORDER BY id", (name,))
        return list(cur.fetchall())


def latest_applied(conn: psycopg.Connection[Any], name: str) -> dict[str, Any] | None:
    applied = [r for r in rows(conn, name) if r["status"] == "applied"]
    return applied[-1] if applied else None


def append(conn: psycopg.Connection[Any], *, name: str, mode: str, payload_hash: str,
           script_checksum: str | None, source_counts: dict[str, Any],
           target_counts: dict[str, Any], reason: str | None, applied_by: str,
           started_at: Any, status: str = "applied") -> int:
    row = one_row(conn.execute(
        """
        INSERT INTO admin_migrations (name, mode, status, payload_hash, script_checksum,
            source_counts, target_counts, reason, applied_by, started_at, finished_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())
        RETURNING id
        """,
        (name, mode, status, payload_hash, script_checksum, Jsonb(source_counts),
         Jsonb(target_counts), reason, applied_by, started_at),
    ), "the ledger row's insert")
    return int(row[0])
