"""SIGTERM stops opsgate the way SIGINT does.

CI cancels a job with SIGINT, then SIGTERM 7.5 s later, then SIGKILL; ``timeout``,
container runtimes and process supervisors send SIGTERM alone. Python turns only SIGINT
into ``KeyboardInterrupt``: under SIGTERM's default action the process dies at once, so
no ``finally`` runs, no running query is cancelled, no scratch database is dropped and
no report says the run was stopped. Inside `stop_on_signals` both signals raise
`Interrupted` (a ``KeyboardInterrupt``) in the main thread, so every cleanup path that
already handles Ctrl-C handles both, and `received` says which signal it was for the
reports.

Only the first signal raises. A second one, typically CI's SIGTERM while the first
one's cleanup still runs, is recorded but does not abort that cleanup half-way (that is
what leaves scratch databases behind); SIGKILL remains the last word.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Interrupted", "deferred", "hold", "received", "release", "reset",
           "stop_on_signals"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[str] = []
_deferring: list[bool] = []


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signal_name`` says which (``SIGINT`` or ``SIGTERM``)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def received() -> str | None:
    """The first stop signal this process received inside `stop_on_signals`, or None."""
    return _received[0] if _received else None


def reset() -> None:
    """Forget the signals received (a new run in the same process, as in the self-tests)."""
    _received.clear()


def _handler(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    _received.append(name)
    if len(_received) == 1 and not _deferring:
        raise Interrupted(name)


def hold() -> None:
    """From now until `release`: a stop signal is recorded (`received`) and raises
    nothing. For work that a stop must not cut in half once it has begun, and that ends
    in a second or so: writing and sealing the reports of a run whose checks are over
    (cut short, the run had a summary and no history line, or not even a summary)."""
    _deferring.append(True)


def release() -> None:
    """Ends the last `hold` (none: nothing to end)."""
    if _deferring:
        _deferring.pop()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """`hold` within the block, `release` after it."""
    hold()
    try:
        yield
    finally:
        release()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise `Interrupted` in the main thread (once); the
    previous handlers are back afterwards. Off the main thread it does nothing (Python
    delivers signals to the main thread only). A SIGINT that this process inherited as
    ignored (a job started in the background without job control) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}
    for sig in _STOP_SIGNALS:
        current = signal.getsignal(sig)
        if sig == signal.SIGINT and current == signal.SIG_IGN:
            continue
        previous[sig] = current
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for stop_sig, handler in previous.items():
            signal.signal(stop_sig, handler)
