"""Migration ledger (runbook: "the migration name exists in admin_migrations with its
payload hash"): every script applied, none edited after apply, no unknown or failed rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate.config import Settings
from opsgate.errors import OpsgateError, first_line
from opsgate.migrate import ledger
from opsgate.migrate.scripts import discover_scripts
from opsgate.pytest_plugin.fixtures import fail
from opsgate.verify.evidence_database import LedgerApplied, LedgerChecksums, LedgerRows
from opsgate.verify.evidence_types import EvidenceStore
from opsgate.verify.expectations import Expectations

pytestmark = pytest.mark.ledger


@pytest.fixture
def scripts(ops_settings: Settings, project_root: Path) -> list[Any]:
    folder = Path(ops_settings.migrations_dir)
    if not folder.is_absolute():
        folder = project_root / folder
    try:
        return discover_scripts(folder)
    except OpsgateError as exc:  # a stray or badly named script: one line, naming it
        fail(str(exc))


@pytest.fixture(scope="module")
def _ledger_read() -> dict[str, list[dict[str, Any]] | str]:
    """The ledger as the module's first test read it (or why it could not): the three
    tests judge one read, in one transaction, of one snapshot."""
    return {}


@pytest.fixture
def rows(request: pytest.FixtureRequest,
         _ledger_read: dict[str, list[dict[str, Any]] | str]) -> list[dict[str, Any]]:
    if "rows" not in _ledger_read:
        target_db: psycopg.Connection[Any] = request.getfixturevalue("target_db")
        try:
            found = ledger.rows(target_db)  # the table's existence, then its rows
            exists = bool(found) or ledger.ledger_exists(target_db)
        except psycopg.OperationalError as exc:
            # Read at set-up, so not tried again as a test's read is (docs/neon.md): a
            # connection the database ended here fails the check in one line.
            fail(f"reading admin_migrations failed: {first_line(exc)}")
        _ledger_read["rows"] = found if exists else (
            "admin_migrations does not exist: no migration was ever recorded")
    read = _ledger_read["rows"]
    if isinstance(read, str):
        fail(read)
    return read


def test_every_migration_is_applied_with_a_payload_hash(
    scripts: list[Any], rows: list[dict[str, Any]], expectations: Expectations,
    evidence: EvidenceStore
) -> None:
    applied = {r["name"]: r for r in rows if r["status"] == "applied" and r["payload_hash"]}
    migrations = [
        {"name": s.name, "ledger_id": applied[s.name]["id"] if s.name in applied else None,
         "payload_hash": applied[s.name]["payload_hash"] if s.name in applied else None}
        for s in scripts
    ]
    missing = [s.name for s in scripts if s.name not in applied]
    # Required by the expectations even if the script folder lacks them (a checkout
    # that lost a migration must not make its absence from the ledger look fine).
    missing += [m for m in expectations.required_migrations
                if m not in applied and m not in missing]
    # The ledger's floor is judged here, not by preflight: one lost row, one red check.
    floors = expectations.floors_judged_by("ledger")
    evidence.set(LedgerApplied(migrations, list(expectations.required_migrations), floors))
    problems = ([f"{len(missing)} migration(s) have no applied ledger row with a payload "
                 "hash: " + ", ".join(missing)] if missing else [])
    problems += expectations.floor_problems({"admin_migrations": len(rows)}, "ledger")
    if problems:
        fail("; ".join(problems))


def test_no_script_changed_after_apply(
    scripts: list[Any], rows: list[dict[str, Any]], evidence: EvidenceStore
) -> None:
    last: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["status"] == "applied":
            last[r["name"]] = r
    edited = [
        f"{s.name} (ledger {last[s.name]['script_checksum'][:12]}…, "
        f"file {s.checksum[:12]}…)"
        for s in scripts if s.name in last and last[s.name]["script_checksum"] != s.checksum
    ]
    evidence.set(LedgerChecksums({s.name: s.checksum for s in scripts}))
    if edited:
        fail("script(s) edited after they were applied: " + "; ".join(edited))


def test_ledger_names_only_known_successful_migrations(
    scripts: list[Any], rows: list[dict[str, Any]], evidence: EvidenceStore
) -> None:
    known = {s.name for s in scripts} | ledger.OPERATIONS  # e.g. an `opsgate refresh` row
    unknown = sorted({r["name"] for r in rows} - known)
    failed = [f"row {r['id']} {r['name']} status {r['status']}" for r in rows
              if r["status"] != "applied"]
    evidence.set(LedgerRows(len(rows)))
    problems = ([f"unknown migrations in the ledger: {', '.join(unknown)}"] if unknown else []
                ) + ([f"non-applied rows: {'; '.join(failed[:10])}"] if failed else [])
    if problems:
        fail("; ".join(problems))
