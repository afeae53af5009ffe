"""A stop that lands while a finished run's reports are written is recorded, not
raised: cut short there, a run had a summary and no history line, or neither."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from opsgate import interrupts
from opsgate.reports import collector
from opsgate.reports.model import RunRecord


def _stop_now() -> None:
    """SIGINT to this process, delivered before this returns (Python runs the handler
    at the next instruction boundary of the main thread)."""
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.monotonic() + 5
    while interrupts.received() is None and time.monotonic() < deadline:
        time.sleep(0.001)


def test_deferred_records_a_stop_and_raises_nothing() -> None:
    with interrupts.stop_on_signals():
        interrupts.reset()
        with interrupts.deferred():
            _stop_now()
        assert interrupts.received() == "SIGINT"
        interrupts.reset()
        with pytest.raises(interrupts.Interrupted):
            _stop_now()
    interrupts.reset()


def test_the_collector_writes_the_whole_record_through_a_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []

    def write_run(record: RunRecord, *args: Any) -> tuple[dict[str, Any], str]:
        _stop_now()  # the stop lands half-way through the writing
        written.append(record.run_id)
        return {}, "head"

    monkeypatch.setattr(collector, "write_run", write_run)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    state = SimpleNamespace(redact=lambda s: s, reports_written=None, reports_error=None)
    record = RunRecord(run_id="r1", started_at="2026-12-05T00:00:00Z", target={},
                       target_kind="sandbox", expression="preflight",
                       expression_source="-m", opsgate_version="0")
    runs = collector.RunCollector(state, tmp_path, tmp_path / "r1", record)
    with interrupts.stop_on_signals():
        interrupts.reset()
        runs.complete(0, None, tmp_path)
    assert written == ["r1"] and runs.head == "head"
    assert interrupts.received() == "SIGINT"
    interrupts.reset()


def _record() -> RunRecord:
    return RunRecord(run_id="r", started_at="2026-12-05T00:00:00Z", target={},
                     target_kind="sandbox", expression="preflight", expression_source="-m",
                     opsgate_version="0")


def test_a_stop_signal_interrupts_a_run_whatever_pytests_exit_status() -> None:
    """A stop before the selection, which pytest ended with another status than its
    "interrupted" (a crash in its own report of the stop gave 1): still interrupted, not
    "failed, no check ran". A run whose selected tests all finished is never made
    interrupted by a stop after them."""
    stopped = _record()
    stopped.exit_status = 1
    stopped.interrupted_by("SIGINT", signalled=True)
    assert stopped.interruption is not None and stopped.interruption.by == "SIGINT"
    unsignalled = _record()
    unsignalled.exit_status = 1
    unsignalled.interrupted_by("the end of the run (pytest exit status 1)")
    assert unsignalled.interruption is None
    finished = _record()
    finished.expect("checks/test_p.py::test_p", "preflight")
    finished.tests["checks/test_p.py::test_p"].outcome = "passed"
    finished.tests["checks/test_p.py::test_p"].message = ""
    finished.exit_status = 2
    finished.interrupted_by("SIGINT", signalled=True)
    assert finished.interruption is None
