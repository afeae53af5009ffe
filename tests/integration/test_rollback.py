"""``opsgate rollback status`` and ``to-blob`` on the sandbox: the switch happens only
with its redeploy, every way it can go wrong by hand stops with one line, a dry run
writes nothing to Vercel, and a run stopped at any step is resumed by the next."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsgate.cli import main
from opsgate.clients import vercel
from opsgate.clients.vercel import VercelApi
from opsgate.config import Settings
from opsgate.reports import history
from opsgate.rollback import deploy, status
from opsgate.rollback.observe import observe
from opsgate.sandbox import Sandbox
from tests.rollback_helpers import admin_save, app_overview, restored, rollback, writes


@pytest.fixture
def sb(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    monkeypatch.chdir(tmp_path)
    with restored(sandbox):
        yield sandbox


def _status(sb: Sandbox) -> dict[str, Any]:
    settings = Settings.load(environ=sb.environ())
    link = vercel.resolve_link(settings, Path.cwd())
    with vercel.connect(settings, link) as api:
        return status.status(observe(api, settings, ("production", "preview")))


def _record(summary: Any) -> dict[str, Any]:
    folder = Path(summary.details["record_dir"])
    assert (folder / "rollback.md").is_file()
    found: dict[str, Any] = json.loads((folder / "rollback.json").read_text())
    return found


def test_status_names_variable_serving_deployment_app_and_fallback(sb: Sandbox) -> None:
    doc = _status(sb)
    prod, preview = doc["environments"]["production"], doc["environments"]["preview"]
    assert (prod["variable"], prod["app_reports"], preview["variable"]) == ("neon", "neon", "neon")
    assert doc["fallback"]["current"] and doc["to_blob"] == "ready"
    assert prod["to_neon_would"] == ["nothing: already serving neon"]
    assert prod["to_blob_would"][0] == "set ADMIN_STORAGE_BACKEND neon -> blob"
    assert prod["half_way"] is None
    assert any("Neon" in line or "fallback" in line for line in status.lines(doc))


def test_dry_run_sends_no_write_to_the_vercel_api(sb: Sandbox, tmp_path: Path) -> None:
    before = len(writes(sb))
    summary = rollback(sb, tmp_path, environments=("production", "preview"))
    assert (summary.status, summary.exit_code) == ("planned", 0), summary.message
    assert writes(sb)[before:] == []
    assert {s["status"] for s in summary.steps if s["stage"] == "apply"} == {"planned"}
    assert app_overview(sb)["backend"] == "neon"
    assert _record(summary)["mode"] == "dry-run"


def test_reports_list_shows_a_dry_run_as_one_not_as_passed(
        sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It was listed as "passed", with "passed 0 failed 0 error 0" under tests: an
    # auditor read a rollback that never happened as one carried out and checked.
    summary = rollback(sb, tmp_path, environments=("production",))
    assert summary.status == "planned", summary.message
    capsys.readouterr()
    assert main(["reports", "list", "--reports-dir", str(tmp_path / "reports")]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[1:4] == ["dry-run", "rollback", "-"], row
    assert "passed" not in row and "rollback: rollback to-blob planned:" in " ".join(row)


def test_to_blob_switches_with_a_redeploy_and_a_rerun_is_a_noop(sb: Sandbox,
                                                                tmp_path: Path) -> None:
    summary = rollback(sb, tmp_path, apply=True, environments=("production", "preview"))
    assert (summary.status, summary.exit_code) == ("done", 0), summary.message
    overview = app_overview(sb)
    assert overview["backend"] == "blob"
    assert [p for p, *_ in writes(sb)].count("POST") == 2  # one redeploy per environment
    assert any("is BUILDING" in line for line in summary.details["said"])
    doc = _status(sb)
    assert doc["environments"]["preview"]["to_blob_would"] == ["nothing: already serving blob"]

    again = rollback(sb, tmp_path, apply=True, environments=("production", "preview"))
    assert (again.status, again.exit_code) == ("noop", 0), again.message
    assert {s["status"] for s in again.steps if s["stage"] == "apply"} == {"skipped"}
    assert [p for p, *_ in writes(sb)].count("POST") == 2

    reports = tmp_path / "reports"
    check = history.verify(reports / "history.jsonl")
    assert check.ok and check.lines == 2, check.reason
    entries = history.entries(reports / "history.jsonl")
    assert [e["kind"] for e in entries] == ["rollback", "rollback"]
    assert main(["reports", "verify", "--reports-dir", str(reports)]) == 0
    (Path(again.details["record_dir"]) / "rollback.md").write_text("edited\n")
    assert main(["reports", "verify", "--reports-dir", str(reports)]) == 1
    text = "".join(p.read_text() for p in reports.rglob("rollback.*"))
    for secret in (sb.vercel_token, sb.admin_password, sb.blob_token):
        assert secret.reveal() not in text


def test_a_variable_changed_without_a_redeploy_changes_nothing_and_is_finished(
        sb: Sandbox, tmp_path: Path) -> None:
    assert sb.vercel is not None
    env = next(e for e in sb.vercel.project.envs if e["key"] == "ADMIN_STORAGE_BACKEND"
               and e["target"] == ["production"])
    sb.vercel.deploys.edit_env(env["id"], {"value": "blob"})
    assert app_overview(sb)["backend"] == "neon"  # as on Vercel
    half = _status(sb)["environments"]["production"]["half_way"]
    assert half == ("the variable says blob but the app serves neon: not redeployed "
                    "since the change")
    summary = rollback(sb, tmp_path, apply=True)
    assert summary.status == "done", summary.message
    steps = {s["step"]: s["status"] for s in summary.steps}
    assert steps["production: ADMIN_STORAGE_BACKEND=blob"] == "skipped"
    assert steps["production: redeploy"] == "done"
    assert app_overview(sb)["backend"] == "blob"


@pytest.mark.parametrize(("fault", "said"), [
    ("vercel-redeploy-error", "ended in ERROR (BUILD_FAILED: Command \"next build\" exited "
     "with 1); the previous deployment"),
    ("vercel-alias-stuck", "(the aliases did not move)"),
    ("vercel-redeploy-stale-env", "production: the app does not serve from blob after the "
     "redeploy (it reports neon)"),
])
def test_each_redeploy_fault_stops_with_one_line_and_a_record(
        sb: Sandbox, tmp_path: Path, fault: str, said: str) -> None:
    sb.faults.set(fault)
    summary = rollback(sb, tmp_path, apply=True)
    assert (summary.status, summary.exit_code) == ("failed", 1)
    assert said in summary.message and "\n" not in summary.message
    assert app_overview(sb)["backend"] == "neon" or fault == "vercel-alias-stuck"
    record = _record(summary)
    assert record["status"] == "failed" and record["steps"][-1]["status"] == "failed"
    if fault == "vercel-redeploy-error":
        assert "is still serving" in summary.message
        doc = _status(sb)["environments"]["production"]
        assert "ended in ERROR" in (doc["half_way"] or "")
        sb.faults.clear()  # the build fixed: the next run redeploys again
        retry = rollback(sb, tmp_path, apply=True)
        assert retry.status == "done", retry.message
        assert app_overview(sb)["backend"] == "blob"


def test_a_redeploy_that_never_gets_ready_is_bounded(sb: Sandbox, tmp_path: Path) -> None:
    sb.faults.set("vercel-redeploy-stuck")
    summary = rollback(sb, tmp_path, apply=True, pace=deploy.Pace(wait_s=0.4, poll_s=0.05))
    assert summary.status == "failed"
    assert "is still BUILDING after 0.4 s; the previous deployment" in summary.message
    assert "re-run to keep waiting (the redeploy is resumed, not repeated)" in summary.message
    half = _status(sb)["environments"]["production"]["half_way"] or ""
    assert half.startswith("a redeploy to blob (dpl_") and half.endswith(") is BUILDING"), half
    dry = rollback(sb, tmp_path)
    assert [s["detail"] for s in dry.steps if s["step"] == "production: redeploy"] == [
        half.split("(")[1].split(")")[0].join(["would wait for ", " (started by an earlier "
                                               "run, BUILDING)"])]
    again = rollback(sb, tmp_path, apply=True, pace=deploy.Pace(wait_s=0.2, poll_s=0.05))
    assert any(s["status"] == "skipped" and "resuming" in s["detail"] for s in again.steps)
    assert [m for m, _ in writes(sb)].count("POST") == 1  # waited for, not repeated


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
    original = getattr(owner, name)

    def then_stop(*args: Any, **kw: Any) -> Any:
        original(*args, **kw)
        monkeypatch.setattr(owner, name, original)
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, then_stop)


@pytest.mark.parametrize(("owner", "name"), [
    (VercelApi, "edit_env"), (VercelApi, "redeploy"), (time, "sleep"),
    (deploy, "confirm_serving"),
], ids=["after-env-edit", "after-redeploy", "while-waiting", "after-confirming"])
def test_ctrl_c_at_each_step_leaves_a_record_and_the_next_run_resumes(
        sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: Any,
        name: str) -> None:
    _interrupt_after(monkeypatch, owner, name)
    stopped = rollback(sb, tmp_path, apply=True)
    assert (stopped.status, stopped.exit_code) == ("interrupted", 130), stopped.message
    assert "re-run the same command to resume" in stopped.message
    assert _record(stopped)["status"] == "interrupted"
    if name == "edit_env":
        half = _status(sb)["environments"]["production"]["half_way"] or ""
        assert half.startswith("the variable says blob but the app serves neon"), half
    resumed = rollback(sb, tmp_path, apply=True)
    # After the edit a redeploy is still to do; after the confirmation nothing is; in
    # between, the redeploy the stopped run started is waited for, or is READY already.
    expected = {"edit_env": ("done",), "confirm_serving": ("noop",)}.get(name,
                                                                          ("done", "noop"))
    assert resumed.status in expected, resumed.message
    # The switch is audited once it changed production: by the stopped run when it
    # recorded a change (the resumed one may then find nothing to do), else by the
    # resumed run, which makes the change.
    audits = [r.details["audit"] for r in (stopped, resumed) if r.details["audit"]["due"]]
    assert audits, (stopped.details["audit"], resumed.details["audit"])
    assert resumed.details["audit"]["due"] == (resumed.status == "done")
    if stopped.details["audit"]["due"]:
        assert "(production): interrupted; reason:" in audits[0]["changelog"]
    assert app_overview(sb)["backend"] == "blob"
    methods = [m for m, _ in writes(sb)]
    assert methods.count("PATCH") == 1 and methods.count("POST") == 1, writes(sb)


def test_a_stale_fallback_is_refused_unless_accepted_as_it_is(sb: Sandbox,
                                                              tmp_path: Path) -> None:
    assert sb.vercel is not None
    admin_save(sb, "homepage", {"hero": "saved on Neon only"})  # the app is on Neon
    try:
        refused = rollback(sb, tmp_path, apply=True)
        assert (refused.status, refused.exit_code) == ("precondition-failed", 1)
        assert refused.message.startswith("the blob fallback is not current")
        assert "keys with a different payload: homepage" in refused.message
        assert "--accept-fallback-as-is" in refused.message
        assert writes(sb) == [] or all(m == "GET" for m, _ in writes(sb))
        accepted = rollback(sb, tmp_path, apply=True, accept_fallback_as_is=True)
        assert accepted.status == "done", accepted.message
        assert any(line.startswith("fallback differs: keys with a different payload")
                   for line in accepted.details["said"])
    finally:
        _undo_neon_save(sb)


def test_a_fallback_that_is_not_valid_is_refused(sb: Sandbox, tmp_path: Path) -> None:
    sb.bucket.put("admin/history.json", b'[{"id": 1, "key": "homepage"}]')
    summary = rollback(sb, tmp_path, apply=True, accept_fallback_as_is=True)
    assert (summary.status, summary.exit_code) == ("precondition-failed", 1)
    assert summary.message == ("the blob fallback is not usable: admin/history.json[0]: "
                               "missing payload, action, actor, createdAt; the app cannot "
                               "be switched to it")
    assert writes(sb) == []


def _undo_neon_save(sb: Sandbox) -> None:
    import psycopg

    with psycopg.connect(sb.environ()["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("DELETE FROM admin_history WHERE id = (SELECT max(id) FROM admin_history)")
        conn.execute("UPDATE admin_content_state SET payload = %s WHERE key = 'homepage'",
                     (json.dumps({"hero": "Builds, notes and the threads between them.",
                                  "sections": 4}),))


def test_production_needs_an_approval_naming_the_project(sb: Sandbox, tmp_path: Path) -> None:
    refused = rollback(sb, tmp_path, apply=True, approve=False)
    assert (refused.status, refused.exit_code) == ("refused", 2)
    assert "pass --approve-production=constellation; nothing was changed" in refused.message
    wrong = rollback(sb, tmp_path, apply=True, approve=False,
                     approve_production="constellation-staging")
    assert "(--approve-production names 'constellation-staging')" in wrong.message
    preview = rollback(sb, tmp_path, apply=True, approve=False, environments=("preview",))
    assert preview.status == "done", preview.message
    assert all(m == "GET" or "/env/" in p or p == "/v13/deployments" for m, p in writes(sb))


def test_a_missing_variable_is_a_usage_error_without_a_record(
        sb: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = tmp_path / "partial.env"
    env.write_text("ADMIN_STORAGE_BACKEND=neon\n")
    assert main(["rollback", "to-blob", "--env-file", str(env), "--reason", "x"]) == 2
    out = capsys.readouterr().out
    assert ("rollback to-blob failed: required environment variable VERCEL_TOKEN is not "
            "set") in out or "VERCEL_PROJECT_ID is not set" in out, out
    assert not (tmp_path / "reports").exists()


def test_an_api_answering_for_another_project_is_refused(sb: Sandbox, tmp_path: Path) -> None:
    sb.faults.set("vercel-wrong-project")
    summary = rollback(sb, tmp_path, apply=True)
    assert summary.status == "precondition-failed"
    assert "(constellation-staging), not the linked" in summary.message
    assert writes(sb) == []


def test_write_audit_appends_to_the_change_control_files(
        sb: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    changelog, checkpoint = tmp_path / "CHANGELOG.md", tmp_path / "checkpoints.md"
    monkeypatch.setattr(sb, "environ", lambda: {
        **Sandbox.environ(sb), "OPSGATE_CHANGE_CHANGELOG": str(changelog),
        "OPSGATE_CHANGE_CHECKPOINT": str(checkpoint)})
    summary = rollback(sb, tmp_path, apply=True, write_audit=True, reason="incident 42")
    assert summary.status == "done", summary.message
    assert "rollback to-blob (production): done; reason: incident 42" in changelog.read_text()
    assert "reason: incident 42" in checkpoint.read_text()


def test_the_command_stops_on_sigterm_leaving_a_record_and_no_secret(
        sb: Sandbox, tmp_path: Path) -> None:
    """The real command in a child process: SIGTERM while it waits for READY ends it as
    Ctrl-C does (exit 130, the record written), and nothing it prints holds a secret."""
    sb.faults.set("vercel-redeploy-stuck")
    reports = tmp_path / "reports"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from opsgate.cli import main; sys.exit(main())",
         "rollback", "to-blob", "--env-file", str(sb.env_file), "--reason", "drill",
         "--apply", "--approve-production=constellation", "--wait", "60", "--poll", "0.05",
         "--reports-dir", str(reports)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "is BUILDING" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(seen) + err
    assert ("rollback to-blob interrupted: interrupted after production: redeploy; what was "
            "done stays done") in out
    (folder,) = (reports / "rollback").iterdir()
    record = json.loads((folder / "rollback.json").read_text())
    assert record["status"] == "interrupted" and record["exit_code"] == 130
    text = out + "".join(seen) + err + (folder / "rollback.md").read_text()
    for secret in (sb.vercel_token, sb.admin_password, sb.blob_token):
        assert secret.reveal() not in text


def test_a_record_that_cannot_be_written_fails_the_run_saying_so(
        sb: Sandbox, tmp_path: Path) -> None:
    (tmp_path / "reports").write_text("a file where the reports folder should be\n")
    summary = rollback(sb, tmp_path)
    assert summary.exit_code == 1 and summary.details["record_dir"] is None
    assert summary.message.startswith("dry run: nothing was changed")
    assert "; and the record could not be written to " in summary.message


def test_a_link_file_naming_another_project_is_refused(sb: Sandbox, tmp_path: Path) -> None:
    (tmp_path / ".vercel").mkdir()
    (tmp_path / ".vercel" / "project.json").write_text(
        '{"projectId": "prj_someone_else", "orgId": "team_x"}')
    summary = rollback(sb, tmp_path, apply=True)
    assert (summary.status, summary.exit_code) == ("precondition-failed", 2)
    assert summary.message.endswith("but the link file names prj_someone_else: which "
                                    "project is meant is unclear")
    assert writes(sb) == []
