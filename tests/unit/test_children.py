"""`opsgate.children.Terminator` ends this process's children running the named programs,
and only those, until it is closed."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opsgate.children import Terminator, children_running

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def _program(name: str) -> Path:
    found = shutil.which(name)
    assert found, name
    return Path(found)


def test_named_children_are_terminated_others_left_alone_and_late_ones_too() -> None:
    sleep, cat = _program("sleep"), _program("cat")
    doomed = subprocess.Popen([str(sleep), "60"])
    bystander = subprocess.Popen([str(cat)], stdin=subprocess.PIPE)
    stop = Terminator([sleep], every=0.02)
    try:
        assert children_running([sleep]) == [doomed.pid]
        stop.start()
        assert doomed.wait(timeout=5) == -15
        late = subprocess.Popen([str(sleep), "60"])  # started by a thread that missed it
        assert late.wait(timeout=5) in (-15, -9)
        assert bystander.poll() is None and stop.stopping.is_set()
    finally:
        stop.close()
        for proc in (doomed, bystander):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    # Closed: nothing is looking any more.
    assert not [t for t in threading.enumerate() if t.name == "opsgate-stop-children"]


def test_a_child_that_ignores_sigterm_gets_sigkill_after_the_grace() -> None:
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "print('ready', flush=True); time.sleep(60)"
    stubborn = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == "ready\n"
    stop = Terminator([Path(sys.executable)], grace=0.3, every=0.02)
    try:
        t = time.monotonic()
        stop.start()
        assert stubborn.wait(timeout=5) == -9
        assert time.monotonic() - t >= 0.3
    finally:
        stop.close()
        if stubborn.poll() is None:
            stubborn.kill()
        stubborn.wait()


def test_a_refresh_stop_kills_and_reaps_a_tool_no_popen_owns() -> None:
    """A stop landing between a child's exec and Popen's return leaves a running child
    that no Popen object owns (and so that subprocess.run never kills): the refresh's
    cleanup finds it by its program and ends it before deleting a partial export."""
    import os

    from opsgate.refresh.run import _end_children

    sleep = _program("sleep")
    orphan = os.posix_spawn(str(sleep), [str(sleep), "60"], dict(os.environ))
    try:
        assert children_running([sleep]) == [orphan]
        _end_children([sleep])
        assert children_running([sleep]) == []
        try:
            os.waitpid(orphan, os.WNOHANG)
            raise AssertionError("the child was not reaped")
        except ChildProcessError:
            pass
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(orphan, 9)
            os.waitpid(orphan, 0)
