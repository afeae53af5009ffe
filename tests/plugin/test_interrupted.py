"""A gate run stopped before its checks finished says so in every artefact.

The gate runs as a real process in an isolated project; a check waits until the test
sends the signal (it writes a file when it has started, so the signal lands inside it,
not by the clock), and every report the run leaves is read back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from opsgate import cli
from opsgate.clients.contracts import schema
from tests.gate_helpers import gate_project, main_here

CHECKS = """
import os
import pathlib
import time

import pytest


@pytest.mark.preflight
def test_preflight_passes():
    pass


@pytest.mark.neon_drill
def test_backup_restores_to_identical_tables():
    pathlib.Path(os.environ["STARTED_FILE"]).write_text("started")
    time.sleep(60)  # stopped by the test's signal long before this ends


@pytest.mark.ledger
def test_ledger_after_the_drill():
    pass
"""

ENV = {
    "DATABASE_URL": "postgresql://u:pw@127.0.0.1:9/db",
    "OPS_BASE_URL": "http://127.0.0.1:9",
    "ADMIN_PASSWORD": "pw-for-tests",
}


def _stopped_run(pytester: pytest.Pytester, sig: signal.Signals, *args: str,
                 checks: str = CHECKS) -> tuple[int, str, Path]:
    gate_project(pytester, checks)
    started = pytester.path / "started"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUN_OPS_", "PYTEST_", "OPSGATE_", "GITHUB_"))}
    env.update(ENV, STARTED_FILE=str(started),
               GITHUB_STEP_SUMMARY=str(pytester.path / "step-summary.md"))
    reports = pytester.path / "reports"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         f"--reports-dir={reports}", "-m", "preflight or neon_drill or ledger", *args],
        cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
        # A runner started in the background without job control ignores SIGINT, and a
        # child inherits that: the gate gets SIGINT as a terminal would deliver it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the check never started"
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 7.5, "the gate took longer than CI's grace period"
    (run,) = (reports / "runs").iterdir()
    return proc.returncode, out, run


def _summary(run: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run / "summary.json").read_text())
    jsonschema.Draft202012Validator(schema("report-summary")).validate(summary)
    return summary


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stopped_drill_is_interrupted_in_every_artefact(
        pytester: pytest.Pytester, sig: signal.Signals) -> None:
    code, out, run = _stopped_run(pytester, sig)
    assert code == pytest.ExitCode.INTERRUPTED, out
    assert f"opsgate: INTERRUPTED: interrupted by {sig.name} during" in out, out

    s = _summary(run)
    assert s["verdict"] == "interrupted"
    assert s["interruption"] == {
        "by": sig.name,
        "running": ["checks/test_all.py::test_backup_restores_to_identical_tables"],
        "not_started": ["checks/test_all.py::test_ledger_after_the_drill"]}
    status = {c["marker"]: c["status"] for c in s["checks"]}
    assert (status["preflight"], status["neon_drill"], status["ledger"]) == (
        "passed", "interrupted", "interrupted")
    assert s["counts"]["passed"] == 1 and s["counts"]["interrupted"] == 2, s["counts"]
    drill = next(c for c in s["checks"] if c["marker"] == "neon_drill")["tests"][0]
    assert drill["outcome"] == "interrupted"
    assert drill["message"] == (f"interrupted by {sig.name} while it ran; its verdict was "
                                "never reached")
    assert any(n.startswith(f"interrupted by {sig.name} during") for n in s["notes"])

    cases = {c.get("name"): c for c in ET.parse(run / "junit.xml").getroot().iter("testcase")}
    assert cases["test_preflight_passes"].find("error") is None
    for name in ("test_backup_restores_to_identical_tables", "test_ledger_after_the_drill"):
        error = cases[name].find("error")
        assert error is not None and error.get("type") == "interrupted", name
        assert sig.name in (error.get("message") or "")

    # allure-pytest wrote the stopped drill "passed" and nothing for the ledger test.
    results = [json.loads(p.read_text()) for p in (run / "allure-results").glob("*-result.json")]
    allure = {r["name"]: r for r in results}
    assert sorted(allure) == ["test_backup_restores_to_identical_tables",
                              "test_ledger_after_the_drill", "test_preflight_passes"], allure
    assert allure["test_preflight_passes"]["status"] == "passed"
    for name in ("test_backup_restores_to_identical_tables", "test_ledger_after_the_drill"):
        assert allure[name]["status"] == "broken", allure[name]
        assert allure[name]["statusDetails"]["message"].startswith(f"interrupted by {sig.name}")
    assert allure["test_ledger_after_the_drill"]["fullName"] == (
        allure["test_preflight_passes"]["fullName"].replace("preflight_passes",
                                                            "ledger_after_the_drill"))

    record = (run / "drill-record.md").read_text()
    assert "verified drill record" not in record.lower().replace("not verified", "")
    assert "Neon backup/restore drill: INTERRUPTED" in record
    assert "drill: pass" not in record

    page = (run / "report.html").read_text()
    assert f"interrupted by {sig.name} during" in page
    assert "Why it failed</b> (0 causes)" not in page

    history = [json.loads(line) for line in
               (run.parent.parent / "history.jsonl").read_text().splitlines()]
    assert history[-1]["verdict"] == "interrupted"
    assert any(sig.name in n for n in history[-1]["notes"])
    assert f"interrupted by {sig.name}" in (run.parent.parent / "history.html").read_text()

    step = (run.parent.parent.parent / "step-summary.md").read_text()
    assert "### opsgate release gate: INTERRUPTED" in step, step
    assert "| interrupted checks | ledger, neon_drill |" in step, step
    assert f"interrupted by {sig.name} during" in step, step

    listed = main_here(cli.main, ["reports", "list", f"--reports-dir={run.parent.parent}"]
                       ).stdout
    assert "interrupted" in listed.splitlines()[1], listed
    assert f"gate: interrupted by {sig.name} during" in listed, listed


def test_maxfail_leaves_the_checks_after_it_interrupted(pytester: pytest.Pytester) -> None:
    gate_project(pytester, CHECKS.replace("def test_preflight_passes():\n    pass",
                                          "def test_preflight_passes():\n    assert False"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUN_OPS_", "PYTEST_", "OPSGATE_", "GITHUB_"))}
    env.update(ENV, STARTED_FILE=str(pytester.path / "started"))
    reports = pytester.path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x",
         f"--reports-dir={reports}", "-m", "preflight or neon_drill or ledger"],
        cwd=pytester.path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout
    (run,) = (reports / "runs").iterdir()
    s = _summary(run)
    assert s["verdict"] == "interrupted"
    assert s["interruption"]["by"].startswith("-x/--maxfail")
    assert s["interruption"]["running"] == []
    assert len(s["interruption"]["not_started"]) == 2
    status = {c["marker"]: c["status"] for c in s["checks"]}
    assert (status["preflight"], status["neon_drill"], status["ledger"]) == (
        "failed", "interrupted", "interrupted")
    assert not (pytester.path / "started").exists()


#: Holds the run inside collection (after the tests are collected, before the
#: selection): where a signal 1 s into a run lands.
SLOW_COLLECTION = """
import os
import pathlib
import time

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    pathlib.Path(os.environ["STARTED_FILE"]).write_text("collecting")
    time.sleep(60)
"""


def test_a_run_stopped_while_it_collects_names_no_check_interrupted(
        pytester: pytest.Pytester) -> None:
    """Stopped before the selection was made, a run knows of no selected test: no check
    is recorded as interrupted (nor one the marker expression would have left out),
    and the verdict still says the run was interrupted."""
    pytester.makeconftest(SLOW_COLLECTION)
    code, out, run = _stopped_run(pytester, signal.SIGTERM)
    assert code == pytest.ExitCode.INTERRUPTED, out
    s = _summary(run)
    assert s["verdict"] == "interrupted"
    assert s["interruption"] == {"by": "SIGTERM", "running": [], "not_started": []}
    assert {c["status"] for c in s["checks"]} == {"not run"}, s["checks"]
    assert "interrupted by SIGTERM before any selected test started" in s["notes"]


#: Holds the run in the session's start (after the run's folder was made, before
#: ``pytest_sessionstart`` returns): a stop there used to end the run with no
#: ``pytest_sessionfinish``, so no report, no history line and an orphan folder.
SLOW_SESSION_START = """
import os
import pathlib
import time


def pytest_sessionstart(session):
    pathlib.Path(os.environ["STARTED_FILE"]).write_text("starting")
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_run_stopped_before_its_session_started_is_recorded(
        pytester: pytest.Pytester, sig: signal.Signals) -> None:
    pytester.makeconftest(SLOW_SESSION_START)
    code, out, run = _stopped_run(pytester, sig)
    assert code == pytest.ExitCode.INTERRUPTED, out
    assert f"opsgate: INTERRUPTED: interrupted by {sig.name} before any" in out, out
    s = _summary(run)
    assert s["verdict"] == "interrupted"
    assert s["interruption"] == {"by": sig.name, "running": [], "not_started": []}
    assert {c["status"] for c in s["checks"]} == {"not run"}, s["checks"]
    verified = main_here(cli.main, ["reports", "verify",
                                    f"--reports-dir={run.parent.parent}"])
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_run_refused_after_its_folder_was_made_leaves_none(
        pytester: pytest.Pytester) -> None:
    """A later plugin's usage error (here the project's conftest, whose configure runs
    after the gate's): no run, so no run folder."""
    gate_project(pytester, CHECKS)
    pytester.makeconftest("import pytest\n\ndef pytest_configure(config):\n"
                          "    raise pytest.UsageError('the project says no')\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUN_OPS_", "PYTEST_", "OPSGATE_", "GITHUB_"))}
    env.update(ENV)
    reports = pytester.path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
         f"--reports-dir={reports}", "-m", "preflight"],
        cwd=pytester.path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "the project says no" in proc.stderr
    assert list((reports / "runs").iterdir()) == []


#: The drill's set-up waits for the signal: a stop there lands in the test, not between
#: two tests.
SLOW_SET_UP = CHECKS.replace(
    "@pytest.mark.neon_drill\ndef test_backup_restores_to_identical_tables():\n"
    "    pathlib.Path(os.environ[\"STARTED_FILE\"]).write_text(\"started\")\n",
    "@pytest.fixture\ndef slow():\n"
    "    pathlib.Path(os.environ[\"STARTED_FILE\"]).write_text(\"setting up\")\n"
    "    time.sleep(60)\n\n\n"
    "@pytest.mark.neon_drill\ndef test_backup_restores_to_identical_tables(slow):\n")


def test_a_stop_in_a_tests_set_up_is_during_that_test(pytester: pytest.Pytester) -> None:
    assert SLOW_SET_UP != CHECKS
    code, out, run = _stopped_run(pytester, signal.SIGINT, checks=SLOW_SET_UP)
    assert code == pytest.ExitCode.INTERRUPTED, out
    s = _summary(run)
    assert s["interruption"] == {
        "by": "SIGINT",
        "running": ["checks/test_all.py::test_backup_restores_to_identical_tables"],
        "not_started": ["checks/test_all.py::test_ledger_after_the_drill"]}, s["interruption"]
    assert "interrupted by SIGINT during" in out, out[-2000:]


#: Every check passes; the session's tear-down (after the last test's call) waits for the
#: signal.
SLOW_END = """
import os
import pathlib
import time

import pytest


@pytest.fixture(scope="session")
def slow_end():
    yield
    pathlib.Path(os.environ["STARTED_FILE"]).write_text("ending")
    time.sleep(60)


@pytest.mark.preflight
def test_preflight_passes(slow_end):
    pass


@pytest.mark.neon_drill
def test_backup_restores_to_identical_tables(slow_end):
    pass


@pytest.mark.ledger
def test_ledger_after_the_drill(slow_end):
    pass
"""


def test_a_stop_after_every_check_finished_keeps_the_checks_verdict(
        pytester: pytest.Pytester) -> None:
    """A stop in the last test's tear-down: pytest says "interrupted" (exit 2), and the
    run read as failed with no reason. Every check had passed: the verdict is theirs,
    with a note, and the run is recorded whole."""
    code, out, run = _stopped_run(pytester, signal.SIGINT, checks=SLOW_END)
    assert code == pytest.ExitCode.INTERRUPTED, out
    s = _summary(run)
    assert (s["verdict"], s["interruption"]) == ("passed", None), s
    assert ("stopped by SIGINT after every selected test had finished: the verdict is "
            "what the checks found") in s["notes"], s["notes"]
    history = (run.parent.parent / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["verdict"] == "passed"


#: The session's end (after the checks, before the reports are written) waits a moment,
#: where the signal lands.
SLOW_SESSION_END = """
import os
import pathlib
import time


def pytest_sessionfinish(session):
    pathlib.Path(os.environ["STARTED_FILE"]).write_text("finishing")
    time.sleep(1.5)
"""


def test_a_stop_as_the_session_ends_is_held_until_the_reports_are_written(
        pytester: pytest.Pytester) -> None:
    """A stop there cut pytest's junit.xml writing short (an empty file) and with it
    the run's history line. Held now: the session ends as it would have."""
    pytester.makeconftest(SLOW_SESSION_END)
    code, out, run = _stopped_run(pytester, signal.SIGINT,
                                  checks=SLOW_END.replace("time.sleep(60)", "pass"))
    assert code == pytest.ExitCode.OK, out
    s = _summary(run)
    assert s["verdict"] == "passed", s
    assert ET.parse(run / "junit.xml").getroot().iter("testcase")
    assert json.loads((run.parent.parent / "history.jsonl").read_text().splitlines()[-1])[
        "run_id"] == run.name
