"""A run's history line vouches for every artefact of the run, and its head leaves the
machine: tampering with a run's files, or dropping lines from the end of the history,
is detected by ``opsgate reports verify`` (run through pytester, no database)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from opsgate.cli import main as opsgate_main
from opsgate.reports import history, seal
from tests.gate_helpers import gate_project

ENV = {
    "DATABASE_URL": "postgresql://u:pw-seal-tests@127.0.0.1:9/db",
    "OPS_BASE_URL": "http://127.0.0.1:9",
    "ADMIN_PASSWORD": "admin-seal-tests",
}

CHECKS = """
import pytest

class Version:
    def as_json(self):
        return {"server_version": "17.0"}

@pytest.mark.preflight
def test_preflight(evidence):
    evidence.set(Version())

@pytest.mark.parity
def test_parity():
    assert 1 == 2, "parity differs"

@pytest.mark.ledger
def test_ledger():
    pass
"""

HEAD_LINE = re.compile(r"^opsgate: history head ([0-9a-f]{64})$", re.M)


@pytest.fixture
def gate(pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> pytest.Pytester:
    gate_project(pytester, CHECKS)
    for k, v in ENV.items():
        clean_env.setenv(k, v)
    clean_env.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return pytester


def verify(reports: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = opsgate_main(["reports", "verify", "--reports-dir", str(reports), *args])
    return code, capsys.readouterr().out


def run_dirs(reports: Path) -> list[Path]:
    return sorted((reports / "runs").iterdir())


def test_each_run_prints_its_head_into_terminal_junit_and_history(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    heads = []
    for _ in range(2):
        result = gate.runpytest()
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        found = HEAD_LINE.findall(result.stdout.str())
        assert len(found) == 1, result.stdout.str()[-2000:]
        heads.append(found[0])
    reports = gate.path / "reports"
    lines = history.read_lines(reports / "history.jsonl")
    assert [history.line_hash(ln) for ln in lines] == heads
    for line, d in zip(lines, run_dirs(reports), strict=True):
        entry = json.loads(line)
        assert entry["dir"] == f"runs/{d.name}"
        assert set(entry["artefacts"]) == {
            "summary.json", "junit.xml", "drill-record.md", "report.html",
            "allure-results/environment.properties", "allure-results.sha256", "allurerc.json"}
        listed = (d / "allure-results.sha256").read_text().splitlines()
        assert len(listed) == entry["allure_files"] == len(list((d / "allure-results").iterdir()))
        assert any(ln.endswith("-result.json") for ln in listed)
        assert seal.junit_heads((d / "junit.xml").read_bytes()) == [history.line_hash(line)]
    code, out = verify(reports, "--expect-head", heads[-1], capsys=capsys)
    assert code == 0, out
    assert f"history intact (2 runs, every listed artefact unchanged); head {heads[-1]}" in out


def test_options_work_after_the_subcommand_and_before_it(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate.runpytest()
    monkeypatch.chdir(gate.path.parent)  # so the default ./reports is not this one
    where = str(gate.path / "reports")
    for argv in (["reports", "--reports-dir", where, "verify"],
                 ["reports", "verify", "--reports-dir", where],
                 ["reports", "list", f"--reports-dir={where}"],
                 ["reports", "show", "latest", "--reports-dir", where]):
        assert opsgate_main(argv) == 0, argv
    assert opsgate_main(["reports", "verify", "--reports-dir", str(gate.path / "none")]) == 2
    assert opsgate_main(["reports", "verify", "--reports-dir", where,
                         "--expect-head", "not-a-hash"]) == 2
    with pytest.raises(SystemExit) as exc:
        opsgate_main(["reports", "verify", "--no-such-option"])
    assert exc.value.code == 2


def _fresh(gate: pytest.Pytester) -> tuple[Path, Path, str]:
    result = gate.runpytest()
    (head,) = HEAD_LINE.findall(result.stdout.str())
    reports = gate.path / "reports"
    return reports, run_dirs(reports)[-1], head


def _first_result(d: Path) -> Path:
    return sorted((d / "allure-results").glob("*-result.json"))[0]


TAMPER: dict[str, tuple[Callable[[Path], object], str]] = {
    "summary deleted": (lambda d: (d / "summary.json").unlink(), "summary.json missing"),
    "summary edited": (lambda d: (d / "summary.json").write_text(
        (d / "summary.json").read_text().replace('"failed"', '"passed"')),
        "summary.json changed after the run"),
    "report.html edited": (lambda d: (d / "report.html").write_text(
        (d / "report.html").read_text().replace("FAILED", "PASSED")),
        "report.html changed after the run"),
    "drill record deleted": (lambda d: (d / "drill-record.md").unlink(),
                             "drill-record.md missing"),
    "junit edited": (lambda d: (d / "junit.xml").write_text(
        (d / "junit.xml").read_text().replace("parity differs", "all fine")),
        "junit.xml changed after the run"),
    "junit head replaced": (lambda d: (d / "junit.xml").write_bytes(re.sub(
        rb'(opsgate_history_head" value=")[0-9a-f]{64}', rb"\g<1>" + b"a" * 64,
        (d / "junit.xml").read_bytes())), "junit.xml opsgate_history_head is aaaa"),
    "environment.properties edited": (lambda d: (
        d / "allure-results" / "environment.properties").write_text("target.name=other\n"),
        "allure-results/environment.properties changed after the run"),
    "allure result deleted": (lambda d: _first_result(d).unlink(), "-result.json missing"),
    "allure result edited": (lambda d: _first_result(d).write_text(
        _first_result(d).read_text().replace('"status": "', '"status": "x')),
        "-result.json changed after the run"),
    "allure result added": (lambda d: (d / "allure-results" / "forged-result.json").write_text(
        "{}"), "allure-results/forged-result.json added after the run"),
    "file added to the run": (lambda d: (d / "extra.txt").write_text("x"),
                              "extra.txt added after the run"),
    "manifest deleted": (lambda d: (d / "allure-results.sha256").unlink(),
                         "allure-results.sha256 missing"),
    "manifest rewritten to match an edit": (lambda d: (
        _first_result(d).write_text("{}"),
        (d / "allure-results.sha256").write_text(seal.manifest_text(d))),
        "allure-results.sha256 changed after the run"),
    "run directory deleted": (lambda d: shutil.rmtree(d), "run directory"),
}


@pytest.mark.parametrize("how", TAMPER, ids=list(TAMPER))
def test_verify_names_the_run_and_the_file_that_changed(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str], how: str) -> None:
    reports, d, head = _fresh(gate)
    assert verify(reports, "--expect-head", head, capsys=capsys)[0] == 0
    tamper, expected = TAMPER[how]
    tamper(d)
    code, out = verify(reports, capsys=capsys)
    assert code == 1, out
    assert f"run {d.name} (line 1): " in out and expected in out, out


def test_dropping_the_last_line_needs_the_head_to_be_detected(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    gate.runpytest()
    reports, last_dir, head = _fresh(gate)
    path = reports / "history.jsonl"
    lines = history.read_lines(path)
    path.write_text(lines[0] + "\n")
    # The chain of what is left is intact: only the head kept elsewhere tells.
    code, out = verify(reports, capsys=capsys)
    assert code == 0 and f"runs/{last_dir.name} is not in the history" in out
    code, out = verify(reports, "--expect-head", head, capsys=capsys)
    assert code == 1
    assert f"{head} is no line of the history: lines were dropped from its end" in out

    shutil.rmtree(last_dir)  # the line and its run both gone: still the head tells
    assert verify(reports, "--expect-head", head, capsys=capsys)[0] == 1
    path.unlink()
    shutil.rmtree(reports / "runs")
    code, out = verify(reports, "--expect-head", head, capsys=capsys)
    assert code == 1 and "history MISSING" in out
    assert verify(reports, capsys=capsys)[0] == 2  # without a head: nothing to verify


def test_an_older_head_names_how_many_lines_came_after_it(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    _reports, _d, first = _fresh(gate)
    reports, _d, _second = _fresh(gate)
    code, out = verify(reports, "--expect-head", first, capsys=capsys)
    assert code == 1 and "which is line 1: 1 line(s) added after it" in out


def test_junitxml_elsewhere_gets_the_head_and_a_copy_in_the_run(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    junit = gate.path / "ci" / "junit.xml"
    result = gate.runpytest(f"--junitxml={junit}")
    (head,) = HEAD_LINE.findall(result.stdout.str())
    (d,) = run_dirs(gate.path / "reports")
    assert seal.junit_heads(junit.read_bytes()) == [head]
    assert (d / "junit.xml").read_bytes() == junit.read_bytes()
    assert verify(gate.path / "reports", "--expect-head", head, capsys=capsys)[0] == 0


def test_xdist_run_is_sealed_once_after_its_workers(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    result = gate.runpytest_subprocess("-n", "2")
    (head,) = HEAD_LINE.findall(result.stdout.str())
    reports = gate.path / "reports"
    (d,) = run_dirs(reports)
    assert len(list((d / "allure-results").glob("*-result.json"))) == 3
    assert verify(reports, "--expect-head", head, capsys=capsys)[0] == 0


def test_github_step_summary_gets_verdict_counts_and_head(
        gate: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> None:
    summary = gate.path / "step-summary.md"
    summary.write_text("earlier step\n")
    clean_env.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = gate.runpytest()
    (head,) = HEAD_LINE.findall(result.stdout.str())
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, never overwritten
    assert "### opsgate release gate: FAILED" in text
    assert "| target | environment `127.0.0.1` |" in text
    assert "| marker expression | `preflight or parity or ledger` (RUN_OPS_* flags) |" in text
    assert "| tests | passed 2, failed 1, error 0, skipped 0, interrupted 0 |" in text
    assert "| failed checks | parity |" in text
    assert f"| history head | `{head}` |" in text
    assert f"opsgate reports verify --reports-dir reports --expect-head {head}" in text
    # every check with its status, and why the red one is red
    assert "| preflight | passed | 1 | - |" in text and "| ledger | passed | 1 | - |" in text
    assert "| parity | failed | 1 | - |" in text and "| health | not run | 0 | - |" in text
    assert "- **parity** `test_parity` failed: AssertionError: parity differs" in text


def test_gate_failures_are_in_every_report(
        gate: pytest.Pytester, clean_env: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    summary = gate.path / "step-summary.md"
    clean_env.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = gate.runpytest("-m", "health and not health")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    reports = gate.path / "reports"
    (d,) = run_dirs(reports)
    (note,) = json.loads((d / "summary.json").read_text())["notes"]
    assert note == ("no check ran (selection: health and not health); a gate that checks "
                    "nothing does not pass")
    # One sentence, built once: the terminal says what the reports say.
    assert f"opsgate: FAILED: {note}" in result.stdout.str()
    page = (d / "report.html").read_text()
    assert "Gate failures" in page and "<li>no check ran (selection: " in page
    assert "- Gate failure: no check ran" in (d / "drill-record.md").read_text()
    assert "- no check ran" in summary.read_text()
    capsys.readouterr()
    assert opsgate_main(["reports", "show", "latest", "--reports-dir", str(reports)]) == 0
    shown = capsys.readouterr().out
    assert "FAILED" in shown and "gate FAILED: no check ran" in shown
    assert opsgate_main(["reports", "list", "--reports-dir", str(reports)]) == 0
    assert "gate: no check ran" in capsys.readouterr().out


def test_flags_whose_check_did_not_run_are_in_every_report(
        gate: pytest.Pytester, clean_env: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("RUN_OPS_NEON_DRILL", "true")
    result = gate.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    (d,) = run_dirs(gate.path / "reports")
    note = "flags on but their check did not run: RUN_OPS_NEON_DRILL (neon_drill)"
    assert note in json.loads((d / "summary.json").read_text())["notes"]
    assert note in (d / "report.html").read_text()
    assert f"- Gate failure: {note}" in (d / "drill-record.md").read_text()
    capsys.readouterr()
    opsgate_main(["reports", "show", "latest", "--reports-dir", str(gate.path / "reports")])
    assert f"gate FAILED: {note}" in capsys.readouterr().out


def test_an_allure_report_generated_into_the_run_is_not_an_artefact(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    reports, d, head = _fresh(gate)
    (d / "allure-report").mkdir()
    (d / "allure-report" / "index.html").write_text("<html></html>")
    assert verify(reports, "--expect-head", head, capsys=capsys)[0] == 0
