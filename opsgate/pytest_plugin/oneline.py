"""A failed check as one line: ``checks/test_x.py:NN: <its message>``.

A check fails through `opsgate.pytest_plugin.fixtures.fail` with a message that already
says what differs; pytest would print that message, then again as its crash line with
the path of the helper that raised it (and, for an ``assert``, the rewritten expression
and the reprs of the objects in it). In a gate run such a failure's report is rebuilt
as a crash location in the check module and the message alone, so the terminal
(``--tb=line``), JUnit and the run's summary all carry the same one line. Anything else
(an ``AssertionError``, an exception no check expected) keeps its traceback: that is a
bug in a check, and the traceback is what finds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opsgate.sensitive import Redactor

__all__ = ["message_of", "one_line", "shorten"]


def _location(item: pytest.Item, call: pytest.CallInfo[None]) -> tuple[str, int]:
    """The check module as ``checks/test_x.py`` (never a path of the machine it runs on),
    and the line in it that failed: the deepest frame in the module, else the test's own
    ``def`` line (a shared fixture failed before the test ran)."""
    path = Path(str(item.path))
    line = (item.location[1] or 0) + 1
    if call.excinfo is not None:
        for entry in call.excinfo.traceback:
            if Path(str(entry.path)) == path:
                line = entry.lineno + 1
    return f"{path.parent.name}/{path.name}", line


def one_line(text: str, redact: Redactor | None) -> str:
    """A failure's message as its report carries it: scrubbed, its lines joined."""
    if redact:
        text = redact(text)
    return "; ".join(ln.strip() for ln in text.splitlines() if ln.strip()) or "failed"


def shorten(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport,
            redact: Redactor | None) -> None:
    """Rebuild a check's own failure (``fail()``, no traceback asked for) as one line;
    leave any other failure alone. ``redact`` scrubs the message first, so the line is
    clean wherever it is copied to."""
    excinfo = call.excinfo
    if excinfo is None or not report.failed or not isinstance(excinfo.value, pytest.fail.Exception):
        return
    if excinfo.value.pytrace:
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    tb = getattr(report.longrepr, "reprtraceback", None)
    if crash is None or tb is None:
        return
    message = one_line(str(excinfo.value.msg), redact)
    # pytest's own report objects, rewritten in place: their classes are not part of
    # pytest's public API, their fields (path, lineno, message, lines) are what its
    # terminal, JUnit and pytest-xdist's serialisation read.
    crash.path, crash.lineno = _location(item, call)
    crash.message = message
    tb.style = "value"
    # A failed test prints its crash line under FAILURES; a setup error (a fixture
    # failed) prints only its traceback under ERRORS: the line goes where pytest shows it.
    if report.when != "call" and tb.reprentries:
        tb.reprentries[0].lines = [str(crash)]
        del tb.reprentries[1:]
    else:
        tb.reprentries = []


def message_of(longrepr: Any) -> str | None:
    """The one line `shorten` made, from a report's longrepr (also after pytest-xdist
    sent it from a worker), or None for any other failure."""
    tb = getattr(longrepr, "reprtraceback", None)
    crash = getattr(longrepr, "reprcrash", None)
    if crash is None or getattr(tb, "style", None) != "value":
        return None
    entries = getattr(tb, "reprentries", [])
    if entries and [str(ln) for ln in getattr(entries[0], "lines", [])] != [str(crash)]:
        return None  # pytest's own value-style repr of a failure, not ours
    return str(crash.message)
