"""A local target shaped like production: Neon, reached through Vercel.

What makes Neon different from a laptop PostgreSQL, and what this target reproduces:

* TLS only, SCRAM-SHA-256 passwords (`EmbeddedPostgres` in TLS mode);
* the application's role owns its database but is not a superuser: Neon's
  ``neondb_owner`` has LOGIN CREATEDB CREATEROLE and membership in ``neon_superuser``,
  so anything that needs a real superuser (``ALTER SYSTEM``, untrusted extensions,
  ``pg_authid``) fails there and must fail here too;
* the URL the application uses most (``DATABASE_URL``) goes through PgBouncer in
  transaction mode (`PgBouncer`), so session state leaks between clients.

`NeonShapedTarget.vercel_env` gives the variables ``vercel env pull`` would write, and
`NeonShapedTarget.fresh_pooled_settings` / `NeonShapedTarget.server_defaults` support a
leak test: after each command, every server connection of the pool should still show
every setting at the server's default.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from opsgate.clients.db import one_row
from opsgate.clients.pgtools import PgBinaries
from opsgate.errors import PostgresUnavailableError
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.sandbox.lifecycle import Service
from opsgate.sandbox.pgbouncer import PgBouncer, find_pgbouncer, read_scram_verifier
from opsgate.sandbox.tlsfiles import TlsFiles, make_tls_files
from opsgate.sensitive import Secret, SecretUrl

NEON_SUPERUSER = "neon_superuser"

# Settings left out of the comparison of pooled and direct connections, each with why.
# None so far: with PostgreSQL 15 and 17 behind PgBouncer 1.18, a fresh pooled server
# connection and a fresh direct one agree on every row of pg_settings (PgBouncer sends
# no client_encoding or other parameter of its own). application_name is compared too:
# PgBouncer does not reset it for a client that sends none, so it leaks for real.
PER_CONNECTION_SETTINGS: dict[str, str] = {}

_SETTINGS_SQL = "SELECT name, setting FROM pg_settings"

_SESSION_STATE_NAMES = ("prepared_statements", "advisory_locks", "listening", "cursors",
                        "temp_tables")
_SESSION_STATE_SQL = """
SELECT pg_backend_pid(),
  (SELECT count(*) FROM pg_prepared_statements),
  (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
  (SELECT count(*) FROM pg_listening_channels()),
  (SELECT count(*) FROM pg_cursors),
  (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())
"""


class NeonShapedTarget(Service):
    """``with NeonShapedTarget() as target:``; then ``target.pooled_url`` and friends."""

    def __init__(
        self,
        *,
        pool_size: int = 3,
        owner: str = "neondb_owner",
        dbname: str = "neondb",
        binaries: PgBinaries | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        also_remove: Sequence[Path] = (),
    ) -> None:
        self.pool_size = pool_size
        self.owner = owner
        self.dbname = dbname
        self._password = Secret(secrets.token_urlsafe(24))
        # A missing pgbouncer is reported up front; a server without SSL by the cluster's
        # start, the first thing `start` does: both before anything is started.
        self._pgbouncer_binary = find_pgbouncer()
        self.tls: TlsFiles = make_tls_files()
        self.cluster = EmbeddedPostgres(binaries, tls=self.tls, base_dir=base_dir,
                                        also_remove=also_remove)
        self.pooler: PgBouncer | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self.pooler is not None:
            return
        try:
            self.cluster.start()
            self._provision()
            port, root = self.cluster.port, self.cluster.root
            if port is None or root is None:
                raise PostgresUnavailableError("the Neon-shaped target's cluster did not start")
            verifier = read_scram_verifier(self.admin_url, self.owner)
            self.pooler = PgBouncer(
                server_port=port,
                users={self.owner: verifier or self._password},
                tls=self.tls,
                pool_size=self.pool_size,
                # Inside the cluster's folder: its reaper removes both if we are killed.
                base_dir=root,
                binary=self._pgbouncer_binary,
            )
            self.pooler.start()
        except BaseException:
            self.stop()
            raise

    def _provision(self) -> None:
        """Roles and database as Neon creates them, made by the harness superuser."""
        owner = sql.Identifier(self.owner)
        with self.cluster.connect(autocommit=True) as conn:
            # The verifier is computed here, as psql's \password does: the statement
            # (which a failing statement would put into the server log) holds no password.
            verifier = conn.pgconn.encrypt_password(
                self._password.reveal().encode(), self.owner.encode(), b"scram-sha-256")
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN CREATEDB CREATEROLE").format(
                sql.Identifier(NEON_SUPERUSER)))
            conn.execute(sql.SQL(
                "CREATE ROLE {} LOGIN CREATEDB CREATEROLE NOSUPERUSER IN ROLE {} PASSWORD {}"
            ).format(owner, sql.Identifier(NEON_SUPERUSER), sql.Literal(verifier.decode())))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(self.dbname), owner))
        with self.cluster.connect(self.dbname, autocommit=True) as conn:
            # PostgreSQL 15+ gives public to the database owner already; before 15 it
            # belongs to the bootstrap superuser and a non-superuser could not create in it.
            conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(owner))

    def stop(self) -> None:
        """Pooler first, then the cluster; both folders deleted. Idempotent."""
        pooler, self.pooler = self.pooler, None
        try:
            if pooler is not None:
                pooler.stop()
        finally:
            self.cluster.stop()

    # -- access ------------------------------------------------------------------

    def _started(self) -> PgBouncer:
        if self.pooler is None or self.cluster.port is None:
            raise PostgresUnavailableError("Neon-shaped target not started")
        return self.pooler

    @property
    def pooled_url(self) -> SecretUrl:
        """The owner through PgBouncer: TLS required, no channel binding (PgBouncer 1.18
        cannot offer it)."""
        return self._started().url(self.owner, self._password, self.dbname)

    @property
    def direct_url(self) -> SecretUrl:
        """The owner straight to the server, TLS and SCRAM with channel binding required."""
        self._started()
        return SecretUrl(
            f"postgresql://{quote(self.owner, safe='')}:{quote(self._password.reveal(), safe='')}"
            f"@127.0.0.1:{self.cluster.port}/{quote(self.dbname, safe='')}"
            "?sslmode=require&channel_binding=require"
        )

    @property
    def admin_url(self) -> SecretUrl:
        """The harness superuser on the target database: for test setup only, never for
        the code under test (production has no such role)."""
        return self.cluster.url(self.dbname)

    def vercel_env(self) -> dict[str, str]:
        """What ``vercel env pull`` writes for a Neon database, with real values.

        One addition: ``PGPORT`` (the pooler's), since the local ports are not 5432;
        ``PGHOST_UNPOOLED`` cannot carry the server's port, use the unpooled URL for it.
        The values are revealed: this is meant for a child process's environment."""
        pooler = self._started()
        pooled, direct = self.pooled_url.reveal(), self.direct_url.reveal()
        return {
            "DATABASE_URL": pooled,
            "DATABASE_URL_UNPOOLED": direct,
            "POSTGRES_URL": pooled,
            "POSTGRES_URL_NON_POOLING": direct,
            "PGHOST": pooler.host,
            "PGHOST_UNPOOLED": "127.0.0.1",
            "PGPORT": str(pooler.port),
            "PGUSER": self.owner,
            "PGDATABASE": self.dbname,
            "PGPASSWORD": self._password.reveal(),
        }

    # -- leak test support -------------------------------------------------------

    def pooled_settings_by_backend(
        self, connections: int | None = None
    ) -> dict[int, dict[str, str]]:
        """``pg_settings`` of every server connection in the owner's pool, by backend pid.

        Each new client opens a transaction and keeps it open, so PgBouncer must give it
        a server connection of its own; with ``pool_size`` clients every server
        connection of the pool (at most ``pool_size``) is visited. More clients than
        that would wait for a free server connection, so the count is capped. Call it
        while no other client holds a transaction through the pooler.
        """
        count = min(connections or self.pool_size, self.pool_size)
        url = self.pooled_url.reveal()
        by_pid: dict[int, dict[str, str]] = {}
        opened: list[psycopg.Connection[Any]] = []
        try:
            for _ in range(count):
                conn = psycopg.connect(url, connect_timeout=10)
                opened.append(conn)
                by_pid[_backend_pid(conn)] = _settings(conn)
        finally:
            for conn in opened:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                conn.close()
        if len(by_pid) != count:
            raise PostgresUnavailableError(
                f"{count} pooled transactions shared {len(by_pid)} server connections: "
                "the pooler is not in transaction mode with its own pool")
        return by_pid

    def pooled_session_state(self) -> dict[int, dict[str, int]]:
        """Session state other than settings on every server connection of the pool, by
        backend pid: prepared statements, advisory locks held, LISTEN channels, open
        cursors and temporary tables. All of it would reach the next client."""
        count = self.pool_size
        opened: list[psycopg.Connection[Any]] = []
        state: dict[int, dict[str, int]] = {}
        try:
            for _ in range(count):
                conn = psycopg.connect(self.pooled_url.reveal(), connect_timeout=10,
                                       prepare_threshold=None)
                opened.append(conn)
                row = one_row(conn.execute(_SESSION_STATE_SQL), "the pooler's session state")
                pid, *counts = row
                state[int(pid)] = dict(zip(_SESSION_STATE_NAMES, map(int, counts),
                                           strict=True))
        finally:
            for conn in opened:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                conn.close()
        return state

    def fresh_pooled_settings(self, connections: int | None = None) -> dict[str, str]:
        """The union of `pooled_settings_by_backend`: a setting on which the server
        connections agree maps to that value; one on which they differ maps to their
        distinct values, sorted and joined by `` | ``, so that it can never equal a
        default and a comparison with `server_defaults` shows every value seen."""
        seen: dict[str, set[str]] = {}
        for settings in self.pooled_settings_by_backend(connections).values():
            for name, value in settings.items():
                seen.setdefault(name, set()).add(value)
        return {name: " | ".join(sorted(values)) for name, values in seen.items()}

    def server_defaults(self) -> dict[str, str]:
        """``pg_settings`` of a fresh direct connection of the owner, read the same way
        (inside a transaction), as the reference for `fresh_pooled_settings`."""
        with psycopg.connect(self.direct_url.reveal(), connect_timeout=10) as conn:
            result = _settings(conn)
            conn.rollback()
        return result

    def __repr__(self) -> str:
        state = f"pooler {self.pooler!r}, {self.cluster!r}" if self.pooler else "not started"
        return f"NeonShapedTarget({state})"


def _backend_pid(conn: psycopg.Connection[Any]) -> int:
    row = one_row(conn.execute("SELECT pg_backend_pid()"), "the backend's pid")
    return int(row[0])


def _settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(_SETTINGS_SQL).fetchall()
    return {str(name): str(value) for name, value in rows
            if name not in PER_CONNECTION_SETTINGS}
