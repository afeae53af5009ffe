"""Whether a process still lives, and waiting for a child to exit, the questions the
reaper, the drill's sweep of dead drills' dump folders and every stop path ask."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from typing import Any, TypeVar

__all__ = ["alive", "exited", "piped", "wait_exit"]

_Stream = TypeVar("_Stream")


def piped(stream: _Stream | None) -> _Stream:
    """A child's stream the caller asked for with ``subprocess.PIPE``. `Popen` types
    every stream as optional (None where no pipe was asked for); this narrows it with a
    check that ``python -O`` keeps, where an ``assert`` would vanish."""
    if stream is None:
        raise TypeError("opsgate: a child's stream read or written without subprocess.PIPE")
    return stream


def alive(pid: int) -> bool:
    """True while ``pid`` exists (someone else's process included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exited(proc: subprocess.Popen[Any]) -> bool:
    """`Popen.poll` for loops a stop may interrupt: True once ``proc`` has exited (and
    is reaped, its ``returncode`` set)."""
    return wait_exit(proc, 0) is not None


def wait_exit(proc: subprocess.Popen[Any], timeout: float | None) -> int | None:
    """``proc``'s exit code once it has exited, waiting at most ``timeout`` seconds
    (None: until it exits); None if it still runs.

    Hand-written instead of `Popen.wait`/`Popen.poll`: both take a private lock before
    they reap, and poll enters its ``try`` only after the acquire, so a
    KeyboardInterrupt (a stop signal) landing between the two leaves the lock held for
    good. Every later ``wait(timeout)`` then spins to its timeout although the child is
    long dead, and ``wait()`` never returns: a drill stopped while its local server was
    starting (a poll every 5 ms) spent 30 s after SIGQUIT and 30 s after SIGKILL there.
    This reaps with `os.waitpid` itself and sets ``returncode`` as Popen would; it waits
    on a pidfd (readable once the child exits), or in 10 ms steps where there is none.
    """
    if proc.returncode is not None:
        return proc.returncode
    deadline = None if timeout is None else time.monotonic() + timeout
    # `exited`'s look (timeout 0, a readiness loop's every 5 ms) never waits: no pidfd.
    pidfd = None if timeout == 0 else _pidfd(proc.pid)
    try:
        while True:
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by Popen meanwhile, or SIGCHLD ignored
                if proc.returncode is None:
                    proc.returncode = 0  # what Popen itself says then
                return proc.returncode
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(0.01 if remaining is None else min(remaining, 0.01))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    """A pidfd of ``pid`` (Linux 5.3 and newer), or None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    with contextlib.suppress(OSError):
        fd: int = opener(pid)
        return fd
    return None
