"""One cause, one entry in "Why it failed": the checks that did not try a target again
join the failure that points back to it, in whatever order summary.json lists them. The
link is the type of the error behind the repeat (`NotTriedAgainError`, its first line
kept as the test's ``again_of``), never the words of its message."""

from __future__ import annotations

import pytest

from opsgate.clients import web
from opsgate.errors import (
    NOT_TRIED_AGAIN,
    DatabaseNotTriedAgain,
    HttpCheckError,
    HttpNotTriedAgain,
    NotTriedAgainError,
)
from opsgate.pytest_plugin.fixtures import connect_read_only
from opsgate.reports import failure_kinds, reasons
from opsgate.sensitive import SecretUrl

ORIGIN = "http://127.0.0.1:41234"
FIRST = f"constellation API: GET {ORIGIN}/api/constellation timed out after 3 attempts"
DB = "cannot connect to postgresql://u:***@h/db: connection refused"


def _web_again(first: str = FIRST) -> HttpNotTriedAgain:
    """The error opsgate.clients.web itself raises for an origin the run recorded as not
    answering (it fails before sending anything)."""
    memo = {ORIGIN: first}
    with web.client(ORIGIN, unreachable=memo) as cl, pytest.raises(HttpCheckError) as exc:
        web.request(cl, "GET", "/", what="deployment")
    assert isinstance(exc.value, HttpNotTriedAgain)
    return exc.value


AGAIN = _web_again()


def _checks(*tests: tuple[str, str, str, str | None]) -> list[dict[str, object]]:
    by: dict[str, list[dict[str, object]]] = {}
    for marker, name, message, again_of in tests:
        test: dict[str, object] = {"name": name, "nodeid": f"checks/test_{marker}.py::{name}",
                                   "outcome": "failed", "message": message}
        if again_of is not None:
            test["again_of"] = again_of
        by.setdefault(marker, []).append(test)
    return [{"marker": m, "tests": t} for m, t in by.items()]


def test_the_errors_behind_a_repeat_carry_the_first_line() -> None:
    assert AGAIN.first == FIRST and failure_kinds.again_of(AGAIN) == FIRST
    assert failure_kinds.kind_of(AGAIN, verdict_types=()) == failure_kinds.UNREACHABLE
    url = SecretUrl("postgresql://u:pw@127.0.0.1:9/db")
    with pytest.raises(pytest.fail.Exception) as failed:
        connect_read_only(url, None, {url.masked: DB})  # type: ignore[arg-type]
    assert str(failed.value.msg) == DB + NOT_TRIED_AGAIN
    assert isinstance(failed.value.__context__, DatabaseNotTriedAgain)
    assert failure_kinds.again_of(failed.value) == DB
    assert failure_kinds.kind_of(failed.value, verdict_types=()) == failure_kinds.UNREACHABLE


def test_a_repeat_joins_its_first_line_even_listed_before_it() -> None:
    found = reasons.causes(_checks(("preflight", "test_deployment_answers", str(AGAIN), FIRST),
                                   ("parity", "test_counts", FIRST, None),
                                   ("ledger", "test_rows", DB + NOT_TRIED_AGAIN, DB),
                                   ("health", "test_row_counts", DB, None)))
    assert [c.message for c in found] == [FIRST, DB]
    assert list(found[0].by_check()) == ["preflight", "parity"]
    assert list(found[1].by_check()) == ["ledger", "health"]


def test_a_repeat_joins_a_first_failure_that_says_more_around_the_line() -> None:
    wrapped = f"the blob fallback is not usable: {FIRST}"
    found = reasons.causes(_checks(("blob_fallback", "test_state", wrapped, None),
                                   ("preflight", "test_deployment_answers", str(AGAIN), FIRST)))
    assert [c.message for c in found] == [wrapped]
    assert list(found[0].by_check()) == ["blob_fallback", "preflight"]


@pytest.mark.parametrize("words", [
    "deployment: skipped, the origin was down before",  # no "not tried again" at all
    f"deployment: {ORIGIN} did not answer earlier in this run (another reason); "
    "not tried again",  # the old wording, with a reason the first line does not end in
])
def test_the_type_joins_a_repeat_whatever_its_words(words: str) -> None:
    """Under the message regex, the first wording joined nothing and the second would
    have been matched on its words; from the type both join the first line they carry."""
    found = reasons.causes(_checks(("parity", "test_counts", FIRST, None),
                                   ("preflight", "test_deployment_answers", words, FIRST)))
    assert [c.message for c in found] == [FIRST]
    assert [t["name"] for t in found[0].tests] == ["test_counts", "test_deployment_answers"]


def test_words_alone_join_nothing() -> None:
    """A message in the repeat's words with no NotTriedAgainError behind it (no
    ``again_of``) is a cause of its own."""
    found = reasons.causes(_checks(("parity", "test_counts", FIRST, None),
                                   ("preflight", "test_deployment_answers", str(AGAIN), None),
                                   ("ledger", "test_rows", DB + NOT_TRIED_AGAIN, None),
                                   ("health", "test_row_counts", DB, None)))
    assert [c.message for c in found] == [FIRST, str(AGAIN), DB + NOT_TRIED_AGAIN, DB]


def test_a_repeat_of_another_first_line_stays_its_own_cause() -> None:
    other = _web_again(FIRST.replace("41234", "41235"))
    found = reasons.causes(_checks(("parity", "test_counts", FIRST, None),
                                   ("preflight", "test_deployment_answers", str(other),
                                    other.first),
                                   ("ledger", "test_rows", "something else", None)))
    assert [c.message for c in found] == [FIRST, str(other), "something else"]


def test_a_repeat_never_joins_another_repeat() -> None:
    """Every repeat's message holds the first line; only a first failure is a cause."""
    again = NotTriedAgainError(FIRST + NOT_TRIED_AGAIN, FIRST)
    found = reasons.causes(_checks(("parity", "test_counts", str(again), FIRST),
                                   ("preflight", "test_deployment_answers", str(AGAIN), FIRST)))
    assert [c.message for c in found] == [str(again), str(AGAIN)]
