"""The controller-side collector: one record per run, whatever the number of workers.

Registered on the pytest-xdist controller (or the only process), it folds every test
report into a `RunRecord`; at session end it writes the run's files, redacts every file
of the run directory, seals them into a history line and prints the new history head.
Workers write nothing but their Allure result files, into the directory the controller
chose.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from opsgate import __version__, interrupts
from opsgate.operation import iso, now
from opsgate.reports import reasons
from opsgate.reports.model import RunRecord, marker_of, marker_of_nodeid
from opsgate.reports.step_summary import step_summary
from opsgate.reports.writer import run_dir_name, write_run


class RunCollector:
    """Folds reports into the run's record; at the very end of the session writes,
    redacts and seals the run's reports and chains the run into the history."""

    def __init__(self, state: Any, root: Path, run_dir: Path, record: RunRecord,
                 junit: Path | None = None, allure: Path | None = None) -> None:
        self.state = state
        self.root = root
        self.run_dir = run_dir
        self.record = record
        self.junit = junit
        self.allure = allure  # the caller's --alluredir, when not the run's own
        self.head: str | None = None
        self.done = False
        self._t0 = now()
        self._stopped_by: str | None = None
        self._holding = False  # stops held from the test loop's end to unconfigure

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        """Before the test's set-up (forwarded by pytest-xdist's workers too)."""
        self.record.started(nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.record.record(report, marker_of(report.keywords))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """The selected tests, once every plugin has deselected what it deselects (this
        process collected them): each is interrupted until its reports arrive. Not
        ``pytest_collection_finish``: pytest calls that one even when a stop cut the
        collection short, with tests no selection has yet removed."""
        for item in items:
            self.record.expect(item.nodeid, marker_of(item.keywords))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """The selected tests, under pytest-xdist (the controller collects nothing)."""
        for nodeid in ids:
            self.record.expect(nodeid, marker_of_nodeid(nodeid))

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self._stopped_by = interrupts.received() or _describe(excinfo.value)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """The checks are over when the test loop ends: from then on a stop is recorded,
        not raised (`interrupts.hold`, released at unconfigure), so the session's end
        writes the reports whole. Cut short there, pytest's junit.xml was left empty and
        the run had a summary and no history line. tryfirst: outermost, around xdist's
        loop too."""
        try:
            return (yield)
        finally:
            if not self._holding:
                self._holding = True
                interrupts.hold()

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        """Write the reports after every plain ``pytest_sessionfinish``: the plugin's
        (exit status, "no check ran"), pytest's junitxml (writes junit.xml), xdist's
        (workers, and so their Allure files, are done). ``trylast`` makes this wrapper
        the innermost, so it also runs before the terminal reporter's wrapper calls
        ``pytest_terminal_summary``, where the head is printed."""
        try:
            return (yield)
        finally:
            self.complete(int(session.exitstatus), self._why_stopped(session),
                          session.config.invocation_params.dir)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """A stop that lands after the run's folder was made and before the session
        started (other plugins' set-up, the session's start) ends the run without a
        ``pytest_sessionfinish``: the run is recorded here instead, interrupted with no
        check, so it is in the history as every run is. With no stop, a run that never
        started (a later plugin's usage error) leaves no folder behind."""
        if self._holding:
            self._holding = False
            interrupts.release()
        if self.done:
            return
        stopped = self._stopped_by or interrupts.received()
        if stopped is None:
            self.done = True
            for empty in (self.run_dir / "allure-results", self.run_dir):
                with contextlib.suppress(OSError):
                    empty.rmdir()
            return
        self.complete(int(pytest.ExitCode.INTERRUPTED), stopped,
                      config.invocation_params.dir)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            self.pytest_terminal_summary(reporter)
        elif self.record.interruption is not None:  # stopped before pytest's terminal
            print(f"opsgate: INTERRUPTED: "
                  f"{self.state.redact(self.record.interruption.sentence())}; reports in "
                  f"{self.run_dir}", file=sys.stderr)

    def complete(self, exit_status: int, stopped_by: str | None, invocation_dir: Path
                 ) -> None:
        if self.done:
            return
        self.done = True
        # The run is over: a stop from here on is recorded, not raised, so its record is
        # written whole (cut short, it had a summary and no history line, or neither).
        with interrupts.deferred():
            end = now()
            self.record.finished_at = iso(end)
            self.record.duration_s = (end - self._t0).total_seconds()
            self.record.exit_status = exit_status
            self.record.interrupted_by(stopped_by,
                                       signalled=interrupts.received() is not None)
            if self.record.interruption is not None:
                self.record.notes.append(self.record.interruption.sentence())
            elif self.record.stopped_after_checks:
                self.record.notes.append(
                    f"stopped by {self.record.stopped_after_checks} after every selected "
                    "test had finished: the verdict is what the checks found")
            self.record.notes.extend(reasons.gate_failures(self.state))
            self._write(invocation_dir)

    def _write(self, invocation_dir: Path) -> None:
        try:
            _entry, self.head = write_run(self.record, self.root, self.run_dir,
                                          self.state.redact, self.junit, self.allure)
            self.state.reports_written = str(self.run_dir)
        except (OSError, ValueError, SyntaxError) as exc:  # SyntaxError: XML ParseError
            self.state.reports_error = f"{exc.__class__.__name__}: {exc}"
            return
        summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_file:
            try:
                with open(summary_file, "a", encoding="utf-8") as f:
                    f.write(step_summary(self.record, self.head, self.root, self.state.redact,
                                         invocation_dir))
            except OSError as exc:
                self.state.reports_error = (f"GITHUB_STEP_SUMMARY not written: "
                                            f"{exc.__class__.__name__}: {exc}")

    def _why_stopped(self, session: pytest.Session) -> str | None:
        """What ended the run early, if anything did: a stop signal, a keyboard
        interrupt, ``-x``/``--maxfail``, or an exit status that says so (a crashed
        worker, a time-out plugin)."""
        if self._stopped_by or interrupts.received():
            return self._stopped_by or interrupts.received()
        if session.shouldfail:
            return f"-x/--maxfail ({session.shouldfail})"
        if session.shouldstop:
            return str(session.shouldstop)
        if session.exitstatus == pytest.ExitCode.INTERRUPTED:
            return "an interrupt"
        return None if session.exitstatus == pytest.ExitCode.OK else (
            f"the end of the run (pytest exit status {int(session.exitstatus)})")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        interruption = self.record.interruption
        if interruption is not None:
            terminalreporter.write_line(
                f"opsgate: INTERRUPTED: {self.state.redact(interruption.sentence())}; no "
                "check that did not finish is recorded as passed", red=True)
        if self.head:
            terminalreporter.write_line(f"opsgate: history head {self.head}")


def _describe(exc: BaseException) -> str:
    """What stopped the run, from the exception pytest caught (``pytest.exit``'s reason,
    or the exception's type)."""
    if isinstance(exc, interrupts.Interrupted):
        return exc.signal_name
    msg = getattr(exc, "msg", None)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def start_run(config: pytest.Config, state: Any) -> RunCollector:
    """Choose the run directory, point junitxml and allure-pytest into it, register."""
    root = Path(config.getoption("reports_dir") or (config.rootpath / "reports")).resolve()
    ident = state.settings.target_identity()
    start = now()
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
    allure = getattr(config.option, "allure_report_dir", None)
    if not allure:
        config.option.allure_report_dir = str(run_dir / "allure-results")
    record = RunRecord(
        run_id=run_dir.name, started_at=iso(start), target=dict(ident),
        target_kind=state.target_kind, expression=state.expression or "",
        expression_source=state.expression_source, opsgate_version=__version__,
    )
    # The JUnit XML pytest will write: ours in the run directory, or the caller's
    # --junitxml PATH, resolved the way pytest's junitxml resolves it.
    xmlpath = config.option.xmlpath
    junit = Path(os.path.abspath(os.path.expanduser(os.path.expandvars(xmlpath)))
                 ) if xmlpath else None
    collector = RunCollector(state, root, run_dir, record, junit,
                             Path(os.path.abspath(allure)) if allure else None)
    config.pluginmanager.register(collector, "opsgate-run-collector")
    state.collector = collector
    return collector
