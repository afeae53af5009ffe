"""Why a run is red, one entry per cause: tests that failed for one cause are one
entry naming each check and test, so the first lines a reader sees are distinct
problems.

One cause, one message, mostly: a database that did not answer fails every check that
reads it with the same line. The checks after the first do not try again (the run
remembers what did not answer) and say so in words of their own; the error behind such
a failure is an `opsgate.errors.NotTriedAgainError` carrying the first failure's line,
which summary.json keeps as the test's ``again_of``: the test joins the cause whose
message is that line or holds it. The type decides, never the message's wording."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Outcomes that make the gate red (a skipped check did not run, which fails the gate).
RED = {"failed": "failed", "error": "error (setup)", "skipped": "did not run",
       "interrupted": "interrupted"}


@dataclass
class Cause:
    message: str
    outcome: str  # the first test's, as RED words it
    tests: list[dict[str, str]] = field(default_factory=list)  # marker, name, nodeid
    #: The first test's failure kind (from the error's type), when it has one.
    kind: str | None = None

    def by_check(self) -> dict[str, list[dict[str, str]]]:
        """The cause's tests per check (marker), in the order they were found."""
        out: dict[str, list[dict[str, str]]] = {}
        for t in self.tests:
            out.setdefault(t["marker"], []).append(t)
        return out


def _first_of(again_of: str | None, found: dict[str, Cause],
              repeats: set[str]) -> Cause | None:
    """The cause a test not tried again points back to (``again_of``: the first
    failure's line): the failure with that message, else one whose message holds it (a
    check may say what it was doing first); never another repeat."""
    if again_of is None:
        return None
    exact = found.get(again_of)
    if exact is not None and again_of not in repeats:
        return exact
    return next((c for m, c in found.items() if m not in repeats and again_of in m), None)


def causes(checks: list[dict[str, Any]]) -> list[Cause]:
    """The causes of a red run from summary.json's ``checks``, in check order."""
    found: dict[str, Cause] = {}
    later: list[tuple[str, str | None, dict[str, str]]] = []
    repeats: set[str] = set()
    for c in checks:
        for t in c.get("tests", []):
            outcome = t.get("outcome")
            if outcome not in RED:
                continue
            message = str(t.get("message") or "no message")
            test = {"marker": str(c.get("marker")), "name": str(t.get("name")),
                    "nodeid": str(t.get("nodeid"))}
            again_of = t.get("again_of")
            again_of = again_of if isinstance(again_of, str) and again_of else None
            if again_of is not None:
                repeats.add(message)
            later.append((message, again_of, test))
            kind = t.get("kind")
            found.setdefault(message, Cause(message, RED[outcome],
                                             kind=kind if isinstance(kind, str) else None))
    # Tests are placed once every first line is known: summary.json lists checks in
    # the gate's order, not the order they ran, so a repeat may come before its first.
    placed: dict[str, Cause] = {}
    for message, again_of, test in later:
        cause = _first_of(again_of, found, repeats) or found[message]
        cause.tests.append(test)
        placed.setdefault(cause.message, cause)
    return list(placed.values())


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def gate_failures(state: Any) -> list[str]:
    """Why the gate failed beyond any one check, one sentence per failure: built here
    once, for the terminal summary and for every report (summary.json's ``notes``)."""
    notes = []
    if getattr(state, "no_check_ran", False):
        notes.append(f"no check ran (selection: {getattr(state, 'expression', '')}); a gate "
                     "that checks nothing does not pass")
    if getattr(state, "flags_unserved", None):
        notes.append("flags on but their check did not run: "
                     + ", ".join(state.flags_unserved))
    skipped = getattr(state, "skipped", None)
    if skipped:
        notes.append(f"{len(skipped)} selected check(s) skipped, and a skipped check did not "
                     "run: " + "; ".join(str(s) for s in skipped[:5]))
    return notes
