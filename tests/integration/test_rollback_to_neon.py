"""``opsgate rollback to-neon`` on the sandbox: edits made on the fallback are never
lost on the way back (refused, or carried back by the runner's forced restore), the
gate's checks on Neon must be green, and then the app reports ``neon`` again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate.migrate.runner import run_migration
from opsgate.rollback import switch
from opsgate.sandbox import Sandbox
from tests.rollback_helpers import admin_save, app_overview, restored, rollback, writes


@pytest.fixture
def sb(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    monkeypatch.chdir(tmp_path)
    with restored(sandbox, blobs_too=False):
        yield sandbox


def _neon_payload(sb: Sandbox, key: str) -> object:
    with psycopg.connect(sb.environ()["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT payload FROM admin_content_state WHERE key = %s",
                           (key,)).fetchone()
        return row[0] if row else None


def test_the_round_trip_carries_fallback_edits_back_to_neon(
        sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert rollback(sb, tmp_path, apply=True).status == "done"
    saved = admin_save(sb, "homepage", {"hero": "edited while on the fallback"})
    assert saved["backend"] == "blob"
    assert _neon_payload(sb, "homepage") != {"hero": "edited while on the fallback"}

    refused = rollback(sb, tmp_path, "neon", apply=True)
    assert (refused.status, refused.exit_code) == ("refused", 1)
    assert "edits made on the fallback would be lost" in refused.message
    assert ("opsgate migrate run 20260211_1002_blob_to_neon_admin_state --apply --force "
            '--reason "self-test"') in refused.message
    assert "--recover-from-blob" in refused.message
    assert app_overview(sb)["backend"] == "blob"

    planned = rollback(sb, tmp_path, "neon", recover_from_blob=True)
    assert planned.status == "planned", planned.message
    assert planned.details["recovery"]["status"] == "planned"
    assert _neon_payload(sb, "homepage") != {"hero": "edited while on the fallback"}

    # Ctrl-C right after the forced restore committed: the next run resumes from there.
    original = run_migration

    def restore_then_stop(*args: Any, **kw: Any) -> Any:
        assert original(*args, **kw).exit_code == 0
        monkeypatch.setattr(switch, "run_migration", run_migration)
        raise KeyboardInterrupt

    monkeypatch.setattr(switch, "run_migration", restore_then_stop)
    before = len(writes(sb))
    stopped = rollback(sb, tmp_path, "neon", apply=True, recover_from_blob=True)
    assert (stopped.status, stopped.exit_code) == ("interrupted", 130), stopped.message
    assert _neon_payload(sb, "homepage") == {"hero": "edited while on the fallback"}
    assert writes(sb)[before:] == [] and app_overview(sb)["backend"] == "blob"

    back = rollback(sb, tmp_path, "neon", apply=True, recover_from_blob=True)
    assert (back.status, back.exit_code) == ("done", 0), back.message
    carried = next(s for s in back.steps if s["step"] == "fallback carried back")
    assert carried["status"] == "skipped"  # done by the interrupted run, not again
    gate = next(s for s in back.steps if s["step"] == "gate on Neon")
    assert gate["status"] == "done" and "the gate passed" in gate["detail"]
    overview = app_overview(sb)
    assert overview["backend"] == "neon" and overview["counts"]["admin_history"] == 4
    assert [m for m, _ in writes(sb)[before:]] == ["PATCH", "POST"]


def test_a_red_gate_keeps_the_app_on_the_fallback(sb: Sandbox, tmp_path: Path) -> None:
    assert rollback(sb, tmp_path, apply=True).status == "done"
    before = len(writes(sb))

    def red(reports: Path, env_file: Path | None) -> tuple[bool, str]:
        return False, "the gate did not pass (verdict failed, exit 1; not passed: parity)"

    stopped = rollback(sb, tmp_path, "neon", apply=True, gate=red)
    assert (stopped.status, stopped.exit_code) == ("precondition-failed", 1)
    assert stopped.message == ("Neon is not ready to serve: the gate did not pass (verdict "
                               "failed, exit 1; not passed: parity)")
    assert writes(sb)[before:] == [] and app_overview(sb)["backend"] == "blob"
    record = json.loads((Path(stopped.details["record_dir"]) / "rollback.json").read_text())
    assert record["steps"][-1] == {"stage": "preconditions", "step": "gate on Neon",
                                   "status": "failed", "detail": stopped.message[28:]}
