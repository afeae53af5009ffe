"""What one gate run produced, gathered on the controller from every test report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from opsgate.gate import BY_MARKER, CHECKS
from opsgate.pytest_plugin.oneline import message_of
from opsgate.verify.evidence_types import Partial

#: summary.json's contract; 2 added the ``interrupted`` verdict, status and outcome, the
#: ``interrupted`` count and the ``interruption`` object; 3 has one ``checks`` entry per
#: row of the gate table, its length and markers no longer fixed by the schema (2 held
#: exactly nine), so that adding a check does not change the contract again.
SUMMARY_SCHEMA = "opsgate-summary/3"
INTERRUPTED = "interrupted"
#: The message of a selected test no report has reached yet.
NOT_STARTED = "not started"


@dataclass
class Interruption:
    """What stopped a run, and which selected tests it left unfinished."""

    by: str  # "SIGTERM", "SIGINT", "KeyboardInterrupt", "-x/--maxfail: ...", ...
    running: list[str]  # node ids that had started and never reached their verdict
    not_started: list[str]  # node ids the run selected and never began

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "running": self.running, "not_started": self.not_started}

    def sentence(self) -> str:
        """One line for every report: "interrupted by SIGTERM during neon_drill ..."."""
        during = (f" during {', '.join(self.running)}" if self.running
                  else " between tests" if self.not_started
                  else " before any selected test started")
        left = (f"; {len(self.not_started)} selected test(s) never started"
                if self.not_started else "")
        return f"interrupted by {self.by}{during}{left}"


@dataclass
class TestOutcome:
    nodeid: str
    name: str
    marker: str | None
    #: passed, failed, error, skipped, or interrupted: a test is "interrupted" until its
    #: call phase reports (or its setup fails or skips), so a test the run never
    #: finished, or never started, can never read as passed.
    outcome: str
    duration_s: float
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    #: What the reports read this test for (its ``opsgate_role`` marker), or None; not
    #: part of summary.json, whose contract is the evidence alone.
    role: str | None = None
    #: A failure's kind, from the type of the error behind it (`failure_kinds`).
    kind: str | None = None
    #: For a target not tried again, the line of its first failure (`failure_kinds.again_of`).
    again_of: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"nodeid": self.nodeid, "name": self.name, "outcome": self.outcome,
               "duration_s": round(self.duration_s, 3), "message": self.message,
               "evidence": self.evidence}
        if self.kind is not None and self.outcome in ("failed", "error"):
            out["kind"] = self.kind
        if self.again_of is not None and self.outcome in ("failed", "error"):
            out["again_of"] = self.again_of
        return out


@dataclass
class RunRecord:
    run_id: str
    started_at: str
    target: dict[str, Any]
    target_kind: str
    expression: str
    expression_source: str
    opsgate_version: str
    tests: dict[str, TestOutcome] = field(default_factory=dict)
    finished_at: str = ""
    duration_s: float = 0.0
    exit_status: int = 0
    previous_run: str | None = None
    notes: list[str] = field(default_factory=list)
    #: Set when the run stopped before every selected test finished: by whom or what
    #: (``SIGINT``, ``SIGTERM``, ``-x``/``--maxfail``, ...), set by `interrupted_by`.
    interruption: Interruption | None = None
    #: A stop that arrived after every selected test had finished (in the last test's
    #: tear-down, as the session ended): not the run's interruption; the verdict is what
    #: the checks found, though pytest's exit status says "interrupted".
    stopped_after_checks: str | None = None

    def expect(self, nodeid: str, marker: str | None) -> None:
        """A test the run selected: until its reports say otherwise it is interrupted,
        not started (so a run stopped before reaching it lists it as such)."""
        if nodeid not in self.tests:
            self.tests[nodeid] = TestOutcome(nodeid, nodeid.split("::")[-1], marker,
                                             INTERRUPTED, 0.0, NOT_STARTED)

    def started(self, nodeid: str) -> None:
        """The test's protocol began (before its set-up): a stop from now on lands
        "during" it, not "between tests" with the test "before it started"."""
        test = self.tests.get(nodeid)
        if test is not None and test.message == NOT_STARTED:
            test.message = ""

    def record(self, report: Any, marker: str | None) -> None:
        """Fold one pytest report (setup, call or teardown) into the test's outcome."""
        test = self.tests.get(report.nodeid)
        if test is None:
            test = TestOutcome(report.nodeid, report.nodeid.split("::")[-1], marker,
                               INTERRUPTED, 0.0)
            self.tests[report.nodeid] = test
        if test.marker is None:
            test.marker = marker
        if report.when == "setup" and test.message == NOT_STARTED:
            test.message = ""
        test.duration_s += float(getattr(report, "duration", 0.0) or 0.0)
        for name, value in getattr(report, "user_properties", []):
            if name == "opsgate_role":
                test.role = str(value)
            elif name == "opsgate_failure_kind":
                test.kind = str(value)
            elif name == "opsgate_again_of":
                test.again_of = str(value)
            elif name == "opsgate_evidence":
                try:
                    test.evidence = json.loads(value)
                except (TypeError, json.JSONDecodeError):
                    test.evidence = {"raw": str(value)[:2000]}
        if report.skipped and test.outcome in ("passed", INTERRUPTED):
            test.outcome = "skipped"
            test.message = _message(report)
        elif report.failed:
            test.outcome = "failed" if report.when == "call" else "error"
            test.message = _message(report)
        elif report.when == "call" and test.outcome == INTERRUPTED:
            test.outcome = "passed"

    def interrupted_by(self, by: str | None, *, signalled: bool = False) -> None:
        """The run is over: a test still marked interrupted did not finish. ``by`` says
        what stopped the run (None: nothing said so); a stop signal (``signalled``) or
        keyboard interrupt makes the run interrupted even between two tests, whatever
        pytest's exit status (a stop inside a module's import is a collection error)."""
        running = [t for t in self.tests.values()
                   if t.outcome == INTERRUPTED and t.message != NOT_STARTED]
        waiting = [t for t in self.tests.values() if t.message == NOT_STARTED]
        stopped = bool(by) and (self.exit_status == 2 or signalled)
        if not running and not waiting and self.tests:
            self.stopped_after_checks = by if stopped else None
            return  # every selected test finished
        if not running and not waiting and not stopped:
            return  # a run no stop ended early
        by = by or "the end of the run"
        self.interruption = Interruption(by, [t.nodeid for t in running],
                                         [t.nodeid for t in waiting])
        for t in running:
            t.message = f"interrupted by {by} while it ran; its verdict was never reached"
        for t in waiting:
            t.message = f"interrupted by {by} before it started"

    def checks(self) -> list[dict[str, Any]]:
        out = []
        for spec in CHECKS:
            tests = [t for t in self.tests.values() if t.marker == spec.marker]
            partial = [p.partial for p in (Partial.from_json(t.evidence) for t in tests
                                           if isinstance(t.evidence, dict)) if p]
            if not tests:
                status = "not run"
            elif any(t.outcome in ("failed", "error") for t in tests):
                status = "failed"
            elif any(t.outcome == INTERRUPTED for t in tests):
                status = INTERRUPTED  # the check did not finish: never a pass
            elif any(t.outcome == "skipped" for t in tests):
                status = "skipped"  # a check with a skipped test did not fully run
            elif partial:
                status = "partial"  # passed, but says what it did not verify
            else:
                status = "passed"
            entry: dict[str, Any] = {
                "marker": spec.marker, "title": spec.title, "flag": spec.flag,
                "status": status, "duration_s": round(sum(t.duration_s for t in tests), 3),
                "tests": [t.as_dict() for t in tests]}
            if partial:
                entry["partial"] = partial
            out.append(entry)
        return out

    def counts(self) -> dict[str, int]:
        c = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, INTERRUPTED: 0}
        for t in self.tests.values():
            c[t.outcome] += 1
        return c

    @property
    def verdict(self) -> str:
        """``interrupted`` when a selected test did not finish (whatever the exit
        status: pytest exits 1 after ``-x`` stopped the run), else passed or failed."""
        if self.interruption is not None:
            return INTERRUPTED
        if self.stopped_after_checks and self.exit_status == 2:
            return "failed" if any(t.outcome != "passed" for t in self.tests.values()) \
                else "passed"
        return "passed" if self.exit_status == 0 else "failed"

    def summary(self) -> dict[str, Any]:
        checks = self.checks()
        return {
            "schema": SUMMARY_SCHEMA,
            "run_id": self.run_id,
            "opsgate_version": self.opsgate_version,
            "verdict": self.verdict,
            "exit_status": self.exit_status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": round(self.duration_s, 3),
            "target_kind": self.target_kind,
            "target": self.target,
            "marker_expression": self.expression,
            "expression_source": self.expression_source,
            "hash_version": "canon-v1",
            "counts": self.counts(),
            "checks": checks,
            "partial_checks": [c["marker"] for c in checks if c["status"] == "partial"],
            "previous_run": self.previous_run,
            "notes": self.notes,
            "interruption": (self.interruption.as_dict()
                             if self.interruption is not None else None),
        }

    def redacted(self, redact: Callable[[str], str]) -> RunRecord:
        """A copy with every string redacted: what every report is rendered from, so a
        secret is gone before any format (JSON, HTML, Markdown) escapes it."""
        from opsgate.reports.redaction import redact_data

        tests = {
            redact(nodeid): replace(t, nodeid=redact(t.nodeid), name=redact(t.name),
                                    message=redact_data(t.message, redact),
                                    again_of=t.again_of and redact(t.again_of),
                                    evidence=redact_data(t.evidence, redact))
            for nodeid, t in self.tests.items()
        }
        interruption = self.interruption and replace(
            self.interruption, running=[redact(n) for n in self.interruption.running],
            not_started=[redact(n) for n in self.interruption.not_started])
        return replace(self, tests=tests, target=redact_data(self.target, redact),
                       expression=redact(self.expression),
                       notes=[redact(n) for n in self.notes], interruption=interruption)

    def by_role(self, role: str) -> TestOutcome | None:
        """The test that carries ``role`` (`opsgate.verify.evidence_types`), if the run
        had it: reports find what they need this way, never by a test's name."""
        return next((t for t in self.tests.values() if t.role == role), None)


def _message(report: Any) -> str:
    line = message_of(report.longrepr)  # a check's own failure: the terminal's one line
    if line is not None:
        return line[:4000]
    text = str(report.longrepr) if report.longrepr is not None else ""
    if report.skipped and isinstance(report.longrepr, tuple):
        text = str(report.longrepr[2])
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # The assertion line (E ...) says what differs; keep it and bound the size.
    errors = [ln.strip()[1:].strip() for ln in lines if ln.lstrip().startswith("E ")]
    # Keep the assertion's own message; drop pytest's rewriting detail ("assert ...",
    # "+  where ..."), which repeats values and can be long.
    kept: list[str] = []
    for ln in errors:
        if kept and (ln.startswith(("assert ", "+", "where ")) or ln == ""):
            break
        kept.append(ln)
    chosen = " ".join(kept) if kept else (lines[-1] if lines else "")
    return chosen[:4000]


def marker_of_nodeid(nodeid: str) -> str | None:
    """The check of a test known only by its node id (pytest-xdist's controller): every
    check lives in the module the gate table names for it."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    for spec in CHECKS:
        if spec.module.rsplit("/", 1)[-1] == module:
            return spec.marker
    return None


def marker_of(keywords: Any) -> str | None:
    for name in BY_MARKER:
        if name in keywords:
            return name
    return None
