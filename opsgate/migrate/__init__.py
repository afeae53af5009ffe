"""The one guarded migration runner (the runbook's seven safeguards live here)."""

from opsgate.migrate.api import MigrationContext, Plan
from opsgate.migrate.runner import RunResult, run_migration
from opsgate.migrate.scripts import MigrationScript, discover_scripts

__all__ = [
    "MigrationContext", "MigrationScript", "Plan", "RunResult", "discover_scripts",
    "run_migration",
]
