"""The release gate's table: which check, which marker, which flag turns it on and
whether it is on by default, which variables it cannot run without.

This table is the one place that says which checks a plain run makes: the flags'
defaults (`opsgate.config.FLAG_DEFAULTS`), the docs' flags table (held to it by a
self-test) and the reports' severities are read from it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opsgate.markexpr import MarkerExpression

if TYPE_CHECKING:  # config reads the flags' defaults from this table
    from opsgate.config import Settings


@dataclass(frozen=True)
class CheckSpec:
    marker: str
    flag: str
    required_env: tuple[str, ...]
    module: str
    title: str
    #: False for a check that reads no target (a git range): a run of such checks only
    #: needs no DATABASE_URL, OPS_BASE_URL or blob token.
    needs_target: bool = True
    #: Whether the check runs when its flag is unset: the runbook's default gate.
    default_on: bool = False


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("preflight", "RUN_OPS_PREFLIGHT", ("DATABASE_URL",), "checks/test_preflight.py",
              "Preflight: backend, database, deployment", default_on=True),
    CheckSpec("parity", "RUN_OPS_PARITY", ("DATABASE_URL", "OPS_BASE_URL", "ADMIN_PASSWORD"),
              "checks/test_parity.py", "Post-deploy parity: live API vs database",
              default_on=True),
    CheckSpec("ledger", "RUN_OPS_LEDGER", ("DATABASE_URL",), "checks/test_ledger.py",
              "Migration ledger presence", default_on=True),
    CheckSpec("neon_drill", "RUN_OPS_NEON_DRILL", ("DATABASE_URL",), "checks/test_neon_drill.py",
              "Backup/restore drill"),
    CheckSpec("blob_fallback", "RUN_OPS_BLOB_FALLBACK", ("BLOB_READ_WRITE_TOKEN",),
              "checks/test_blob_fallback.py", "Blob fallback verification"),
    CheckSpec("knowledge_drift", "RUN_OPS_KNOWLEDGE_DRIFT", ("DATABASE_URL",),
              "checks/test_knowledge_drift.py", "Knowledge drift verification"),
    CheckSpec("health", "RUN_OPS_HEALTH", ("DATABASE_URL",), "checks/test_health.py",
              "Health counts"),
    CheckSpec("deployment", "RUN_OPS_DEPLOYMENT", ("VERCEL_TOKEN", "OPS_BASE_URL"),
              "checks/test_deployment.py", "Deployment: Vercel project, env and production "
              "deployment"),
    CheckSpec("change_control", "RUN_OPS_CHANGE_CONTROL", ("OPSGATE_CHANGE_RANGE",),
              "checks/test_change_control.py", "Change control: migrations with index, "
              "changelog and checkpoint", needs_target=False),
    CheckSpec("blob_objects", "RUN_OPS_BLOB_OBJECTS", ("BLOB_READ_WRITE_TOKEN",),
              "checks/test_blob_objects.py", "Blob fallback objects: exactly the admin "
              "state's files"),
)

BY_MARKER: Mapping[str, CheckSpec] = {c.marker: c for c in CHECKS}


def marker_expression(flags: Mapping[str, bool]) -> str:
    """``preflight or parity or ledger`` for the default flags; "" when all are off."""
    return " or ".join(c.marker for c in CHECKS if flags.get(c.flag, False))


def selected_checks(expression: str) -> list[CheckSpec]:
    """The checks a marker expression can select: those it is true for when a test
    carries that check's marker alone (how every check module is marked)."""
    compiled = MarkerExpression.compile(expression)

    def alone(marker: str) -> bool:
        return compiled.evaluate(lambda name, /, **kw: name == marker and not kw)

    return [c for c in CHECKS if alone(c.marker)]


def needs_target(expression: str) -> bool:
    """Whether a run of ``expression`` needs a configured target: true unless every
    check it selects reads none (an expression that selects no check keeps the rule)."""
    if not expression:
        return True
    chosen = selected_checks(expression)
    return not chosen or any(c.needs_target for c in chosen)


def missing_env(settings: Settings, markers: Iterable[str]) -> list[str]:
    """Required variables of the given check markers that ``settings`` does not have."""
    missing: list[str] = []
    for m in markers:
        spec = BY_MARKER.get(m)
        if spec is None:
            continue
        for var in spec.required_env:
            if not settings.is_set(var) and var not in missing:
                missing.append(var)
    return missing
