"""Knowledge backbone schema: the nine kb_* tables with keys, foreign keys, indexes."""

from __future__ import annotations

from opsgate.migrate import MigrationContext, Plan
from opsgate.schema import KB_DDL, KB_TABLES, missing_columns

SOURCE = "none"
TARGET = "neon"
DESCRIPTION = "Create the knowledge backbone tables"
TARGET_TABLES = KB_TABLES


def preconditions(ctx: MigrationContext) -> list[str]:
    return []


def plan(ctx: MigrationContext) -> Plan:
    existing = [t for t in KB_TABLES if ctx.table_exists(t)]
    return Plan(payload={"ddl": list(KB_DDL)},
                source_counts={"statements": len(KB_DDL), "tables_existing": len(existing)})


def apply(ctx: MigrationContext, plan: Plan) -> None:
    for statement in KB_DDL:
        ctx.conn.execute(statement)


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    return [f"missing after apply: {m}" for m in missing_columns(ctx.conn, KB_TABLES)]
