"""`opsgate reports list` and `show` as an auditor reads them: the newest run first under
named columns, and a summary.json that its history line does not vouch for is shown
with a warning naming it and both hashes (run through pytester, no database)."""

from __future__ import annotations

import json

import pytest

from opsgate.cli import main as opsgate_main
from opsgate.reports import history, seal
from tests.gate_helpers import gate_project
from tests.plugin.test_history_seal import CHECKS, ENV, run_dirs


@pytest.fixture
def gate(pytester: pytest.Pytester, clean_env: pytest.MonkeyPatch) -> pytest.Pytester:
    gate_project(pytester, CHECKS)
    for k, v in ENV.items():
        clean_env.setenv(k, v)
    return pytester


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = opsgate_main(["reports", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_the_newest_run_first_under_column_names(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    gate.runpytest()
    gate.runpytest("-m", "preflight")
    reports = gate.path / "reports"
    ids = [e["run_id"] for e in history.entries(reports / "history.jsonl")]
    assert len(ids) == 2
    code, out, _ = _cli(capsys, "list", "--reports-dir", str(reports))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["run", "verdict", "kind", "tests", "marker", "expression"]
    assert [r.split()[0] for r in rows] == [ids[1], ids[0]], out
    assert rows[0].split()[1] == "passed" and rows[1].split()[1] == "failed", out
    code, out, _ = _cli(capsys, "list", "-n", "1", "--reports-dir", str(reports))
    assert [r.split()[0] for r in out.splitlines()[1:]] == [ids[1]], out


def test_show_warns_when_summary_json_is_not_the_one_the_history_lists(
        gate: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    gate.runpytest()
    reports = gate.path / "reports"
    (run,) = run_dirs(reports)
    summary = run / "summary.json"
    listed = seal.sha256_file(summary)
    code, out, err = _cli(capsys, "show", "latest", "--reports-dir", str(reports))
    assert code == 0 and "WARNING" not in out + err, out + err

    summary.write_text(summary.read_text().replace('"failed"', '"passed"'))
    edited = seal.sha256_file(summary)
    code, out, err = _cli(capsys, "show", "latest", "--reports-dir", str(reports))
    assert code == 1, out
    (warning,) = [ln for ln in out.splitlines() if "WARNING" in ln]
    assert str(summary) in warning and edited in warning and listed in warning, warning
    assert out.splitlines()[0] == warning  # before anything the file claims

    code, out, err = _cli(capsys, "show", "latest", "--json", "--reports-dir", str(reports))
    assert code == 1
    assert json.loads(out)["verdict"] == "passed"  # stdout stays the document
    assert edited in err and listed in err and str(summary) in err, err
