"""Explicit error types, so callers can tell a usage mistake from a failed check.

Every error carries a one-line message meant for a human; none of them may embed a
secret value (callers pass masked forms).
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


class PostgresUnavailableError(OpsgateError):
    """No usable PostgreSQL server binaries, or the embedded cluster failed to start."""


class DatabaseUnavailableError(OpsgateError):
    """The database could not be reached or the connection was lost. The message names
    the masked URL and libpq's reason in one line."""


class SessionEndpointError(ConfigError):
    """Work that needs a database session (a snapshot, CREATE DATABASE, a migration) was
    given only a pooled endpoint. The message names the variable to set."""


class CanonError(OpsgateError):
    """A document or table cannot be hashed under canon-v1 (e.g. a value outside its domain)."""


def first_line(error: BaseException | str) -> str:
    """An error as one line: its first non-empty line (libraries such as libpq and yajl
    add detail and caret drawings below it), or the exception's class name. Not cut:
    callers redact first and shorten after, so no secret is ever half shown."""
    text = str(error)
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""
