"""A failing gate shows each failure as one line, the check's message: the example in
docs/configuration.md ("Failure output") is held against a real run's terminal, and the
JUnit and summary messages carry the same line."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from opsgate.sandbox import Sandbox
from tests.gate_helpers import ROOT, clean_env, run_gate_here

pytestmark = pytest.mark.usefixtures("gate_in_process")

#: What a one-line failure must never show (pytest's rewriting, reprs, opsgate's paths).
NOISE = ("assert ", "+  where", "Failed: ", "opsgate/pytest_plugin", "Traceback", "E   ")


def documented_example() -> list[str]:
    """The fenced example of the "Failure output" section, line by line."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text.split("## Failure output", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block is not None, "docs/configuration.md: Failure output has no example"
    return block.group(1).splitlines()


def section(stdout: str, title: str) -> list[str]:
    """The lines of pytest's ``= title =`` section, its heading included, up to the next
    separator (pytest's ``-`` and ``=`` lines)."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.fullmatch(rf"=+ {title} =+", ln))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("=", "-")))
    return lines[start:end]


def test_the_documented_failure_output_is_the_terminal_output(sandbox: Sandbox,
                                                              tmp_path: Path) -> None:
    sandbox.faults.set("overview-count-off-by-one")
    try:
        run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m",
                            "preflight or parity", f"--reports-dir={tmp_path / 'reports'}",
                            env=clean_env(ADMIN_STORAGE_BACKEND="blob"))
    finally:
        sandbox.faults.clear()
    assert run.code == 1, run.stdout[-3000:]
    shown = section(run.stdout, "FAILURES")
    assert shown == documented_example(), "\n".join(shown)
    assert not [ln for ln in run.stdout.splitlines() if any(n in ln for n in NOISE)]

    # JUnit and summary.json: the message of each line, without its location.
    lines = {ln.split(": ", 1)[0]: ln.split(": ", 1)[1] for ln in shown[1:]}
    junit = sorted((tmp_path / "reports").glob("runs/*/junit.xml"))
    summary = sorted((tmp_path / "reports").glob("runs/*/summary.json"))
    assert len(junit) == len(summary) == 1
    failures = {case.get("name"): case.find("failure")
                for case in ET.parse(junit[0]).getroot().iter("testcase")}
    junit_messages = sorted(f.get("message", "") for f in failures.values() if f is not None)
    summary_messages = sorted(
        t["message"] for c in json.loads(summary[0].read_text())["checks"]
        for t in c["tests"] if t["outcome"] == "failed")
    assert junit_messages == summary_messages == sorted(lines.values())


def test_a_database_that_does_not_answer_is_one_line_per_test(sandbox: Sandbox,
                                                              tmp_path: Path) -> None:
    """The fixture that connects fails; the line names the check module, not the
    fixture's."""
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", "preflight",
                        "--no-reports",
                        env=clean_env(DATABASE_URL="postgresql://u:p@127.0.0.1:9/none"))
    assert run.code == 1
    errors = section(run.stdout, "ERRORS")[1:]
    headings = [ln for ln in errors if "ERROR at setup of" in ln]
    lines = [ln for ln in errors if ln not in headings]
    assert len(headings) == len(lines) == 3, "\n".join(errors)
    assert all(re.match(r"checks/test_preflight\.py:\d+: cannot connect to "
                        r"postgresql://u:\*\*\*@127\.0\.0\.1:9/none", ln) for ln in lines), lines
    assert not [ln for ln in run.stdout.splitlines() if any(n in ln for n in NOISE)]


def why_it_failed(reports: Path) -> str:
    (page,) = reports.glob("runs/*/report.html")
    text = page.read_text(encoding="utf-8")
    return text[text.index("Why it failed"):text.index("<h2>Checks</h2>")]


def test_a_database_that_does_not_answer_is_one_cause_in_the_report(sandbox: Sandbox,
                                                                    tmp_path: Path) -> None:
    """Every check that reads the database fails; the first says why, the others that
    they did not try again: one entry in "Why it failed", naming each check."""
    reports = tmp_path / "reports"
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m",
                        "preflight or parity or ledger or health", f"--reports-dir={reports}",
                        env=clean_env(DATABASE_URL="postgresql://u:p@127.0.0.1:9/none"))
    assert run.code == 1
    why = why_it_failed(reports)
    assert why.count("<li>") == 1, why
    assert why.count("cannot connect to postgresql://u:***@127.0.0.1:9/none") == 1, why
    for marker in ("preflight", "parity", "ledger", "health"):
        assert f"<b>{marker}</b> · " in why, (marker, why)
