"""The steps of a schema migration, shared by every script that only runs DDL.

The payload a schema migration is identified by is its list of statements, so editing
the DDL of an applied migration changes its payload hash (and its checksum): the runner
then refuses a silent re-run.
"""

from __future__ import annotations

from collections.abc import Sequence

from opsgate.clients.schema import missing_columns
from opsgate.migrate.api import MigrationContext, Plan


def plan(ctx: MigrationContext, ddl: Sequence[str], tables: tuple[str, ...]) -> Plan:
    existing = [t for t in tables if ctx.table_exists(t)]
    return Plan(payload={"ddl": list(ddl)},
                source_counts={"statements": len(ddl), "tables_existing": len(existing)})


def apply(ctx: MigrationContext, ddl: Sequence[str]) -> None:
    for statement in ddl:
        ctx.conn.execute(statement)  # fixed DDL from opsgate.clients.schema, not user input


def verify(ctx: MigrationContext, tables: tuple[str, ...]) -> list[str]:
    return [f"missing after apply: {m}" for m in missing_columns(ctx.conn, tables)]
