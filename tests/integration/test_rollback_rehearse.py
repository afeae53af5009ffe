"""``opsgate rollback rehearse``: the whole round trip on a sandbox of its own, recorded
as a drill in the caller's reports folder, nothing else left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsgate.cli import main
from opsgate.reports import history

#: A production target in the caller's environment, as in an app's CI job: the
#: rehearsal, and the gate it runs as a child process, must never see it.
PRODUCTION = {"DATABASE_URL": "postgresql://prod:canary-rehearse@prod-host.invalid/app",
              "DATABASE_URL_UNPOOLED": "postgresql://prod:canary-rehearse@direct.invalid/app",
              "OPS_BASE_URL": "https://prod.invalid", "ADMIN_PASSWORD": "canary-rehearse"}


def test_rehearse_runs_the_round_trip_and_records_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    reports = tmp_path / "reports"
    assert main(["rollback", "rehearse", "--reports-dir", str(reports), "--json"]) == 0
    out = capsys.readouterr()
    assert "canary-rehearse" not in out.out + out.err
    doc = json.loads(out.out)
    assert doc["status"] == "done", doc["message"]
    assert [s["step"] for s in doc["steps"]] == [
        "to-blob", "admin edit on the fallback", "to-neon", "edit carried back"]
    assert [r["status"] for r in doc["runs"]] == ["done", "done"]
    # The inner runs' records were in the rehearsal's removed folder: none is named.
    assert [(r["record_dir"], r["history_head"]) for r in doc["runs"]] == [(None, None)] * 2
    record = next((reports / "rollback").iterdir()) / "rollback.md"
    assert record.read_text().startswith("# opsgate rollback rehearse: done")
    recovery = doc["runs"][1]["recovery"]
    assert recovery["mode"] == "force" and recovery["status"] == "applied"
    entries = history.entries(reports / "history.jsonl")
    assert [e["kind"] for e in entries] == ["rollback"] and entries[0]["verdict"] == "done"
    assert entries[0]["notes"][0].startswith("rollback rehearse done")
    assert sorted(p.name for p in (reports / "rollback").iterdir())[0].endswith(
        "_rollback-rehearse")
    assert sorted(p.name for p in reports.iterdir()) == [".history.lock", "history.jsonl",
                                                          "rollback"]
