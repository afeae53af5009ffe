"""Admin persistence schema: admin_content_state, admin_history, admin_migrations."""

from __future__ import annotations

from opsgate.migrate import MigrationContext, Plan
from opsgate.schema import ADMIN_DDL, ADMIN_TABLES, missing_columns

SOURCE = "none"
TARGET = "neon"
DESCRIPTION = "Create the admin persistence tables"
TARGET_TABLES = ADMIN_TABLES


def preconditions(ctx: MigrationContext) -> list[str]:
    return []


def plan(ctx: MigrationContext) -> Plan:
    existing = [t for t in ADMIN_TABLES if ctx.table_exists(t)]
    return Plan(payload={"ddl": list(ADMIN_DDL)},
                source_counts={"statements": len(ADMIN_DDL), "tables_existing": len(existing)})


def apply(ctx: MigrationContext, plan: Plan) -> None:
    for statement in ADMIN_DDL:
        ctx.conn.execute(statement)


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    return [f"missing after apply: {m}" for m in missing_columns(ctx.conn, ADMIN_TABLES)]


