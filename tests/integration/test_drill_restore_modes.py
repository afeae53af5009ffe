"""Where the drill restores its copy: by default a throwaway local PostgreSQL, so the
target server sees only reads; a scratch database on the target server only when
asked (OPSGATE_DRILL_RESTORE=target-scratch).

"Only reads" is taken from the target server's own log: ``log_statement = 'mod'``
logs every DDL and data-changing statement (CREATE DATABASE included) any session
sends, so a drill that wrote anything there would leave a line.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from opsgate.config import Settings
from opsgate.errors import ConfigError, DrillError
from opsgate.sandbox import Sandbox
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.verify.drill import DRILL_LOCK_CLASS, SCRATCH_PREFIX, run_drill
from tests.migration_helpers import db_fingerprint
from tests.waits import backends_gone_on


@pytest.fixture(scope="module")
def neon() -> Iterator[Sandbox]:
    with Sandbox.start(profile="neon") as sb:
        yield sb


def _databases(server: EmbeddedPostgres) -> list[str]:
    with server.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]


@contextlib.contextmanager
def statements_logged(server: EmbeddedPostgres) -> Iterator[list[str]]:
    """The statements that change anything (DDL, DML) sent to ``server`` by any session
    while the block runs, read from its log."""
    log = server.datadir / "server.log"

    def set_mode(mode: str) -> None:
        with server.connect(autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET log_statement = '{mode}'")
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the postmaster rereads its files
            with server.connect() as conn:
                row = conn.execute("SHOW log_statement").fetchone()
            if row and row[0] == mode:
                return
            time.sleep(0.02)
        raise AssertionError(f"log_statement did not become {mode}")

    set_mode("mod")
    offset = log.stat().st_size
    seen: list[str] = []
    try:
        yield seen
    finally:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        set_mode("none")
        seen.extend(line for line in text.splitlines() if "statement: " in line
                    and "log_statement" not in line)


def test_the_default_drill_restores_locally_and_writes_nothing_to_the_target_server(
        sandbox: Sandbox) -> None:
    assert sandbox.pg is not None
    before_dbs = _databases(sandbox.pg)
    before = db_fingerprint(sandbox.environ()["DATABASE_URL"])
    with statements_logged(sandbox.pg) as written:
        result = run_drill(Settings.load(environ=sandbox.environ()))
    assert result.problems == []
    assert written == [], written[:3]
    assert _databases(sandbox.pg) == before_dbs
    assert db_fingerprint(sandbox.environ()["DATABASE_URL"]) == before
    assert result.restore_mode == "local"
    # OPSGATE_PG_BINDIR (the sandbox's server binaries) wins, as it does for the tools.
    local_major = int(result.restore_target.split("PostgreSQL ")[1].split(".")[0])
    assert result.restore_target.startswith("a throwaway local PostgreSQL ")
    assert local_major >= int(result.server_version.split(".")[0])
    assert "nothing written to the target server" in result.restore_target
    # The sandbox's role is a superuser; the copy's role of the same name is not.
    assert result.restore_role == {"name": "opsgate", "source_superuser": True,
                                   "attributes": ["CREATEDB", "CREATEROLE", "INHERIT",
                                                  "REPLICATION", "BYPASSRLS"],
                                   "superuser_in_copy": False}
    ev = result.evidence()
    assert ev["restore_mode"] == "local" and ev["restore_target"] == result.restore_target
    assert str(sandbox.pg.url().password) not in str(ev)


def test_target_scratch_mode_restores_on_the_target_server_and_drops_it(
        sandbox: Sandbox) -> None:
    """The explicit choice still works, and the log above does see a CREATE DATABASE
    (the check that the default mode sends none can go red)."""
    assert sandbox.pg is not None
    before_dbs = _databases(sandbox.pg)
    with statements_logged(sandbox.pg) as written:
        result = run_drill(Settings.load(environ={
            **sandbox.environ(), "OPSGATE_DRILL_RESTORE": "target-scratch"}))
    assert result.problems == []
    assert result.restore_mode == "target-scratch"
    assert "opsgate_drill_scratch_" in result.restore_target
    assert any('CREATE DATABASE "opsgate_drill_scratch_' in line for line in written), written
    assert _databases(sandbox.pg) == before_dbs


def test_an_unknown_restore_mode_is_a_configuration_error(sandbox: Sandbox) -> None:
    with pytest.raises(ConfigError, match=r"OPSGATE_DRILL_RESTORE='production'.*local, "
                                          "target-scratch"):
        Settings.load(environ={**sandbox.environ(), "OPSGATE_DRILL_RESTORE": "production"})


def test_a_superuser_only_object_fails_the_local_restore_as_it_would_on_neon(
        sandbox: Sandbox) -> None:
    """A function in LANGUAGE internal can only be created by a superuser: the local
    copy's role is not one (nor is Neon's neondb_owner), so the restore fails there,
    naming it, rather than passing as a restore by the local superuser would."""
    assert sandbox.pg is not None
    url = sandbox.environ()["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION opsgate_test_abs(int) RETURNS int LANGUAGE internal "
                     "IMMUTABLE STRICT AS 'int4abs'")
    try:
        with pytest.raises(DrillError, match="permission denied for language internal"):
            run_drill(Settings.load(environ=sandbox.environ()))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP FUNCTION opsgate_test_abs(int)")


def test_the_default_drill_on_the_neon_shaped_target_restores_locally_as_its_owner(
        neon: Sandbox) -> None:
    assert neon.pg is not None
    before_dbs = _databases(neon.pg)
    with statements_logged(neon.pg) as written:
        result = run_drill(Settings.load(environ=neon.environ()))
    assert result.problems == [], result.problems
    assert written == [], written[:3]
    assert _databases(neon.pg) == before_dbs
    assert result.restore_mode == "local"
    assert result.restore_role == {"name": "neondb_owner", "source_superuser": False,
                                   "attributes": ["CREATEDB", "CREATEROLE", "INHERIT"],
                                   "superuser_in_copy": False}
    assert result.source.startswith("postgresql://neondb_owner:***@")


def test_a_table_of_another_role_the_owner_cannot_read_fails_the_local_drill(
        neon: Sandbox, tmp_path: Path) -> None:
    """An object in the source owned by another role, not readable by the drill's role:
    the drill goes red naming it, in local mode as in the others."""
    assert neon.pg is not None and neon.neon is not None
    with neon.pg.connect(neon.neon.dbname, autocommit=True) as conn:
        conn.execute("CREATE ROLE opsgate_test_other NOLOGIN")
        conn.execute("CREATE TABLE public.other_roles_notes (id int)")
        conn.execute("ALTER TABLE public.other_roles_notes OWNER TO opsgate_test_other")
    try:
        with pytest.raises(DrillError, match="permission denied for table other_roles_notes"):
            run_drill(Settings.load(environ=neon.environ()))
    finally:
        with neon.pg.connect(neon.neon.dbname, autocommit=True) as conn:
            conn.execute("DROP TABLE public.other_roles_notes")
            conn.execute("DROP ROLE opsgate_test_other")
    assert not list(tmp_path.iterdir())


def _terminate_the_drills_sessions(conn: psycopg.Connection[Any]) -> list[int]:
    """``pg_terminate_backend`` of the drill's two sessions (the one holding its scratch
    copy's advisory lock, and the snapshot's, named opsgate-drill), as a Neon compute
    restart ends them; returns once both backends are gone (their locks with them)."""
    pids = [int(r[0]) for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE pid IN (SELECT pid FROM pg_locks WHERE "
        "locktype = 'advisory' AND classid = %s) OR application_name = 'opsgate-drill'",
        (DRILL_LOCK_CLASS,))]
    conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
    backends_gone_on(conn, pids)
    return pids


def _scratch_databases(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (SCRATCH_PREFIX,))]


def test_a_drill_whose_sessions_are_terminated_still_drops_its_scratch_copy(
        neon: Sandbox) -> None:
    """The drill's sessions terminated once its scratch copy exists, as it starts hashing
    the source: the drill fails in one line, and the copy (a full copy of production)
    is dropped over a new connection, not left for the next drill: the advisory lock
    that marked it in use ended with the terminated session."""
    assert neon.pg is not None and neon.neon is not None
    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def terminate_on_pipeline(title: str) -> Iterator[None]:
        if title.startswith("dump and restore"):  # the scratch copy exists by now
            seen["scratch"] = _scratch_databases(admin)
            seen["pids"] = _terminate_the_drills_sessions(admin)
        yield

    with neon.pg.connect(neon.neon.dbname, autocommit=True) as admin:
        try:
            with pytest.raises(DrillError) as info:
                run_drill(Settings.load(environ={
                    **neon.environ(), "OPSGATE_DRILL_RESTORE": "target-scratch"}),
                    steps=terminate_on_pipeline)
            left = _scratch_databases(admin)
        finally:
            for name in _scratch_databases(admin):  # a failing run's copy
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                    sql.Identifier(name)))
    message = str(info.value)
    assert len(seen["scratch"]) == 1 and len(seen["pids"]) == 2, seen
    assert message.startswith("hashing the source in the dump's snapshot failed: "
                              "terminating connection due to administrator command"), message
    assert "\n" not in message and "could not be dropped" not in message, message
    assert left == [], message
