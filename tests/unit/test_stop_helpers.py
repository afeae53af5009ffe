"""The stop tests' diagnosis of a process that does not stop: what the kernel says each
of its threads, and its children's, waits in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from tests.stop_helpers import descendants, kernel_waits


def test_kernel_waits_names_every_thread_and_child_and_what_it_sleeps_in() -> None:
    code = ("import subprocess, sys, threading, time\n"
            "child = subprocess.Popen(['sleep', '30'])\n"
            "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        # "ready" is printed before the main thread reaches its sleep: on a busy machine
        # it may still be running (state R), so look until every thread sleeps.
        deadline = time.monotonic() + 10
        while True:
            lines = kernel_waits(proc.pid).split("; ")
            mine = [line for line in lines if line.startswith(f"{proc.pid}/")]
            if all(" S " in line for line in lines) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(mine) == 2, lines  # the main thread and the sleeping one
        assert any(" sleep S " in line for line in lines), lines  # the child
        assert all("sleep" in line.split()[3] for line in mine), mine  # wchan: a sleep
    finally:
        for pid in (*descendants(proc.pid), proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert kernel_waits(proc.pid) == "nothing left"
