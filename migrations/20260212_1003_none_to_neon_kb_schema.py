"""Knowledge backbone schema: the nine kb_* tables with keys, foreign keys, indexes."""

from __future__ import annotations

from opsgate.migrate import MigrationContext, Plan, ddl
from opsgate.schema import KB_DDL, KB_TABLES

SOURCE = "none"
TARGET = "neon"
DESCRIPTION = "Create the knowledge backbone tables"
TARGET_TABLES = KB_TABLES


def preconditions(ctx: MigrationContext) -> list[str]:
    return []


def plan(ctx: MigrationContext) -> Plan:
    return ddl.plan(ctx, KB_DDL, KB_TABLES)


def apply(ctx: MigrationContext, plan: Plan) -> None:
    ddl.apply(ctx, KB_DDL)


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    return ddl.verify(ctx, KB_TABLES)
