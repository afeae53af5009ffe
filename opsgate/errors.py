"""Every error opsgate raises on purpose, in one hierarchy, so a caller can tell a
usage mistake from a failed check from a target that did not answer.

    OpsgateError
    ├── ConfigError                 bad configuration: a usage error (exit 2 / pytest 4)
    │   ├── MissingEnvError         a required variable is not set (names it)
    │   ├── SessionEndpointError    session work given only a pooled URL (names the variable)
    │   └── ScriptError             a migration script badly named, duplicated, incomplete
    ├── DatabaseUnavailableError    the database could not be reached, or the connection was lost
    │   └── DatabaseNotTriedAgain   not reached earlier in this run: not tried again
    ├── PostgresUnavailableError    no usable PostgreSQL binaries, or a cluster did not start
    ├── HttpCheckError              an HTTP exchange gave no usable answer
    │   ├── VercelApiError          the Vercel REST API refused or gave no usable answer
    │   └── HttpNotTriedAgain       an origin not connected to earlier in this run: not tried again
    ├── NotTriedAgainError          a target that did not answer earlier (both above are one too)
    ├── BlobError                   the blob store gave no usable answer
    │   ├── BlobAuthError           the token was refused (never shown)
    │   └── BlobFormatError         an object is not what the layout promises
    ├── ContractError               a document does not match its JSON Schema
    ├── CanonError                  a value outside canon-v1's domain
    ├── DriftInputError             the legacy payload cannot be read or is not valid
    ├── DrillError                  the drill could not be carried out
    ├── ChangeRangeError            the git range of change control cannot be inspected
    └── OperationStopped            a guarded operation ends early, with a status and exit code

Every error carries a one-line message meant for a human; none may embed a secret value
(callers pass masked forms).
"""


class OpsgateError(Exception):
    """Base class of every error opsgate raises on purpose."""


class ConfigError(OpsgateError):
    """The configuration is unusable: a bad flag value, an unreadable env file.

    Maps to exit code 2 in the command line and to a pytest usage error in the gate.
    """


class MissingEnvError(ConfigError):
    """A required environment variable is not set. The message names it."""

    def __init__(self, variable: str, purpose: str = "") -> None:
        self.variable = variable
        detail = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"required environment variable {variable} is not set{detail}; "
            "set it in the environment or pass --env-file"
        )


#: What a check adds to the first line of a target that did not answer earlier in the
#: run, when it does not try that target again.
NOT_TRIED_AGAIN = " (earlier in this run; not tried again)"


class NotTriedAgainError(OpsgateError):
    """A target that did not answer earlier in this run, not tried again. ``first`` is
    the line that said so the first time: the reports join this failure to that one
    (one cause, every check named), from this type, never from the message's words."""

    def __init__(self, message: str, first: str) -> None:
        super().__init__(message)
        self.first = first


class PostgresUnavailableError(OpsgateError):
    """No usable PostgreSQL server binaries, or the embedded cluster failed to start."""


class DatabaseUnavailableError(OpsgateError):
    """The database could not be reached or the connection was lost: the message names
    the masked URL and libpq's reason in one line; or a statement that always returns a
    row came back without one, named by what it asks (`opsgate.clients.db.one_row`)."""


class DatabaseNotTriedAgain(NotTriedAgainError, DatabaseUnavailableError):
    """A database that could not be reached earlier in this run: not connected to again."""


class SessionEndpointError(ConfigError):
    """Work that needs a database session (a snapshot, CREATE DATABASE, a migration) was
    given only a pooled endpoint. The message names the variable to set."""


class CanonError(OpsgateError):
    """A document or table cannot be hashed under canon-v1 (e.g. a value outside its domain)."""


class ScriptError(ConfigError):
    """A migration script is badly named, duplicated or incomplete."""


class HttpCheckError(OpsgateError):
    """An HTTP exchange that did not give a usable answer; the message says why."""


class BlobError(OpsgateError):
    """The blob store did not give a usable answer."""


class BlobAuthError(BlobError):
    """The token was refused (401/403). The token itself is never shown."""


class BlobFormatError(BlobError):
    """An object exists but its content is not what the layout promises."""


class ContractError(OpsgateError):
    """A document does not match its contract schema."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{what} does not match its contract: " + "; ".join(problems))


class DriftInputError(OpsgateError):
    """The payload cannot be read or does not match its contract."""


class DrillError(OpsgateError):
    """The drill could not be carried out (as opposed to: it ran and found a mismatch)."""


class VercelApiError(HttpCheckError):
    """The Vercel REST API refused a request or answered something unusable. The message
    carries Vercel's error code and message, never the token."""


class HttpNotTriedAgain(NotTriedAgainError, HttpCheckError):
    """An origin that could not be connected to earlier in this run: no request is sent
    to it again (`opsgate.clients.web.RunTransport`)."""


class ChangeRangeError(OpsgateError):
    """The change-control range cannot be inspected: no repository, no git, a malformed
    range or an unknown revision. The message names the variable to fix."""


def first_line(error: BaseException | str) -> str:
    """An error as one line: its first non-empty line (libraries such as libpq and yajl
    add detail and caret drawings below it), or the exception's class name. Not cut:
    callers redact first and shorten after, so no secret is ever half shown."""
    text = str(error)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""


class OperationStopped(OpsgateError):
    """A guarded operation (`opsgate.operation`) ends early on purpose: refused, failed,
    nothing to do. It carries the summary's status, the exit code and the one line that
    says why, so every stage stops the same way."""

    def __init__(self, status: str, exit_code: int, message: str,
                 problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.exit_code, self.message = status, exit_code, message
        self.problems = problems or []
