"""In a built wheel: the checks, migrations and fixtures, mapped here from the project's
top-level ``checks/``, ``migrations/`` and ``fixtures/`` (pyproject's package-dir).
Found through `opsgate.resources`, never by path arithmetic."""
