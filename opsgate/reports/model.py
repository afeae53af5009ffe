"""What one gate run produced, gathered on the controller from every test report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from opsgate.gate import BY_MARKER, CHECKS
from opsgate.pytest_plugin.oneline import message_of


@dataclass
class TestOutcome:
    nodeid: str
    name: str
    marker: str | None
    outcome: str  # passed, failed, error, skipped
    duration_s: float
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "name": self.name, "outcome": self.outcome,
                "duration_s": round(self.duration_s, 3), "message": self.message,
                "evidence": self.evidence}


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

    def record(self, report: Any, marker: str | None) -> None:
        """Fold one pytest report (setup, call or teardown) into the test's outcome."""
        test = self.tests.get(report.nodeid)
        if test is None:
            test = TestOutcome(report.nodeid, report.nodeid.split("::")[-1], marker, "passed",
                               0.0)
            self.tests[report.nodeid] = test
        test.duration_s += float(getattr(report, "duration", 0.0) or 0.0)
        for name, value in getattr(report, "user_properties", []):
            if name == "opsgate_evidence":
                try:
                    test.evidence = json.loads(value)
                except (TypeError, json.JSONDecodeError):
                    test.evidence = {"raw": str(value)[:2000]}
        if report.skipped and test.outcome == "passed":
            test.outcome = "skipped"
            test.message = _message(report)
        elif report.failed:
            test.outcome = "failed" if report.when == "call" else "error"
            test.message = _message(report)

    def checks(self) -> list[dict[str, Any]]:
        out = []
        for spec in CHECKS:
            tests = [t for t in self.tests.values() if t.marker == spec.marker]
            partial = [str(t.evidence["partial"]) for t in tests
                       if isinstance(t.evidence, dict) and t.evidence.get("partial")]
            if not tests:
                status = "not run"
            elif any(t.outcome in ("failed", "error") for t in tests):
                status = "failed"
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
        c = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        for t in self.tests.values():
            c[t.outcome] += 1
        return c

    @property
    def verdict(self) -> str:
        return "passed" if self.exit_status == 0 else "failed"

    def summary(self) -> dict[str, Any]:
        checks = self.checks()
        return {
            "schema": "opsgate-summary/1",
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
        }

    def redacted(self, redact: Callable[[str], str]) -> RunRecord:
        """A copy with every string redacted: what every report is rendered from, so a
        secret is gone before any format (JSON, HTML, Markdown) escapes it."""
        from opsgate.reports.redaction import redact_data

        tests = {
            redact(nodeid): replace(t, nodeid=redact(t.nodeid), name=redact(t.name),
                                    message=redact_data(t.message, redact),
                                    evidence=redact_data(t.evidence, redact))
            for nodeid, t in self.tests.items()
        }
        return replace(self, tests=tests, target=redact_data(self.target, redact),
                       expression=redact(self.expression),
                       notes=[redact(n) for n in self.notes])

    def evidence_of(self, marker: str) -> dict[str, dict[str, Any]]:
        return {t.name: t.evidence for t in self.tests.values() if t.marker == marker}


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


def marker_of(keywords: Any) -> str | None:
    for name in BY_MARKER:
        if name in keywords:
            return name
    return None
