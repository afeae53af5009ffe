"""One cause, one entry in "Why it failed": the checks that did not try an origin again
join the failure that points back to it, in whatever order summary.json lists them."""

from __future__ import annotations

import pytest

from opsgate.clients import web
from opsgate.errors import HttpCheckError
from opsgate.reports import reasons

ORIGIN = "http://127.0.0.1:41234"
FIRST = f"constellation API: GET {ORIGIN}/api/constellation timed out after 3 attempts"


def _web_again() -> str:
    """The line opsgate.clients.web itself gives for an origin the run recorded as not
    answering (it fails before sending anything)."""
    memo = {ORIGIN: "timed out after 3 attempts"}
    with web.client(ORIGIN, unreachable=memo) as cl, pytest.raises(HttpCheckError) as exc:
        web.request(cl, "GET", "/", what="deployment")
    return str(exc.value)


AGAIN = _web_again()
DB = "cannot connect to postgresql://u:***@h/db: connection refused"


def _checks(*tests: tuple[str, str, str]) -> list[dict[str, object]]:
    by: dict[str, list[dict[str, str]]] = {}
    for marker, name, message in tests:
        by.setdefault(marker, []).append({"name": name, "nodeid": f"checks/test_{marker}.py::"
                                          f"{name}", "outcome": "failed", "message": message})
    return [{"marker": m, "tests": t} for m, t in by.items()]


def test_a_repeat_joins_its_first_line_even_listed_before_it() -> None:
    found = reasons.causes(_checks(("preflight", "test_deployment_answers", AGAIN),
                                   ("parity", "test_counts", FIRST),
                                   ("ledger", "test_rows", DB + reasons.NOT_TRIED_AGAIN),
                                   ("health", "test_row_counts", DB)))
    assert [c.message for c in found] == [FIRST, DB]
    assert list(found[0].by_check()) == ["preflight", "parity"]
    assert list(found[1].by_check()) == ["ledger", "health"]


def test_a_repeat_of_another_origin_or_reason_stays_its_own_cause() -> None:
    other = AGAIN.replace("41234", "41235")
    found = reasons.causes(_checks(("parity", "test_counts", FIRST),
                                   ("preflight", "test_deployment_answers", other),
                                   ("ledger", "test_rows", "something else")))
    assert [c.message for c in found] == [FIRST, other, "something else"]
