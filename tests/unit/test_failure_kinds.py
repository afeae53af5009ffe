"""A failure's kind comes from the type of the error behind it, whatever its words."""

from __future__ import annotations

import pytest

from opsgate.clients import contracts
from opsgate.errors import (
    BlobAuthError,
    BlobFormatError,
    DatabaseUnavailableError,
    DrillError,
    MissingEnvError,
)
from opsgate.pytest_plugin.fixtures import fail
from opsgate.reports import failure_kinds

VERDICT = (pytest.fail.Exception, AssertionError)


def _failure_of(error: BaseException | None, *, cause: bool = False) -> BaseException:
    """What a check raises through `fail`: inside the ``except``, or given the cause."""
    try:
        if error is None:
            fail("kb_edges has 435 rows, expected at least 436")
        if cause:
            fail("refused (earlier in this run; not tried again)", error)
        try:
            raise error
        except type(error):
            fail("the same words for every kind: refused, missing, schema, differ")
    except pytest.fail.Exception as failure:
        return failure
    raise AssertionError("fail() returned")


@pytest.mark.parametrize(("error", "kind"), [
    (MissingEnvError("DATABASE_URL"), failure_kinds.MISSING_VARIABLE),
    (DatabaseUnavailableError("x"), failure_kinds.UNREACHABLE),
    (BlobAuthError("x"), failure_kinds.UNREACHABLE),
    (BlobFormatError("x"), failure_kinds.CONTRACT),
    (DrillError("x"), failure_kinds.COULD_NOT_RUN),
])
def test_the_kind_is_the_errors_type_not_the_message(error: BaseException, kind: str) -> None:
    assert failure_kinds.kind_of(_failure_of(error), verdict_types=VERDICT) == kind
    assert failure_kinds.kind_of(_failure_of(error, cause=True), verdict_types=VERDICT) == kind


def test_a_check_that_judged_the_target_is_a_verdict_and_a_bug_is_unexpected() -> None:
    assert failure_kinds.kind_of(_failure_of(None), verdict_types=VERDICT) == \
        failure_kinds.VERDICT
    assert failure_kinds.kind_of(AssertionError("a != b"), verdict_types=VERDICT) == \
        failure_kinds.VERDICT
    assert failure_kinds.kind_of(KeyError("x"), verdict_types=VERDICT) == \
        failure_kinds.UNEXPECTED


def test_the_schema_lists_every_kind() -> None:
    schema = contracts.schema("report-summary")
    assert schema["$defs"]["test"]["properties"]["kind"]["enum"] == list(failure_kinds.KINDS)
    assert {kind for _, kind in failure_kinds.BY_TYPE} <= set(failure_kinds.KINDS)
