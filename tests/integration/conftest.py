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


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP retries of this test's process without their pauses (0.3 s, then 0.6 s):
    tests of an origin that does not answer assert the attempts and the message, and
    each waited out 0.9 s of pauses for it. Gate runs in this process share the module."""
    from opsgate.clients import web

    monkeypatch.setattr(web, "BACKOFF_S", 0.01)
