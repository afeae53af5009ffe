"""Reports of real gate runs on the sandbox: every artefact, valid, secret-free, one per
run under xdist, and a history whose tampering is detected."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from opsgate.cli import main as cli_main
from opsgate.clients.contracts import schema
from opsgate.reports import history, seal
from opsgate.sandbox import Sandbox
from tests.browser import render
from tests.gate_helpers import ROOT, main_here, run_gate, run_gate_here
from tests.gate_helpers import clean_env as _clean_env
from tests.node_packages import ALLURE

pytestmark = pytest.mark.usefixtures("gate_in_process")

ALL = "preflight or parity or ledger or health or neon_drill or blob_fallback or knowledge_drift"
HEAD = re.compile(r"^opsgate: history head ([0-9a-f]{64})$", re.M)


def clean_env(**extra: str) -> dict[str, str]:
    """The gate's clean environment, without CI's step summary (these runs are not CI's)."""
    env = _clean_env(**extra)
    if "GITHUB_STEP_SUMMARY" not in extra:
        env.pop("GITHUB_STEP_SUMMARY", None)
    return env


def only_run_dir(reports: Path) -> Path:
    runs = sorted((reports / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def run_with_fault(sandbox: Sandbox, tmp_path: Path, fault: str) -> Path:
    """Run the default gate with one fault on; returns the run's report directory."""
    sandbox.faults.set(fault)
    try:
        reports = tmp_path / "reports"
        run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", f"--reports-dir={reports}",
                 env=clean_env())
    finally:
        sandbox.faults.clear()
    return only_run_dir(reports)


def test_a_gate_run_writes_all_five_artefacts(sandbox: Sandbox, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", ALL,
                   f"--reports-dir={reports}", "--junitxml=", env=clean_env())
    assert run.code == 0, run.stdout[-3000:]
    d = only_run_dir(reports)
    assert f"opsgate: reports in {d}" in run.stdout
    assert {p.name for p in d.iterdir()} >= {"allure-results", "junit.xml", "summary.json",
                                              "drill-record.md", "report.html"}

    summary = json.loads((d / "summary.json").read_text())
    jsonschema.Draft202012Validator(schema("report-summary")).validate(summary)
    assert summary["verdict"] == "passed" and summary["target_kind"] == "environment"
    statuses = {c["marker"]: c["status"] for c in summary["checks"]}
    assert {statuses[m] for m in ALL.split(" or ")} == {"passed"}
    assert {v for m, v in statuses.items() if m not in ALL.split(" or ")} == {"not run"}
    passed = int(re.search(r"(\d+) passed", run.stdout).group(1))  # type: ignore[union-attr]
    assert summary["counts"]["passed"] == passed

    suite = ET.parse(d / "junit.xml").getroot()
    cases = list(suite.iter("testcase"))
    assert len(cases) == passed

    results = list((d / "allure-results").glob("*-result.json"))
    assert len(results) == passed
    for path in results:
        result = json.loads(path.read_text())
        assert {"uuid", "name", "status", "labels"} <= set(result)
        labels = {lab["name"]: lab["value"] for lab in result["labels"]}
        assert labels["epic"] == "runbook" and "feature" in labels and "severity" in labels
        for att in result.get("attachments", []):
            assert (d / "allure-results" / att["source"]).exists()
    props = (d / "allure-results" / "environment.properties").read_text()
    assert "marker.expression=" in props
    assert re.search(r"^server\.version=\d+", props, re.M), props  # preflight's, by role
    drill_results = [json.loads(p.read_text()) for p in results]
    drill = next(r for r in drill_results if r["name"] == "test_backup_restores_to_identical_tables")
    steps = [s["name"] for s in drill["steps"]]
    assert steps[0].startswith("dump and restore (2 jobs each) while hashing the source")
    assert steps[1] == "verify: canon-v1 hash of every table, source vs restored"
    assert any(a["name"] == "evidence" for a in drill["attachments"])

    record = (d / "drill-record.md").read_text()
    assert "- Post-deploy parity check: pass. Key checks: nodes/edges counts aligned" in record
    assert re.search(r"Canonical hash match: `[0-9a-f]{64}`", record)
    assert "`kb_entities=360/360`" in record
    assert re.search(r"Canonical parity hash match: blob and neon both `[0-9a-f]{64}`", record)
    assert "UTC" in record

    page = (d / "report.html").read_text()
    assert "Verdict: PASSED" in page and "<script" not in page and "http" not in page.split(
        "<body>")[0].replace("http-equiv", "")
    for marker in statuses:
        assert f"<b>{marker}</b>" in page
    assert "Gate failures" not in page

    # The run is sealed: its head is printed, in junit.xml, and vouches for every file.
    (head,) = HEAD.findall(run.stdout)
    (line,) = history.read_lines(reports / "history.jsonl")
    assert history.line_hash(line) == head
    assert seal.junit_heads((d / "junit.xml").read_bytes()) == [head]
    entry = json.loads(line)
    assert entry["allure_files"] == len(list((d / "allure-results").iterdir()))
    assert set(entry["artefacts"]) >= {"summary.json", "junit.xml", "drill-record.md",
                                       "report.html", "allure-results.sha256"}
    out = _cli("verify", "--reports-dir", str(reports), "--expect-head", head)
    assert out.returncode == 0, out.stdout


def test_failing_run_writes_reports_without_any_secret(sandbox: Sandbox, tmp_path: Path) -> None:
    canaries = {"ADMIN_PASSWORD": "canary-admin-31b7",
                "BLOB_READ_WRITE_TOKEN": "vercel_blob_rw_canary-token-9e0f"}
    env = sandbox.environ()
    assert sandbox.pg is not None
    good_pw = sandbox.pg.url().password or ""
    bad_url = env["DATABASE_URL"].replace(f":{good_pw}@", ":canary-dbpw-5d21@")
    reports = tmp_path / "reports"
    step_summary = tmp_path / "step-summary.md"
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", ALL,
                   f"--reports-dir={reports}", env=clean_env(
                       DATABASE_URL=bad_url, GITHUB_STEP_SUMMARY=str(step_summary), **canaries))
    assert run.code == 1
    d = only_run_dir(reports)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["verdict"] == "failed"
    assert {c["status"] for c in summary["checks"] if c["marker"] in ALL.split(" or ")
            } == {"failed"}
    everything = run.stdout + run.stderr + step_summary.read_text()
    for path in reports.rglob("*"):  # every artefact, Allure's and the history included
        if path.is_file():
            everything += path.read_text(errors="replace")
    for junit in tmp_path.glob("junit-*.xml"):  # the --junitxml the caller asked for
        everything += junit.read_text()
    assert "password authentication failed" in everything  # the failure is explained
    for secret in ("canary-admin-31b7", "canary-token-9e0f", "canary-dbpw-5d21", good_pw):
        assert secret not in everything, f"{secret[:8]}… leaked"


def test_xdist_run_has_one_report_directory_and_one_history_line(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = run_gate(tmp_path, "--sandbox", "-n", "2", f"--reports-dir={reports}",
                   env=clean_env(RUN_OPS_HEALTH="true"))
    assert run.code == 0, run.stdout[-2000:]
    d = only_run_dir(reports)
    assert len(history.read_lines(reports / "history.jsonl")) == 1
    summary = json.loads((d / "summary.json").read_text())
    passed = int(re.search(r"(\d+) passed", run.stdout).group(1))  # type: ignore[union-attr]
    assert summary["counts"] == {"passed": passed, "failed": 0, "error": 0, "skipped": 0,
                                 "interrupted": 0}
    assert summary["target_kind"] == "sandbox"
    assert len(list((d / "allure-results").glob("*-result.json"))) == passed
    # Sealed once, by the controller, after both workers wrote their Allure files.
    assert len((d / "allure-results.sha256").read_text().splitlines()) == len(
        list((d / "allure-results").iterdir()))
    (head,) = HEAD.findall(run.stdout)
    assert _cli("verify", "--reports-dir", str(reports), "--expect-head", head).returncode == 0


def test_no_reports_writes_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "--no-reports",
                   "--junitxml=", env=clean_env())
    assert run.code == 0
    assert not reports.exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return main_here(cli_main, ["reports", *args])


def _history(tmp_path: Path, n: int = 4) -> Path:
    """``n`` sealed runs (a summary and one Allure file each) chained in a history."""
    path = tmp_path / "history.jsonl"
    for i in range(n):
        run = tmp_path / "runs" / f"run-{i}"
        (run / "allure-results").mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"run_id": f"run-{i}"}) + "\n")
        (run / "allure-results" / f"{i}-result.json").write_text("{}")
        history.append(path, {"run_id": f"run-{i}", "verdict": "passed", "dir": f"runs/run-{i}",
                              **seal.seal(run)})
    return path


def test_history_verify_passes_untouched_and_names_the_broken_line(tmp_path: Path) -> None:
    path = _history(tmp_path)
    root = str(tmp_path)
    assert _cli("--reports-dir", root, "verify").returncode == 0
    original = path.read_text()
    lines = original.splitlines()

    edited = lines.copy()
    edited[1] = edited[1].replace('"passed"', '"failed"')
    path.write_text("\n".join(edited) + "\n")
    out = _cli("--reports-dir", root, "verify")
    assert out.returncode == 1 and "BROKEN at line 3 of 4" in out.stdout

    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # line 2 deleted
    out = _cli("--reports-dir", root, "verify")
    assert out.returncode == 1 and "BROKEN at line 2 of 3" in out.stdout

    path.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")  # swapped
    out = _cli("--reports-dir", root, "verify")
    assert out.returncode == 1 and "BROKEN at line 2 of 4" in out.stdout

    path.write_text(original)
    assert _cli("--reports-dir", root, "verify").returncode == 0
    assert _cli("verify", "--reports-dir", root).returncode == 0  # after the subcommand too

    path.write_text("\n".join(lines[:-1]) + "\n")  # the last line dropped: a valid chain
    out = _cli("verify", "--reports-dir", root)
    assert out.returncode == 0 and "runs/run-3 is not in the history" in out.stdout
    out = _cli("verify", "--reports-dir", root, "--expect-head", history.line_hash(lines[-1]))
    assert out.returncode == 1 and "no line of the history" in out.stdout


def test_verify_detects_an_edited_summary(sandbox: Sandbox, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", f"--reports-dir={reports}",
             env=clean_env())
    assert _cli("--reports-dir", str(reports), "verify").returncode == 0
    listing = _cli("--reports-dir", str(reports), "list")
    assert "passed" in listing.stdout
    shown = _cli("--reports-dir", str(reports), "show", "latest")
    assert "PASSED" in shown.stdout and "parity" in shown.stdout
    summary = only_run_dir(reports) / "summary.json"
    summary.write_text(summary.read_text().replace('"passed"', '"failed"', 1))
    out = _cli("--reports-dir", str(reports), "verify")
    assert out.returncode == 1 and "summary.json changed after the run" in out.stdout
    summary.unlink()
    out = _cli("verify", "--reports-dir", str(reports))
    assert out.returncode == 1
    assert f"run {summary.parent.name} (line 1): summary.json missing" in out.stdout


@pytest.mark.needs("chromium")
def test_report_html_renders_in_headless_chromium(sandbox: Sandbox, tmp_path: Path,
                                                  request: pytest.FixtureRequest) -> None:
    page = run_with_fault(sandbox, tmp_path, "api-dangling-edge") / "report.html"
    shot = tmp_path / "report.png"
    dom = render(page, shot, tmp_path / "profile", width=1200, height=1600)
    assert "Verdict: FAILED" in dom
    for marker in ("preflight", "parity", "ledger", "neon_drill", "blob_fallback",
                   "knowledge_drift", "health"):
        assert f"<b>{marker}</b>" in dom
    assert "ghost-node-404" in dom
    out_dir = ROOT / "tests" / "output"
    out_dir.mkdir(exist_ok=True)
    shutil.copy(shot, out_dir / "report-html-screenshot.png")


@pytest.mark.needs("node")  # for Allure 3 (opsgate does not need it)
@pytest.mark.npm(ALLURE)
def test_allure3_generates_a_report_from_the_results(sandbox: Sandbox, tmp_path: Path,
                                                     node_install: Callable[[], Path]) -> None:
    # Allure 3 from the run's one npm install (tests/node_packages.py), still running in
    # the background, maybe, while the gate run makes the results.
    results = run_with_fault(sandbox, tmp_path, "api-build-as-note") / "allure-results"
    node_packages = node_install()
    # As docs/reports.md says: in the run directory, where allurerc.json names the
    # report, its output folder, the categories and the history file of every run.
    run_dir = results.parent
    gen = subprocess.run([str(node_packages / "node_modules" / ".bin" / "allure"), "generate",
                          "allure-results"], cwd=run_dir, capture_output=True, text=True,
                         timeout=300)
    assert gen.returncode == 0, gen.stdout[-500:] + gen.stderr[-500:]
    out = run_dir / "allure-report"
    assert (out / "index.html").exists()
    report = json.loads((out / "summary.json").read_text())
    assert report["name"] == "opsgate release gate: sandbox"
    stats = report["stats"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert stats["total"] == len(list(results.glob("*-result.json"))) == sum(
        summary["counts"].values())
    assert stats["failed"] == 1
    assert (run_dir.parent.parent / "allure-history.jsonl").stat().st_size > 0
    (failed,) = [json.loads(p.read_text()) for p in (out / "data" / "test-results").glob(
        "*.json") if json.loads(p.read_text()).get("status") == "failed"]
    assert [c["name"] for c in failed["categories"]] == ["Data drift"]
    assert not any(s.get("name", "").endswith("<lambda>") or s.get("name") == "target_db"
                   for s in failed.get("setup", []) + failed.get("teardown", []))
