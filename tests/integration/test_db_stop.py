"""A stop that lands while a command runs is still a stop: ending the transaction must not
put a "connection busy" error in its place (a drill stopped by SIGTERM during its restore
then read as failed: "can't change 'read_only' now: connection in transaction status
ACTIVE")."""

from __future__ import annotations

import os
import signal
import socket
import threading

import psycopg
import pytest

from opsgate.clients import db
from opsgate.sensitive import SecretUrl


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_stop_while_a_command_runs_leaves_as_a_stop(fresh_db: str, autocommit: bool) -> None:
    conn = psycopg.connect(fresh_db, autocommit=autocommit)
    try:
        with pytest.raises(KeyboardInterrupt), db.transaction(conn, read_only=True):
            # A command under way, as a stop between sending it and reading its answer
            # leaves the connection.
            conn.pgconn.send_query(b"SELECT pg_sleep(0.3)")
            raise KeyboardInterrupt
        assert conn.closed  # nothing more could run on it
    finally:
        conn.close()


class _StopDuringRollback(psycopg.Connection[tuple[object, ...]]):
    """A real connection whose rollback is cut short by a second stop, as CI's SIGTERM
    landing 7.5 s after its SIGINT does; the transaction is still open (INTRANS)."""

    def rollback(self) -> None:
        raise KeyboardInterrupt


def test_a_stop_during_the_rollback_leaves_as_a_stop(fresh_db: str) -> None:
    # Seen in CI: "can't change 'read_only' now: connection in transaction status INTRANS"
    # took the place of a drill's SIGTERM. (Only the autocommit path calls rollback().)
    conn = _StopDuringRollback.connect(fresh_db, autocommit=True)
    try:
        with pytest.raises(KeyboardInterrupt), db.transaction(conn, read_only=True):
            conn.execute("SELECT 1")
            raise KeyboardInterrupt
        assert conn.closed
    finally:
        conn.close()


def test_a_stop_during_the_handshake_closes_the_half_open_connection() -> None:
    """A server that accepts and never answers, as one still authenticating; a stop (a
    real SIGINT) lands while `db.connect` waits. The socket must be closed before the
    stop leaves `db.connect`: a half-open connection kept the server's backend waiting
    60 s for the handshake, and a DROP DATABASE of its database with it."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt) as stop:
                db.connect(SecretUrl(f"postgresql://u:p@127.0.0.1:{port}/d?sslmode=disable"))
        finally:
            timer.cancel()
        accepted, _ = server.accept()
        with accepted:
            accepted.settimeout(5)
            assert accepted.recv(4096)  # the client's startup packet
            try:
                rest: bytes | None = accepted.recv(4096)
            except TimeoutError:
                rest = None
            assert rest == b"", "the half-open connection still open 5 s after the stop"
        assert stop.value.__context__ is None  # the stop itself, nothing in its place
