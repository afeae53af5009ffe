"""Admin persistence schema: admin_content_state, admin_history, admin_migrations."""

from __future__ import annotations

from opsgate.migrate import MigrationContext, Plan, ddl
from opsgate.schema import ADMIN_DDL, ADMIN_TABLES

SOURCE = "none"
TARGET = "neon"
DESCRIPTION = "Create the admin persistence tables"
TARGET_TABLES = ADMIN_TABLES


def preconditions(ctx: MigrationContext) -> list[str]:
    return []


def plan(ctx: MigrationContext) -> Plan:
    return ddl.plan(ctx, ADMIN_DDL, ADMIN_TABLES)


def apply(ctx: MigrationContext, plan: Plan) -> None:
    ddl.apply(ctx, ADMIN_DDL)


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    return ddl.verify(ctx, ADMIN_TABLES)
