"""The controller-side collector: one record per run, whatever the number of workers.

Registered on the pytest-xdist controller (or the only process), it folds every test
report into a `RunRecord`; at session end it writes the run's files. Workers write
nothing but their Allure result files, into the directory the controller chose.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from .. import __version__
from .model import RunRecord, marker_of
from .writer import run_dir_name, write_run


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunCollector:
    def __init__(self, state: Any, root: Path, run_dir: Path, record: RunRecord) -> None:
        self.state = state
        self.root = root
        self.run_dir = run_dir
        self.record = record
        self._t0 = _now()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.record.record(report, marker_of(report.keywords))

    def finish(self, session: pytest.Session, exit_status: int) -> None:
        end = _now()
        self.record.finished_at = _iso(end)
        self.record.duration_s = (end - self._t0).total_seconds()
        self.record.exit_status = exit_status
        if self.state.no_check_ran:
            self.record.notes.append("no check ran")
        if self.state.flags_unserved:
            self.record.notes.append("flags on but their check did not run: "
                                     + ", ".join(self.state.flags_unserved))
        try:
            write_run(self.record, self.root, self.run_dir, self.state.redact)
            self.state.reports_written = str(self.run_dir)
        except OSError as exc:
            self.state.reports_error = f"{exc.__class__.__name__}: {exc}"


def start_run(config: pytest.Config, state: Any) -> RunCollector:
    """Choose the run directory, point junitxml and allure-pytest into it, register."""
    root = Path(config.getoption("reports_dir") or (config.rootpath / "reports")).resolve()
    ident = state.settings.target_identity()
    start = _now()
    stamp = start.strftime("%Y%m%dT%H%M%SZ")
    runs = root / "runs"
    name = run_dir_name(stamp, str(ident["name"]))
    run_dir = runs / name
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = runs / f"{name}-{n}"
    try:
        (run_dir / "allure-results").mkdir(parents=True)
    except OSError as exc:
        raise pytest.UsageError(
            f"opsgate: cannot create the run's reports in {runs} ({exc.strerror}); "
            "pass --reports-dir DIR or --no-reports") from None
    if not config.option.xmlpath:
        config.option.xmlpath = str(run_dir / "junit.xml")
    if not getattr(config.option, "allure_report_dir", None):
        config.option.allure_report_dir = str(run_dir / "allure-results")
    record = RunRecord(
        run_id=run_dir.name, started_at=_iso(start), target=dict(ident),
        target_kind=state.target_kind, expression=state.expression or "",
        expression_source=state.expression_source, opsgate_version=__version__,
    )
    collector = RunCollector(state, root, run_dir, record)
    config.pluginmanager.register(collector, "opsgate-run-collector")
    state.collector = collector
    return collector
