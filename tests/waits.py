"""Waiting for an event rather than for the clock: a test that sleeps a fixed time for
something to happen fails on a slow machine, or, when it proves that something did not
happen, passes there without proving it. These poll for the event itself, within a
deadline, and fail naming what never happened."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Collection
from typing import Any

import psycopg

#: Long enough for a loaded CI machine; a test that waits this long has failed anyway.
DEADLINE_S = 30.0
_POLL_S = 0.02


def until(event: Callable[[], bool], what: str | Callable[[], str],
          timeout: float = DEADLINE_S) -> None:
    """Return as soon as ``event()`` is true; fail naming ``what`` (or what it returns
    then) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not event():
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else what()
            raise AssertionError(f"{said}: not within {timeout:g} s")
        time.sleep(_POLL_S)


def _backends(conn: psycopg.Connection[Any], pids: Collection[int] | None) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND (%s::int[] IS NULL OR pid = ANY(%s::int[]))",
        (None if pids is None else list(pids),) * 2).fetchall()
    return [int(r[0]) for r in rows]


def backends_gone(url: str, pids: Collection[int] | None = None,
                  timeout: float = DEADLINE_S) -> None:
    """Until the server has ended the backends ``pids`` (by default every other backend of
    the database of ``url``): a backend ends once its transaction is rolled back, so
    after this a killed client's writes are gone, and a timed-out session is closed."""
    with psycopg.connect(url, autocommit=True) as conn:
        backends_gone_on(conn, pids, timeout)


def backends_gone_on(conn: psycopg.Connection[Any], pids: Collection[int] | None = None,
                     timeout: float = DEADLINE_S) -> None:
    """`backends_gone`, asked through ``conn`` (autocommit)."""
    until(lambda: not _backends(conn, pids),
          lambda: f"backends {_backends(conn, pids)} still on the server", timeout)


def port_closed(port: int, host: str = "127.0.0.1", timeout: float = DEADLINE_S) -> None:
    """Until nothing listens on ``host:port`` any more."""

    def refused() -> bool:
        with socket.socket() as s:
            return s.connect_ex((host, port)) != 0

    until(refused, f"{host}:{port} still listening", timeout)
