"""The one guarded migration runner (the runbook's seven safeguards live here)."""

from .api import MigrationContext, Plan
from .runner import RunResult, run_migration
from .scripts import MigrationScript, discover_scripts

__all__ = [
    "MigrationContext", "MigrationScript", "Plan", "RunResult", "discover_scripts",
    "run_migration",
]
