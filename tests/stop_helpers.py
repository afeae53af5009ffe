"""Stopping a real opsgate process with a signal, and finding what it left behind.

A run is stopped the way CI and ``timeout`` stop it: one signal to its pid, not to its
process group, so its children get nothing from the sender and what becomes of them is
the run's own doing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: GitHub's grace between the SIGINT of a cancelled job and its SIGTERM.
GRACE_S = 7.5


def _stat(pid: int | Path) -> tuple[str, str, int] | None:
    """(name, state, parent) of ``pid`` (or of the thread whose ``/proc`` folder is
    given), or None when it is gone."""
    try:
        text = ((pid if isinstance(pid, Path) else Path(f"/proc/{pid}")) / "stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    rest = text[text.rindex(")") + 2:].split()
    return name, rest[0], int(rest[1])


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``: pid -> program name."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None and info[1] != "Z":
                parents.setdefault(info[2], []).append((int(entry.name), info[0]))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child, name in parents.get(todo.pop(), []):
            found[child] = name
            todo.append(child)
    return found


def kernel_waits(pid: int) -> str:
    """One line per thread of ``pid`` and of its descendants: pid/tid, name, state and
    the kernel function it sleeps in (``wchan``), with the top of its kernel stack where
    this user may read it (root): "S do_unlinkat" or "D jbd2_log_wait_commit" says what
    a Python stack cannot."""
    lines = []
    for one in (pid, *descendants(pid)):
        for task in sorted(Path(f"/proc/{one}/task").glob("*"), key=lambda p: int(p.name)):
            info = _stat(task)
            try:
                wchan = (task / "wchan").read_text().strip() or "-"
            except OSError:
                continue
            if info is None:
                continue
            name, state, _ = info
            try:
                top = " < ".join(line.split()[-1].split("+")[0]
                                 for line in (task / "stack").read_text().splitlines()[:4])
            except OSError:
                top = ""
            lines.append(f"{one}/{task.name} {name} {state} {wchan}"
                         + (f" [{top}]" if top else ""))
    return "; ".join(lines) or "nothing left"


def alive(pid: int) -> bool:
    info = _stat(pid)
    return info is not None and info[1] != "Z"


def wait_for(what: str, probe: Callable[[], T | None], proc: subprocess.Popen[bytes],
             timeout: float = 120.0, out: Path | None = None) -> T:
    """Poll ``probe`` until it returns something; fail naming ``what`` when the process
    ends first or ``timeout`` passes (with the tail of its output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    tail = out.read_text(errors="replace")[-1500:] if out and out.exists() else ""
    raise AssertionError(f"never saw {what} (exit {proc.poll()}): {tail}")


@dataclass
class Stopped:
    """A run stopped by ``signal_name``: how fast and what ran below it at the time."""

    signal_name: str
    exit_code: int
    seconds: float
    children: dict[int, str] = field(default_factory=dict)

    def children_left(self, within: float = 1.0) -> dict[int, str]:
        """The processes that ran below the run when it was signalled and still live
        ``within`` seconds after it exited (a grandchild's own exit may lag)."""
        deadline = time.monotonic() + within
        while True:
            left = {p: n for p, n in self.children.items() if alive(p)}
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = 60.0,
         out: Path | None = None) -> Stopped:
    """Send ``sig`` to ``proc`` alone and wait for it to exit.

    A process still running after ``timeout`` gets SIGABRT first: a Python process with
    faulthandler on (pytest turns it on) then writes every thread's stack to its output,
    and the failure shows where it is then (the tail of ``out``), after what the kernel
    said each thread of it and of its children waited in (`kernel_waits`) at CI's
    grace (`GRACE_S`) and at the end: a Python stack alone does not tell a slow system
    call from a slow loop, and where a stopped run is at the end may be past what held
    it (a drill's DROP DATABASE waited out a 60 s server time-out, and the test's
    minute ran out just after)."""
    children = descendants(proc.pid)
    t = time.monotonic()
    proc.send_signal(sig)
    early = ""
    try:
        try:
            code = proc.wait(timeout=min(GRACE_S, timeout))
        except subprocess.TimeoutExpired:
            early = f"at {GRACE_S:g} s: {kernel_waits(proc.pid)}; at {timeout:g} s: "
            code = proc.wait(timeout=max(0.0, timeout - (time.monotonic() - t)))
    except subprocess.TimeoutExpired:
        waits = early + kernel_waits(proc.pid)
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        tail = out.read_text(errors="replace")[-4000:] if out and out.exists() else ""
        raise AssertionError(f"still running {timeout} s after {sig.name}; in the kernel: "
                             f"{waits}; its stacks: {tail}") from None
    return Stopped(sig.name, code, time.monotonic() - t, children)


@contextmanager
def reaped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Whatever happens inside (a probe that never fires, a failed assertion), ``proc``
    is not left running after the test."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_stopped_in_time(stopped: Stopped, exit_code: int, said: str) -> None:
    """``stopped`` ended with ``exit_code`` inside CI's grace period; ``said`` is the
    tail of its output, for the failure's line."""
    assert stopped.exit_code == exit_code, (
        f"exit {stopped.exit_code} after {stopped.signal_name}: {said[-800:]}")
    assert stopped.seconds < GRACE_S, (
        f"exited {stopped.seconds:.1f} s after {stopped.signal_name}: {said[-800:]}")
