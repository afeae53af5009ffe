"""Programs some self-tests need that opsgate itself does not: Node.js and npm (the
official @vercel/blob SDK, Allure 3), Chromium (report pages) and PgBouncer (the
Neon-shaped topology).

One rule for all of them, so CI cannot go green without them: under CI (``CI=true``,
set by every CI service and by ``.ci/run``) a missing one fails the test, naming it;
on a developer's machine the test skips, saying what to install.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from opsgate.errors import PostgresUnavailableError
from opsgate.sandbox.pgbouncer import find_pgbouncer


@dataclass(frozen=True)
class Tool:
    """A program (or set of programs) a test needs."""

    name: str
    #: Where it is, or None when it is missing.
    find: Callable[[], str | None]
    #: What to install, for the skip's reason.
    install: str


def _all_on_path(*names: str) -> Callable[[], str | None]:
    def find() -> str | None:
        found = [shutil.which(n) for n in names]
        return None if None in found else found[0]

    return find


def _first_on_path(*names: str) -> Callable[[], str | None]:
    def find() -> str | None:
        return next((hit for hit in map(shutil.which, names) if hit), None)

    return find


def _pgbouncer() -> str | None:
    try:
        return str(find_pgbouncer())
    except PostgresUnavailableError:
        return None


NODE = Tool("Node.js and npm (node, npm)", _all_on_path("node", "npm"),
            "Debian/Ubuntu: apt-get install nodejs npm")
CHROMIUM = Tool("Chromium (chromium, chromium-browser or google-chrome)",
                _first_on_path("chromium", "chromium-browser", "google-chrome"),
                "Debian/Ubuntu: apt-get install chromium")
PGBOUNCER = Tool("PgBouncer (pgbouncer: OPSGATE_PGBOUNCER, PATH or /usr/sbin)", _pgbouncer,
                 "Debian/Ubuntu: apt-get install pgbouncer, or set OPSGATE_PGBOUNCER")

#: The tools by the name a ``needs`` marker gives them: ``@pytest.mark.needs("node")``.
TOOLS = {"node": NODE, "chromium": CHROMIUM, "pgbouncer": PGBOUNCER}


def in_ci() -> bool:
    """CI services set ``CI=true`` (GitHub Actions, GitLab, CircleCI, Travis ...)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(tool: Tool) -> str:
    """Where ``tool`` is; when it is missing, fail under CI and skip elsewhere, in one
    line that names it."""
    found = tool.find()
    if found:
        return found
    if in_ci():
        pytest.fail(f"{tool.name} is missing, and CI must run this test: install it in CI "
                    f"({tool.install})", pytrace=False)
    pytest.skip(f"{tool.name} is not installed ({tool.install}); CI installs it and runs "
                "this test")
