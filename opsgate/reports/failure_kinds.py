"""A failure's kind, from the type of the error behind it (opsgate.errors), not from
the words of its message.

Allure's categories can only match message text (``categories.json``), and a message
that changes its wording changes its category there. opsgate's own record of a failure
carries its kind (summary.json's test ``kind``) taken from the exception: a check fails
with `fixtures.fail`, inside the ``except`` that caught the error, so the error is the
failure's ``__context__`` (or its ``__cause__``); a failure with no opsgate error behind
it is the check's own verdict on the target.
"""

from __future__ import annotations

from opsgate.errors import (
    BlobError,
    BlobFormatError,
    ChangeRangeError,
    ConfigError,
    ContractError,
    DatabaseUnavailableError,
    DriftInputError,
    HttpCheckError,
    MissingEnvError,
    NotTriedAgainError,
    OpsgateError,
    PostgresUnavailableError,
    SessionEndpointError,
)

MISSING_VARIABLE = "Missing variable"
CONFIGURATION = "Configuration"
UNREACHABLE = "Target unreachable"
CONTRACT = "Schema or contract"
COULD_NOT_RUN = "Could not run"
#: The check ran and judged the target wrong (a difference, a floor, a setting).
VERDICT = "Check verdict"
#: An exception that is no opsgate error and no check's verdict: a bug to report.
UNEXPECTED = "Unexpected error"

#: First match wins: subclasses before their bases.
BY_TYPE: tuple[tuple[type[OpsgateError], str], ...] = (
    (MissingEnvError, MISSING_VARIABLE), (SessionEndpointError, MISSING_VARIABLE),
    (ConfigError, CONFIGURATION), (ChangeRangeError, CONFIGURATION),
    (BlobFormatError, CONTRACT), (ContractError, CONTRACT), (DriftInputError, CONTRACT),
    (NotTriedAgainError, UNREACHABLE),
    (DatabaseUnavailableError, UNREACHABLE), (HttpCheckError, UNREACHABLE),
    (BlobError, UNREACHABLE), (PostgresUnavailableError, COULD_NOT_RUN),
    (OpsgateError, COULD_NOT_RUN),
)


#: Every kind, as summary.json's schema lists them.
KINDS: tuple[str, ...] = (MISSING_VARIABLE, CONFIGURATION, UNREACHABLE, CONTRACT,
                          COULD_NOT_RUN, VERDICT, UNEXPECTED)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def again_of(exc: BaseException) -> str | None:
    """The first line of the failure ``exc`` repeats, when a `NotTriedAgainError` is
    behind it: a target that did not answer earlier in the run, not tried again."""
    for link in _chain(exc):
        if isinstance(link, NotTriedAgainError):
            return link.first
    return None


def kind_of(exc: BaseException, *, verdict_types: tuple[type[BaseException], ...]
            ) -> str:
    """The kind of a failure whose exception is ``exc``: the first opsgate error in its
    chain decides; else a ``verdict_types`` exception (pytest's failure, an
    ``AssertionError``) is the check's verdict; anything else is unexpected."""
    for link in _chain(exc):
        for cls, kind in BY_TYPE:
            if isinstance(link, cls):
                return kind
    return VERDICT if isinstance(exc, verdict_types) else UNEXPECTED
