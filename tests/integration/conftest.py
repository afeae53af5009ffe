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


@pytest.fixture
def gate_in_process(pytester: pytest.Pytester) -> Iterator[None]:
    """Gate runs of this test go through pytester in this process (`run_gate_here`): a
    check's verdict needs no new interpreter, about a second saved per run."""
    from tests.gate_helpers import PYTESTERS

    PYTESTERS.append(pytester)
    yield
    PYTESTERS.remove(pytester)
