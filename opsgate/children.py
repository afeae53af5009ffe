"""Stopping the PostgreSQL client programs a stopped run has started.

A drill runs pg_dump, pg_restore and psql from worker threads. A stop signal reaches the
main thread only, and a child started by a worker thread goes on reading or writing
until it ends on its own: at a million entities that is many seconds (and a SIGTERM
sent to opsgate alone never reaches the children at all). So the main thread, once it
is stopping, terminates them itself, found as this process's children running one of
the named programs: no call site has to register what it starts (psql's hashing
streams are started deep inside the hashing code), and nothing else this process
started (a sandbox's server, a second Python process) is touched.

Linux only: children are found in ``/proc``; elsewhere nothing is found and the
children end as they would have without a stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path

__all__ = ["Terminator", "children_running"]

_PROC = Path("/proc")


def _parent_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def children_running(programs: Collection[Path]) -> list[int]:
    """Live (not zombie) children of this process whose executable is one of
    ``programs``."""
    wanted = {os.path.realpath(p) for p in programs}
    me = os.getpid()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(_PROC):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            info = _parent_and_state(pid)
            if info is None or info[0] != me or info[1] == "Z":
                continue
            try:
                exe = os.readlink(_PROC / entry.name / "exe")
            except OSError:
                continue
            if exe in wanted:
                found.append(pid)
    return found


class Terminator:
    """Once `start` is called, SIGTERM every child running one of ``programs`` (SIGKILL
    after ``grace`` seconds) every ``every`` seconds, until `close`: a worker thread
    that was about to start another child when the stop came gets it terminated too.

    ``stopping`` is set by `start`, for workers to check before they start a child.
    """

    def __init__(self, programs: Collection[Path], *, grace: float = 1.0,
                 every: float = 0.05) -> None:
        self.programs = tuple(programs)
        self.grace, self.every = grace, every
        self.stopping = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.terminated: list[int] = []

    def start(self) -> None:
        """Terminate the children now and keep doing so until `close` (idempotent)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._sweep({})  # at once, before any join can wait for a child
        self._thread = threading.Thread(target=self._loop, name="opsgate-stop-children",
                                        daemon=True)
        self._thread.start()

    def _sweep(self, first_seen: dict[int, float]) -> None:
        now = time.monotonic()
        for pid in children_running(self.programs):
            seen = first_seen.setdefault(pid, now)
            sig = signal.SIGKILL if now - seen >= self.grace else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if pid not in self.terminated:
                self.terminated.append(pid)

    def _loop(self) -> None:
        first_seen: dict[int, float] = {}
        while not self._closed.wait(self.every):
            self._sweep(first_seen)

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()

    @contextlib.contextmanager
    def on_interrupt(self) -> Iterator[None]:
        """Within: a KeyboardInterrupt (SIGINT, or SIGTERM under
        `opsgate.interrupts.stop_on_signals`) starts the termination before it travels
        on, so the joins it meets on its way out wait for seconds, not for the work."""
        try:
            yield
        except KeyboardInterrupt:
            self.start()
            raise
