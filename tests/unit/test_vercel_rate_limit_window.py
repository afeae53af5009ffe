"""The sandbox's ``vercel-429`` window says the seconds it was given, whatever the clock
reads: the difference of two readings carries float error."""

from __future__ import annotations

import itertools

import pytest

from opsgate.sandbox import vercel_api
from opsgate.sandbox.reference_app import Faults
from opsgate.sensitive import Secret

#: A monotonic reading at which ``(now + 3600) - now`` is 3600.0000000000036 in floats.
READING = 63827.46937809159


@pytest.mark.parametrize("seconds", [1, 3600])
def test_the_first_refusal_asks_for_exactly_the_window(
        monkeypatch: pytest.MonkeyPatch, seconds: int) -> None:
    assert (READING + 3600) - READING != 3600  # the float error this test is about
    readings = itertools.chain([READING], itertools.repeat(READING + seconds))
    monkeypatch.setattr(vercel_api, "_clock", lambda: next(readings))
    state = vercel_api.SandboxVercel(Secret("t"), "127.0.0.1:9")
    state.retry_after_s = seconds
    faults = Faults()
    faults.set("vercel-429")
    refused = state.overloaded(faults)
    assert refused is not None and refused.status_code == 429
    assert refused.headers["retry-after"] == str(seconds)
    assert state.overloaded(faults) is None  # the window has passed: answered
