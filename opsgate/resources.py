"""Where opsgate's own files are: the runbook checks, the migrations, the fixtures.

In a source checkout (and an editable install) they are the project's top-level
``checks/``, ``migrations/`` and ``fixtures/``; in an installed wheel they are package
data under ``opsgate/_data/`` (pyproject maps them there at build time). Everything that
needs one of them asks here, so the same code works from a clone, from the app's CI
and from an operator's laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

__all__ = ["checks_dir", "data_path", "fixtures_dir", "migrations_dir"]

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent

Area = Literal["checks", "migrations", "fixtures"]


def data_path(area: Area) -> Path:
    """The folder of ``area``: the checkout's when opsgate runs from one (its
    pyproject names this project), else the installed package data."""
    checkout = _CHECKOUT / area
    if checkout.is_dir() and _is_opsgate_checkout(_CHECKOUT):
        return checkout
    return _PACKAGE / "_data" / area


def _is_opsgate_checkout(root: Path) -> bool:
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    return 'name = "opsgate"' in text


def checks_dir() -> Path:
    return data_path("checks")


def migrations_dir() -> Path:
    return data_path("migrations")


def fixtures_dir() -> Path:
    return data_path("fixtures")
