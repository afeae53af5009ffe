"""What report.html and history.html say must be true of the run: "TLS" beside the
drill's client tools only when its connections used TLS, and no placeholder where a
command needs a value (the sandbox's plain profile: no TLS)."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from opsgate.reports import history
from opsgate.sandbox import Sandbox
from tests.gate_helpers import clean_env, run_gate_here

pytestmark = pytest.mark.usefixtures("gate_in_process")


def test_report_pages_say_tls_only_for_tls_and_give_real_heads(
        sandbox: Sandbox, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", "neon_drill",
                        f"--reports-dir={reports}", env=clean_env())
    assert run.code == 0, run.stdout[-2000:]
    (run_dir,) = (reports / "runs").iterdir()
    page = html.unescape((run_dir / "report.html").read_text())
    tools = [ln for ln in page.split("<tr>") if "client_tools" in ln]
    assert tools and all("no TLS on the connection" in t for t in tools), tools
    assert ", TLS)" not in page
    # Where the copy was restored: the default, a throwaway local PostgreSQL.
    where = [ln for ln in page.split("<tr>") if "restore_target" in ln]
    assert where and all("a throwaway local PostgreSQL" in t for t in where), where
    assert any("restore_mode" in ln and ">local<" in ln for ln in page.split("<tr>"))
    record = (run_dir / "drill-record.md").read_text()
    assert "(restored into a throwaway local PostgreSQL " in record, record[:600]
    assert "--expect-head HEAD" not in page
    head = history.line_hash(history.read_lines(reports / "history.jsonl")[-1])
    overview = html.unescape((reports / "history.html").read_text())
    assert "--expect-head HEAD" not in overview
    assert f"opsgate reports verify --expect-head {head}" in overview
