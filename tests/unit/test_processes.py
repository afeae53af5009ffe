"""Waiting for a child without Popen's private lock (`opsgate.processes.wait_exit`).

A stop (KeyboardInterrupt) that lands inside `Popen.poll` between the lock's acquire
and its ``try`` leaves the lock held for good: the tests stand in for that by holding
the lock themselves, the state such a stop leaves behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from opsgate.processes import exited, wait_exit


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    wait_exit(proc, 10)


def test_a_child_is_reaped_even_with_popens_lock_left_held(
        child: subprocess.Popen[bytes]) -> None:
    child._waitpid_lock.acquire()  # type: ignore[attr-defined]  # what the stop leaves
    child.kill()
    with pytest.raises(subprocess.TimeoutExpired):  # Popen's own wait spins to its end
        child.wait(0.3)
    started = time.monotonic()
    assert wait_exit(child, 10) == -signal.SIGKILL
    assert time.monotonic() - started < 2
    assert child.returncode == -signal.SIGKILL and exited(child)


def test_a_running_child_is_waited_for_at_most_the_timeout(
        child: subprocess.Popen[bytes]) -> None:
    started = time.monotonic()
    assert wait_exit(child, 0.2) is None and not exited(child)
    assert 0.2 <= time.monotonic() - started < 2
    assert child.returncode is None


def test_the_exit_code_is_popens() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert wait_exit(proc, None) == 3 == proc.returncode
    assert proc.wait(1) == 3  # Popen agrees afterwards
