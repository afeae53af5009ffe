"""One skeleton for opsgate's guarded operations (the rollback command, the migration
runner and the backup/restore drill run on it; the refresh and `opsgate` itself take its
exit codes): stages as small named
functions, one typed summary whose JSON is the documented one, one timing helper, one
way to stop with a reason (`Stop`) and one set of exit codes.

Why one skeleton: an operator reads every command's summary the same way (``status``,
``message``, ``exit_code``, ``timings_s``, ``steps``), and a reviewer checks one place
for how a run stops, is timed and is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from opsgate.errors import OperationStopped

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "STAGES", "Stop",
           "Summary", "iso", "now"]

#: Every command's exit codes, defined here only: success (a no-op included), a failed or
#: refused operation, a usage or configuration error, and the shell's code for Ctrl-C.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: The stages every operation goes through, in order; `Summary.timed` names them.
STAGES = ("preconditions", "plan", "apply", "verify", "record")

#: Stopping is raising this: ``Stop(status, exit_code, message)``.
Stop = OperationStopped


def now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """A UTC time as every summary writes it: milliseconds and ``Z``."""
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Summary:
    """What one run did, built as it goes, so a stop at any stage (a refusal, an error,
    Ctrl-C) still leaves a complete record of the steps taken until then."""

    operation: str
    mode: str
    status: str = "running"
    message: str = ""
    exit_code: int | None = None
    started_at: str = field(default_factory=lambda: iso(now()))
    finished_at: str | None = None
    duration_s: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    #: One item per step: ``{"stage", "step", "status", "detail"}``; ``status`` is
    #: ``done``, ``skipped`` (already so: a no-op), ``planned`` (dry run), ``failed``.
    steps: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: The operation's own fields (environments, hashes, deployments).
    details: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def step(self, stage: str, step: str, status: str, detail: str = "") -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self.steps.append({"stage": stage, "step": step, "status": status,
                           "detail": detail})

    @contextmanager
    def timed(self, label: str) -> Iterator[None]:
        """Adds the time spent inside to ``timings_s[label]`` (even when it raises)."""
        started = time.monotonic()
        try:
            yield
        finally:
            spent = time.monotonic() - started
            self.timings_s[label] = round(self.timings_s.get(label, 0.0) + spent, 3)

    def finish(self, status: str, exit_code: int, message: str,
               problems: list[str] | None = None) -> Self:
        self.status, self.exit_code, self.message = status, exit_code, message
        self.problems = list(problems or self.problems)
        self.finished_at = iso(now())
        self.duration_s = round(time.monotonic() - self._t0, 3)
        return self

    def stopped(self, stop: OperationStopped) -> Self:
        return self.finish(stop.status, stop.exit_code, stop.message, stop.problems)

    def as_json(self) -> dict[str, Any]:
        """The documented summary: the common fields, then the operation's own. An
        operation whose summary was documented before this skeleton (the migration
        runner's) overrides this to keep its JSON exactly as documented."""
        return {
            "operation": self.operation, "mode": self.mode, "status": self.status,
            "message": self.message, "exit_code": self.exit_code,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "duration_s": self.duration_s, "timings_s": dict(self.timings_s),
            "steps": [dict(s) for s in self.steps], "problems": list(self.problems),
            **self.details,
        }
