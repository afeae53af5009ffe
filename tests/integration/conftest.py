"""Fixtures of the integration tests: one sandbox per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from opsgate.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """A complete sandbox target, built once per module and torn down after it."""
    with Sandbox.start() as sb:
        yield sb
