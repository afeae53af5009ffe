"""Progress of long work, on a terminal only, through tqdm.

Building a scaled sandbox, a drill, drift and parity at 1M entities each run for tens of
seconds; silence that long reads as a hang. The bars go to stderr and only when stderr is
a terminal: CI logs, pipes, xdist workers and ``-q`` stay quiet (tqdm's ``disable=None``
decides by ``isatty``). The engines call `bar` without knowing who listens; a pytest run
points the stream past its output capture with `route_to` (see the plugin).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol

from tqdm import tqdm

__all__ = ["Bar", "Stream", "UncapturedStderr", "bar", "enabled", "route_to", "silence"]

class Stream(Protocol):
    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...
    def isatty(self) -> bool: ...


#: Where bars are drawn, and whether they may be drawn at all (see `route_to`).
_stream: Stream | None = None
_silenced = False
#: Called before a bar is first drawn: a gate run ends pytest's half-written line
#: (``checks/test_x.py ..``) there, so the bar, erased when done, takes none of it along.
_before_draw: Callable[[], None] | None = None


class Bar:
    """One line of progress: a count (with a total when known) and the current phase."""

    def __init__(self, inner: tqdm[Any] | None) -> None:
        self._inner = inner

    def advance(self, n: int = 1) -> None:
        if self._inner is not None:
            self._inner.update(n)

    def phase(self, text: str) -> None:
        """Name what is happening now (for work with phases rather than a count)."""
        if self._inner is not None:
            self._inner.set_postfix_str(text, refresh=True)

    def total(self, total: int) -> None:
        if self._inner is not None:
            self._inner.total = total
            self._inner.refresh()


def enabled() -> bool:
    stream = _stream if _stream is not None else sys.stderr
    return not _silenced and bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def bar(description: str, total: int | None = None, unit: str = "it") -> Iterator[Bar]:
    """A progress line on the terminal for the span of the ``with`` block (or nothing)."""
    if not enabled():
        yield Bar(None)
        return
    if _before_draw is not None:
        _before_draw()
    inner = tqdm(total=total, desc=description, unit=unit, unit_scale=True,
                 file=_stream if _stream is not None else sys.stderr, leave=False,
                 mininterval=0.5, dynamic_ncols=True)
    try:
        yield Bar(inner)
    finally:
        inner.close()


def silence(quiet: bool = True) -> None:
    """Turn bars off for this process (``-q``, or a caller that owns the terminal)."""
    global _silenced
    _silenced = quiet


def route_to(stream: Stream | None, before_draw: Callable[[], None] | None = None) -> None:
    """Draw bars on ``stream`` (None: the process's stderr at the time of drawing),
    calling ``before_draw`` before each bar appears."""
    global _stream, _before_draw
    _stream = stream
    _before_draw = before_draw


class UncapturedStderr:
    """stderr seen through pytest's output capture, suspended for each write.

    pytest replaces file descriptor 2 while tests run, so a bar drawn from inside a check
    would land in the captured output of that test. The capture manager's own
    ``global_and_fixture_disabled`` is the supported way past it; tqdm writes a few times a
    second, so suspending capture per write costs nothing measurable.
    """

    def __init__(self, suspend: Callable[[], AbstractContextManager[Any]] | None) -> None:
        self._suspend = suspend or nullcontext

    def write(self, text: str) -> int:
        with self._suspend():
            return sys.stderr.write(text)

    def flush(self) -> None:
        with self._suspend():
            sys.stderr.flush()

    def isatty(self) -> bool:
        with self._suspend():
            return sys.stderr.isatty()
