"""The self-tests' waits for events (`tests.waits`) return on the event and fail,
naming it, when it does not come: a wait that passed without its event would make the
tests that use it pass by accident."""

from __future__ import annotations

import socket

import psycopg
import pytest

from tests.waits import backends_gone, port_closed, until


def test_until_returns_on_the_event_and_names_one_that_never_comes() -> None:
    calls = iter([False, False, True])
    until(lambda: next(calls), "the third call")
    with pytest.raises(AssertionError, match=r"^never: not within 0.1 s$"):
        until(lambda: False, "never", timeout=0.1)


def test_port_closed_waits_for_the_listener_to_go() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(AssertionError, match=rf"^127.0.0.1:{port} still listening"):
            port_closed(port, timeout=0.1)
    port_closed(port, timeout=5)


def test_backends_gone_waits_for_the_server_to_end_them(fresh_db: str) -> None:
    with psycopg.connect(fresh_db) as other:
        other.execute("SELECT 1")  # a transaction left open
        pid = other.info.backend_pid
        with pytest.raises(AssertionError, match=rf"^backends \[{pid}\] still on the server"):
            backends_gone(fresh_db, timeout=0.1)
        with pytest.raises(AssertionError, match=rf"^backends \[{pid}\] still on the server"):
            backends_gone(fresh_db, [pid], timeout=0.1)
    backends_gone(fresh_db, [pid], timeout=10)
    backends_gone(fresh_db, timeout=10)
