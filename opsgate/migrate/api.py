"""What a migration script sees: its context and the plan it returns.

A script module defines ``SOURCE``, ``TARGET``, ``DESCRIPTION``, ``TARGET_TABLES`` and
four functions: ``preconditions(ctx) -> list[str]`` and ``plan(ctx) -> Plan``, run in
that order, so a precondition can guard what plan reads (both read only; the runner
checks they wrote nothing), ``apply(ctx, plan)`` (writes, inside the
runner's transaction), ``verify(ctx, plan) -> list[str]`` (same transaction, before
commit). Scripts never commit, roll back, lock or write the ledger: the runner does.

Optional: ``REPEATABLE = True`` for a script that mirrors a source that keeps changing
(the blob fallback refresh): applied again whenever its payload hash differs from the
last applied one, without ``--force``; the same hash is still a no-op. A script whose
apply writes outside the database (a blob store) must check ``ctx.mode`` and write
nothing in a dry run, because the runner cannot roll such writes back.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import psycopg

from opsgate.config import Settings


@dataclass
class Plan:
    """What a migration would do. ``payload`` is hashed with canon-v1 for the ledger."""

    payload: Any
    source_counts: dict[str, int] = field(default_factory=dict)
    data: Any = None  # whatever apply() needs; not hashed, not reported
    #: A canon-v1 hash computed by the script (streamed, for payloads too large to hold);
    #: when set, ``payload`` is not hashed again.
    payload_hash: str | None = None


@dataclass
class MigrationContext:
    conn: psycopg.Connection[Any]
    settings: Settings
    source: str | None = None
    mode: str = "dry-run"
    previous: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: False when the runner's caller owns the terminal (the sandbox build draws a bar).
    verbose: bool = True

    def log(self, message: str) -> None:
        """Progress for humans: stderr, so stdout stays the JSON summary."""
        if self.verbose:
            print(f"opsgate-migrate: {message}", file=sys.stderr, flush=True)

    def table_exists(self, table: str) -> bool:
        row = self.conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)
        ).fetchone()
        return bool(row and row[0])
