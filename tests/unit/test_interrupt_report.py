"""pytest's report of a stop that landed on a generator instruction with no line number:
the gate's plugin leaves such traceback entries out, so the report is written instead
of failing with a TypeError (which ended a stopped gate in exit 1 and a traceback)."""

from __future__ import annotations

import types
from collections.abc import Generator

import pytest

from opsgate.pytest_plugin.plugin import pytest_keyboard_interrupt


def _streaming() -> Generator[int, None, None]:
    with open("/dev/null") as f:  # a with block: its exit has instructions with no line
        yield from range(3)
        f.read()


def _stopped_in_a_line_less_instruction() -> pytest.ExceptionInfo[BaseException]:
    """A KeyboardInterrupt whose traceback ends in a suspended generator's frame at an
    instruction Python maps to no line, as a signal can land (``tb_lineno`` None)."""
    stream = _streaming()
    assert isinstance(stream, types.GeneratorType)
    next(stream)
    offsets = [start for start, _end, line in _streaming.__code__.co_lines() if line is None]
    assert offsets, "this Python maps every instruction of the generator to a line"
    try:
        raise KeyboardInterrupt("SIGINT")
    except KeyboardInterrupt as exc:
        assert stream.gi_frame is not None and exc.__traceback__ is not None
        lineless = types.TracebackType(None, stream.gi_frame, offsets[0], -1)
        assert lineless.tb_lineno is None
        exc.__traceback__.tb_next = lineless
        return pytest.ExceptionInfo.from_exc_info((type(exc), exc, exc.__traceback__))


def test_pytests_report_of_the_stop_fails_without_the_plugins_filter() -> None:
    with pytest.raises(TypeError, match="NoneType"):
        _stopped_in_a_line_less_instruction().getrepr(funcargs=True)


def test_the_plugin_leaves_line_less_entries_out_of_the_report() -> None:
    excinfo = _stopped_in_a_line_less_instruction()
    before = len(excinfo.traceback)
    pytest_keyboard_interrupt(excinfo)
    assert len(excinfo.traceback) == before - 1
    assert "KeyboardInterrupt" in str(excinfo.getrepr(funcargs=True))
