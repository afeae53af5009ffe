"""What CI and auditors read without help, from real gate runs on a sandbox of this
module's own (its data is damaged on purpose): the step summary, report.html's reasons
and evidence tables (also as Chromium renders them), history.html, JUnit's properties,
and Allure results that carry a title, categories and history and no pytest plumbing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from opsgate.reports import history
from opsgate.sandbox import Sandbox
from tests.browser import render
from tests.gate_helpers import ROOT, GateRun, run_gate_here
from tests.integration.test_reports import HEAD, clean_env
from tests.tools import CHROMIUM, require

pytestmark = pytest.mark.usefixtures("gate_in_process")

ALL = "preflight or parity or ledger or health or neon_drill or blob_fallback or knowledge_drift"
MARKERS = ALL.split(" or ")
#: What allure-pytest names internal fixtures and finalizers in its containers.
PLUMBING = re.compile(r'"name": ?"(_allure_labels|target_db|evidence|expectations|'
                      r'ops_settings|deployment|[a-z_]+::[^"]*|[^"]*<lambda>[^"]*)"')


def _gate(sandbox: Sandbox, tmp_path: Path, reports: Path, **env: str) -> GateRun:
    # The expectations file as a path relative to the project: messages name it, and the
    # screenshots committed under tests/output must show no path of the machine.
    return run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", ALL,
                         f"--reports-dir={reports}", env=clean_env(
                             OPSGATE_EXPECTATIONS_FILE="fixtures/expectations/sandbox.toml", **env))


def _runs(reports: Path) -> list[Path]:
    return sorted((reports / "runs").iterdir())


def _screenshot(page: Path, out: Path, tmp_path: Path, height: int = 900) -> str:
    """Chromium's DOM of ``page``; its top ``height`` pixels saved to ``out``."""
    shot = tmp_path / out.name
    dom = render(page, shot, tmp_path / "profile", height=height)
    out.parent.mkdir(exist_ok=True)
    shutil.copy(shot, out)
    return dom


def test_a_green_then_a_damaged_run_read_without_help(sandbox: Sandbox, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    green = _gate(sandbox, tmp_path, reports)
    assert green.code == 0, green.stdout[-3000:]
    (first,) = _runs(reports)
    # Allure 2 keeps its trend in the generated report's history/: as if it was generated.
    (first / "allure-report" / "history").mkdir(parents=True)
    (first / "allure-report" / "history" / "history-trend.json").write_text(
        '[{"data": {"passed": 19, "total": 19}}]')

    assert sandbox.pg is not None
    with sandbox.pg.connect("app") as conn:
        conn.execute("DELETE FROM kb_entity_sources")  # health's trend: emptied
        conn.execute("UPDATE kb_entities SET title = 'Renamed <b>&</b>' "
                     "WHERE id = (SELECT min(id) FROM kb_entities)")  # drift: old vs new
        conn.commit()
    sandbox.faults.set("api-missing-node")  # parity: one node fewer in the API
    step_summary = tmp_path / "step-summary.md"
    try:
        red = _gate(sandbox, tmp_path, reports, GITHUB_STEP_SUMMARY=str(step_summary))
    finally:
        sandbox.faults.clear()
    assert red.code == 1
    first_again, second = _runs(reports)
    assert first_again == first
    (head,) = HEAD.findall(red.stdout)
    lines = history.read_lines(reports / "history.jsonl")
    assert history.line_hash(lines[-1]) == head

    # -- the step summary: verdict, every check, the head --------------------------
    text = step_summary.read_text()
    assert "### opsgate release gate: FAILED" in text
    assert f"| history head | `{head}` |" in text
    for marker in MARKERS:
        assert re.search(rf"^\| {marker} \| (passed|failed) \| \d+ \| ", text, re.M), marker
    assert "| neon_drill | passed | 1 | tables 12/12 identical" in text
    assert "Why it failed:" in text and "kb_entity_sources was emptied: 578 rows" in text

    # -- report.html: reasons first, evidence as tables, its place in the history ----
    page = (second / "report.html").read_text()
    assert page.index("Why it failed") < page.index("<h2>Checks</h2>") < page.index(
        "<h2>Evidence</h2>")
    reasons = page[page.index("Why it failed"):page.index("<h2>Checks</h2>")]
    for failing in ("test_health::test_row_counts", "knowledge_drift", "parity"):
        assert failing.split("::")[-1] in reasons, failing
    assert "Renamed &lt;b&gt;&amp;&lt;/b&gt;" in page and "Renamed <b>" not in page
    assert "<th>source_rows</th><th>restored_rows</th><th>source_sha256</th>" in page
    assert "<h2 id='health-trend'>Health counts across runs</h2>" in page
    assert re.search(r"<tr class='badrow'><td><b>kb_entity_sources</b></td>", page)
    assert "<td>2 of <a href='../../history.html'>history.jsonl</a></td>" in page
    assert history.line_hash(lines[0]) in page  # the head before it
    assert '"source_rows":' not in page.split("as JSON")[0]  # tables before any JSON
    assert "<script" not in page

    history_page = (reports / "history.html").read_text()
    assert head in history_page and "<svg class='strip'" in history_page
    assert history_page.count("<rect ") == 2 and "#dc2626" in history_page

    # -- JUnit: a named suite with target, expression and head ----------------------
    suite = next(ET.parse(second / "junit.xml").getroot().iter("testsuite"))
    assert suite.get("name") == "opsgate release gate: sandbox"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["opsgate_target"] == "sandbox" and props["opsgate_marker_expression"] == ALL
    assert props["opsgate_history_head"] == head and props["opsgate_verdict"] == "failed"

    # -- Allure: title, categories, history carried over, no fixtures ---------------
    results = second / "allure-results"
    executor = json.loads((results / "executor.json").read_text())
    assert executor["reportName"] == "opsgate release gate: sandbox"
    categories = {c["name"]: re.compile(c["messageRegex"].replace("(?s)", ""), re.S)
                  for c in json.loads((results / "categories.json").read_text())}
    failed = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    failed = [r for r in failed if r["status"] in ("failed", "broken")]
    assert failed
    for r in failed:  # every failure of this run falls in a category, not "Product defects"
        message = r["statusDetails"]["message"]
        assert any(rx.fullmatch(message) for rx in categories.values()), message[:200]
    assert (results / "history" / "history-trend.json").exists()
    assert json.loads((second / "allurerc.json").read_text())["name"] == (
        "opsgate release gate: sandbox")
    for path in results.glob("*-container.json"):
        assert not PLUMBING.search(path.read_text()), path.read_text()[:500]
    assert subprocess.run(
        [sys.executable, "-m", "opsgate.cli", "reports", "verify", "--reports-dir", str(reports),
         "--expect-head", head], capture_output=True, cwd=ROOT).returncode == 0

    require(CHROMIUM)  # for the screenshots
    out = ROOT / "tests" / "output"
    dom = _screenshot(second / "report.html", out / "report-html-failing.png", tmp_path)
    assert "Why it failed" in dom and "kb_entity_sources was emptied" in dom
    assert str(ROOT) not in dom.split("<h2>Checks</h2>")[0]  # the first screen
    # Below it: the checks' figures, the run's place in the history, health's trend
    # (the emptied table in red) and the first checks' evidence as tables.
    _screenshot(second / "report.html", out / "report-html-failing-evidence.png", tmp_path,
                height=4200)
    dom = _screenshot(first / "report.html", out / "report-html-passing.png", tmp_path)
    assert "Verdict: PASSED" in dom
    _screenshot(reports / "history.html", out / "history-html.png", tmp_path)
