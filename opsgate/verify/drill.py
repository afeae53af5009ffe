"""The runbook's backup/restore drill: dump the target, restore the dump elsewhere, and
prove with canon-v1 table hashes that what came back is what went out.

The source hashes are taken inside the very snapshot pg_dump reads (the drill's
transaction exports it and pg_dump joins it with ``--snapshot``), so writes landing on
a live target during the drill can neither fake a mismatch nor hide a real one. The
source is hashed while pg_dump runs (both only read the same snapshot), on the very
connection that exported it (one COPY a table), which overlaps the two longest steps.

The drill runs on `opsgate.operation`'s skeleton: its stages (preconditions, plan,
apply, verify) are small named functions, each step recorded in a `Summary` (timed with
`Summary.timed` into the evidence's own ``timings_s``) and its end the skeleton's (done,
or a `Stop` as failed or interrupted). What callers see is unchanged: a `DrillError`
when the drill cannot be carried out, KeyboardInterrupt on a stop, else a `DrillResult`
whose evidence keeps its documented shape (the summary rides beside it, not in it).

"Elsewhere" is by default a throwaway local PostgreSQL (`drill_local`), so the target
server sees only reads; a scratch database on the target server is an explicit choice
(OPSGATE_DRILL_RESTORE=target-scratch), as is an empty database of the operator's own
(DRILL_DATABASE_URL).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from opsgate import progress
from opsgate.children import Terminator
from opsgate.clients import db, pgrun
from opsgate.clients.pgtools import (
    CLIENT_TOOLS,
    PgBinaries,
    find_client_tools,
    url_wants_tls,
)
from opsgate.config import Settings
from opsgate.errors import (
    CanonError,
    ConfigError,
    DatabaseUnavailableError,
    DrillError,
    PostgresUnavailableError,
    first_line,
)
from opsgate.operation import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Stop, Summary
from opsgate.processes import alive
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.sensitive import SecretUrl
from opsgate.verify import canon, drill_local, rowdiff, tablehash
from opsgate.verify.steps import StepFn, no_steps

DUMP_JOBS = 2


@dataclass
class TableResult:
    table: str
    source_rows: int
    restored_rows: int | None
    source_sha256: str
    restored_sha256: str | None
    differing_rows: str = ""

    @property
    def match(self) -> bool:
        return self.source_sha256 == self.restored_sha256 and self.source_rows == self.restored_rows

    def as_dict(self) -> dict[str, Any]:
        out = {"table": self.table, "source_rows": self.source_rows,
               "restored_rows": self.restored_rows, "source_sha256": self.source_sha256,
               "restored_sha256": self.restored_sha256, "match": self.match}
        if self.differing_rows:
            out["differing_rows"] = self.differing_rows
        return out


@dataclass
class DrillResult:
    tables: list[TableResult] = field(default_factory=list)
    source_hash: str = ""
    restored_hash: str = ""
    archive_path: str = ""
    archive_bytes: int = 0
    archive_kept: bool = False
    restore_target: str = ""
    restore_mode: str = ""
    restore_role: dict[str, Any] = field(default_factory=dict)
    server_version: str = ""
    client_tools: str = ""
    leftovers_removed: list[str] = field(default_factory=list)
    dump_folders_removed: list[str] = field(default_factory=list)
    source: str = ""
    other_scratch_databases: list[str] = field(default_factory=list)
    restore_method: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    #: The run on the operation skeleton: its stages as steps, its status and message
    #: (not part of the evidence, which stays as documented).
    summary: Summary | None = field(default=None, repr=False, compare=False)

    @property
    def problems(self) -> list[str]:
        out = []
        for t in self.tables:
            if not t.match:
                out.append(f"{t.table}: source {t.source_rows} rows sha256 {t.source_sha256[:12]}… "
                           f"vs restored {t.restored_rows} rows sha256 "
                           f"{(t.restored_sha256 or 'none')[:12]}…"
                           + (f" ({t.differing_rows})" if t.differing_rows else ""))
        return out

    def evidence(self) -> dict[str, Any]:
        return {
            "tables": [t.as_dict() for t in self.tables],
            "canonical_hash": {"source": self.source_hash, "restored": self.restored_hash,
                               "match": self.source_hash == self.restored_hash},
            "archive": {"path": self.archive_path, "bytes": self.archive_bytes,
                        "kept": self.archive_kept, "format": "directory",
                        "jobs": DUMP_JOBS, "restore_method": self.restore_method},
            "source": self.source,
            "restore_target": self.restore_target,
            # local, target-scratch or DRILL_DATABASE_URL (docs/checks.md)
            "restore_mode": self.restore_mode,
            "restore_role": self.restore_role,
            "server_version": self.server_version,
            "client_tools": self.client_tools,
            "leftover_scratch_databases_removed": self.leftovers_removed,
            "leftover_dump_folders_removed": self.dump_folders_removed,
            # On the server, not from this database (or killed before their comment):
            # listed for the operator, never dropped by this drill.
            "other_scratch_databases": self.other_scratch_databases,
            "timings_s": self.timings_s,
            "hash_version": canon.VERSION,
        }


def _with_db(url: str, dbname: str) -> str:
    """The same server and credentials, another database: a URL stays a URL (so it
    still reads as one in reports); a keyword string goes through psycopg's rules."""
    if not url.lstrip().lower().startswith(("postgresql://", "postgres://")):
        from psycopg.conninfo import make_conninfo

        return make_conninfo(url, dbname=dbname)
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def _pooler_hint(url: SecretUrl, server_port: int | None) -> str:
    """A clue for a failed pg_dump: the server accepted us on another port than the URL
    names, as it does behind a pooler (or a port mapping). Not proof, so only a hint."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = str(conninfo_to_dict(url.reveal()).get("port") or "5432")
    except Exception:
        return ""
    if server_port is None or given == str(server_port):
        return ""
    return (f" (the URL names port {given} but the server accepted the connection on "
            f"{server_port}: if it goes through a pooler, set DATABASE_URL_UNPOOLED to the "
            "direct endpoint)")


def _relations_in(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'S') LIMIT 5")]


#: Large restored tables hashed at once: one psql (and one server backend) per table.
#: The source's are hashed one after the other on the snapshot's own connection.
HASH_WORKERS = 2

#: Restored tables up to this size (`pg_total_relation_size`) are hashed on the drill's
#: own connection to the copy, one COPY each, instead of by a psql of their own. psql
#: takes COPY's one-message-per-row stream several times faster than Python, but costs
#: a process, a connection with its authentication and a server backend first: about
#: 25 ms of wall time and as much CPU, where the COPY of a table of a few thousand rows
#: through psycopg takes a few milliseconds. An app's many small tables (settings,
#: ledgers, lookups) no longer pay it; its large ones still go to psql. Neither way
#: changes a byte that is hashed (`opsgate.verify.canon`).
HASH_HERE_MAX_BYTES = 1 << 20


class _Shape(NamedTuple):
    """A restored table as the hashes need it: its columns, key and size on disk."""

    table: str
    columns: tuple[str, ...]
    order_by: tuple[str, ...]
    bytes: int


def _shapes(conn: psycopg.Connection[Any], tables: list[str]) -> list[_Shape]:
    """The `_Shape` of each of ``tables`` present on ``conn``, largest first, so the
    parallel streams finish together (the biggest table is not left for last). A
    partitioned table's size is its partitions' (its own is 0)."""
    present = set(pgrun.contract_tables(conn))
    sizes: dict[str, int] = dict(conn.execute(
        "SELECT c.relname, coalesce((SELECT sum(pg_total_relation_size(t.relid)) "
        "FROM pg_partition_tree(c.oid) t), pg_total_relation_size(c.oid)) FROM pg_class c "
        "WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p') "
        "AND c.relnamespace = 'public'::regnamespace", (tables,)).fetchall())
    todo = sorted((t for t in tables if t in present), key=lambda t: -int(sizes.get(t, 0)))
    shapes = canon.table_shapes(conn, todo) if todo else {}
    return [_Shape(t, *shapes[t], int(sizes.get(t, 0))) for t in todo]


def _hash_here(probe: psycopg.Connection[Any], shapes: list[_Shape], stop: Terminator,
               redact: Callable[[str], str], advance: Callable[[int], None]
               ) -> dict[str, Future[canon.TableHash]]:
    """canon-v1 hashes of the small restored tables in ``shapes`` (`HASH_HERE_MAX_BYTES`)
    on ``probe``, in the read-only transaction it has open with the canon settings
    pinned (`db.transaction`), one COPY each. Returned as futures, like psql's: when the
    restore fails, its own error is the one to report, not a hash cut short by it."""
    hashes: dict[str, Future[canon.TableHash]] = {}
    for shape in shapes:
        done: Future[canon.TableHash] = Future()
        hashes[shape.table] = done
        try:
            _not_stopping(stop)
            done.set_result(tablehash.table_hash_in_snapshot(
                probe, shape.table, shape.columns, shape.order_by))
        except DrillError as exc:
            done.set_exception(exc)
            break
        except CanonError as exc:
            done.set_exception(DrillError(str(exc)))
            break
        except psycopg.Error as exc:
            done.set_exception(DrillError(
                f"hashing the restored copy's {shape.table} failed: "
                f"{redact(first_line(exc))[:300]}"))
            break
        advance(1)
    return hashes


def _hash_source(drill: _Drill, tables: list[str], advance: Callable[[int], None]
                 ) -> dict[str, canon.TableHash]:
    """canon-v1 hashes of ``tables`` on the source, one COPY each on the connection that
    exported pg_dump's snapshot (its transaction is that snapshot, its settings pinned
    by `_export_snapshot`): across the network a table costs one round trip, where a
    psql of its own paid a connection's eight. Every shape is read in one statement."""
    src, stop = drill.src, drill.stop
    try:
        shapes = canon.table_shapes(src, tables)
        hashes = {}
        for table in tables:
            _not_stopping(stop)
            hashes[table] = tablehash.table_hash_in_snapshot(src, table, *shapes[table])
            advance(1)
        return hashes
    except CanonError as exc:
        raise DrillError(str(exc)) from None
    except psycopg.Error as exc:
        raise DrillError(f"hashing the source in the dump's snapshot failed: "
                         f"{drill.redact(first_line(exc))[:300]}") from None


def _hash_tables(tools: PgBinaries, url: SecretUrl, tables: list[str],
                 redact: Callable[[str], str], stop: Terminator, *,
                 advance: Callable[[int], None] = lambda n: None
                 ) -> dict[str, canon.TableHash]:
    """canon-v1 hashes of the restored ``tables`` once the restore has ended: their
    shapes read on the connection that then hashes the small ones (`_hash_here`), the
    others `HASH_WORKERS` at a time, each received by psql
    (`tablehash.table_hash_via_psql`) in a read-only transaction of its own (nothing
    writes to the copy any more)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=HASH_WORKERS,
                            thread_name_prefix="opsgate-verify") as pool, stop.on_interrupt():
        with db.connect(url, redact=redact, what="the restored database") as probe, \
                db.transaction(probe, read_only=True):
            futures = _start_hashes(pool, tools, url, probe, _shapes(probe, tables), stop,
                                    redact, advance)
        return {table: f.result() for table, f in futures.items()}


def _start_hashes(pool: Executor, tools: PgBinaries, url: SecretUrl,
                  probe: psycopg.Connection[Any], shapes: list[_Shape], stop: Terminator,
                  redact: Callable[[str], str], advance: Callable[[int], None]
                  ) -> dict[str, Future[canon.TableHash]]:
    """The restored tables' hashes: the large ones (`HASH_HERE_MAX_BYTES`) handed to
    ``pool`` first, each to a psql of its own (`_hash_via_psql`), then the small ones on
    ``probe`` meanwhile (`_hash_here`, in its open transaction)."""
    started = {s.table: pool.submit(_hash_via_psql, tools, url, s, redact, stop, advance)
               for s in shapes if s.bytes > HASH_HERE_MAX_BYTES}
    started.update(_hash_here(probe, [s for s in shapes if s.bytes <= HASH_HERE_MAX_BYTES],
                              stop, redact, advance))
    return started


def _hash_via_psql(tools: PgBinaries, url: SecretUrl, shape: _Shape,
                   redact: Callable[[str], str], stop: Terminator,
                   advance: Callable[[int], None]) -> canon.TableHash:
    """One restored table's hash, received by a psql of its own."""
    _not_stopping(stop)
    try:
        h = tablehash.table_hash_via_psql(tools.tool("psql"), url.without_password,
                                          pgrun.tool_env(url), shape.table, shape.columns,
                                          shape.order_by, redact=redact)
    except CanonError as exc:
        raise DrillError(str(exc)) from None
    advance(1)
    return h


def _not_stopping(stop: Terminator) -> None:
    """Raise instead of starting another child once the drill is being stopped."""
    if stop.stopping.is_set():
        raise DrillError("the drill was stopped")


#: Restored tables whose primary key exists: pg_restore builds a key only after the
#: table's data is committed, and no later item of a restore writes rows again.
_KEYED_TABLES = (
    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
    "WHERE i.indisprimary AND i.indisvalid AND c.relnamespace = 'public'::regnamespace "
    "AND c.relname = ANY(%s)")


def _hash_as_restored(tools: PgBinaries, target: SecretUrl, tables: list[str],
                      redact: Callable[[str], str], restoring: threading.Thread,
                      advance: Callable[[int], None], stop: Terminator
                      ) -> dict[str, Future[canon.TableHash]]:
    """Start hashing each restored table as soon as it is final, while pg_restore still
    builds other tables' indexes and checks foreign keys; the rest once it has ended.

    Returns the hashes as futures: when the restore fails, its own error is the one to
    report, not a hash cut short by it. Hashing reads under ACCESS SHARE, which no
    remaining restore step waits for but an ACCESS EXCLUSIVE one, which then waits.
    """
    from concurrent.futures import ThreadPoolExecutor

    started: dict[str, Future[canon.TableHash]] = {}

    with ThreadPoolExecutor(max_workers=HASH_WORKERS,
                            thread_name_prefix="opsgate-verify") as pool, \
            db.connect(target, redact=redact, what="the restored database") as probe, \
            stop.on_interrupt():
        while True:
            ended = not restoring.is_alive()
            with db.transaction(probe, read_only=True):
                waiting = [t for t in tables if t not in started]
                ready = waiting if ended else [
                    r[0] for r in probe.execute(_KEYED_TABLES, (waiting,))]
                shapes = _shapes(probe, ready) if ready else []
                started.update(_start_hashes(pool, tools, target, probe, shapes, stop,
                                             redact, advance))
            if ended:
                return started
            restoring.join(0.5)


#: Every scratch database the drill creates starts with this, so a leftover from a
#: drill that was killed says what it is (and its COMMENT says whose and when).
SCRATCH_PREFIX = "opsgate_drill_scratch_"

#: Advisory-lock class of a running drill's scratch database: the drill holds
#: (DRILL_LOCK_CLASS, hashtext(name)) on its direct session while the database exists,
#: so a later drill can tell a live drill's scratch copy from a dead one's.
DRILL_LOCK_CLASS = 0x0D1E

#: How a scratch database's comment begins; the source database's name follows.
SCRATCH_COMMENT = "opsgate drill scratch copy of database "


def scratch_name() -> str:
    worker = re.sub(r"[^a-z0-9]", "", os.environ.get("PYTEST_XDIST_WORKER", "main").lower())
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{SCRATCH_PREFIX}{stamp}_{os.getpid()}_{worker}_{secrets.token_hex(3)}"


def _drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(name)))


@dataclass
class Sweep:
    """What a drill found of earlier drills' scratch databases before it began."""

    removed: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)  # "name (why)"
    not_ours: list[str] = field(default_factory=list)


#: The drill's temporary dump folders: ``opsgate-drill-<pid>-<random>`` under the
#: temporary directory (BACKUP_OUTPUT_PATH, the operator's own, is never touched).
DUMP_FOLDER_PREFIX = "opsgate-drill-"


def sweep_dump_folders() -> list[str]:
    """Remove dump folders of drills whose process is gone (killed mid-dump, they hold
    plain-text rows of the data). Returns the folders removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{DUMP_FOLDER_PREFIX}*-*"):
        pid_text = folder.name.removeprefix(DUMP_FOLDER_PREFIX).split("-", 1)[0]
        if folder.is_dir() and pid_text.isdigit() and not alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


def sweep_leftovers(session: psycopg.Connection[Any], redact: Callable[[str], str]) -> Sweep:
    """Remove scratch databases of drills that died (their lock is free). A live
    drill's copy is left alone.

    Advisory locks are per database, so only copies made from this database can be told
    live or dead from here: only those (their comment names their source) are removed;
    the others are listed, never touched.
    """
    rows = session.execute(
        "SELECT datname, starts_with(coalesce(shobj_description(oid, 'pg_database'), ''), "
        "%s || current_database() || ':') FROM pg_database WHERE starts_with(datname, %s) "
        "ORDER BY 1", (SCRATCH_COMMENT, SCRATCH_PREFIX)).fetchall()
    sweep = Sweep()
    for name, ours in rows:
        if not ours:
            sweep.not_ours.append(name)
            continue
        try:
            if _drop_if_unlocked(session, name):
                sweep.removed.append(name)
            # else a drill running right now owns it
        except psycopg.Error as exc:
            sweep.stuck.append(f"{name} ({redact(first_line(exc))[:200]})")
    return sweep


def _drop_if_unlocked(session: psycopg.Connection[Any], name: str) -> bool:
    """Drop the scratch database ``name`` unless a live drill's session holds its
    advisory lock (`DRILL_LOCK_CLASS`): False when one does. Taking the lock first means
    no drill can be using the copy while it is dropped. ``session`` must be on the
    database the copy was made from (advisory locks are per database); a failed drop
    raises its psycopg error."""
    got = session.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                          (DRILL_LOCK_CLASS, name)).fetchone()
    if not (got and got[0]):
        return False
    try:
        _drop_database(session, name)
    finally:
        session.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))",
                        (DRILL_LOCK_CLASS, name))
    return True


def list_scratch_databases(session: psycopg.Connection[Any]) -> list[str]:
    """Scratch databases of earlier drills on the server (read only: a local drill
    lists them for the operator and drops none)."""
    return [r[0] for r in session.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
        (SCRATCH_PREFIX,))]


@dataclass
class _Copies:
    """What the drill made to restore into, for `run_drill`'s ``finally`` to undo: set
    before each is made, so a stop landing while it is being made still undoes it."""

    scratch: str | None = None
    local: EmbeddedPostgres | None = None


@dataclass(frozen=True)
class _Copy:
    """Where the copy is restored: its URL, server major, whether its connections use
    TLS, the mode, words for the evidence and the drill record, and the role."""

    url: SecretUrl
    major: int
    tls: bool
    mode: str
    where: str
    role: dict[str, Any] = field(default_factory=dict)


def _restore_copy(settings: Settings, session: psycopg.Connection[Any] | None,
                  src: psycopg.Connection[Any], url: SecretUrl, source_major: int,
                  workdir: Path, redact: Callable[[str], str], copies: _Copies) -> _Copy:
    """DRILL_DATABASE_URL when set, else as OPSGATE_DRILL_RESTORE says: ``local`` (the
    default, `drill_local`) or ``target-scratch``."""
    if settings.drill_database_url is not None:
        return _given_copy(settings.drill_database_url, redact)
    if session is not None:  # opened in target-scratch mode only (`_open_drill`)
        return _scratch_copy(session, src, url, source_major, redact, copies)
    role = drill_local.source_role(src)
    size = src.execute("SELECT pg_database_size(current_database())").fetchone()
    binaries = drill_local.local_binaries(source_major, settings.pg_bindir)
    copies.local = drill_local.new_cluster(binaries, int(size[0]) if size else 0, workdir)
    target = drill_local.prepare(copies.local, role)
    return _Copy(target, binaries.major, True, "local",
                 f"a throwaway local PostgreSQL {binaries.version} started by the drill, "
                 f"as role {role.name} (not a superuser), database {role.database}; "
                 "stopped and removed afterwards, nothing written to the target server",
                 role.as_dict())


def _given_copy(target: SecretUrl, redact: Callable[[str], str]) -> _Copy:
    try:
        with db.connect(target, redact=redact, what="DRILL_DATABASE_URL") as probe, \
                db.transaction(probe, read_only=True):
            occupied = _relations_in(probe)
            tls = bool(probe.pgconn.ssl_in_use)
            major = int(probe.info.server_version) // 10000
    except DatabaseUnavailableError as exc:
        raise DrillError(str(exc)) from None
    if occupied:
        raise DrillError(
            f"DRILL_DATABASE_URL {target.masked} is not empty (has "
            f"{', '.join(occupied)}); the drill restores only into an empty database "
            "and never overwrites one")
    return _Copy(target, major, tls, "DRILL_DATABASE_URL", target.masked)


def _scratch_copy(session: psycopg.Connection[Any], src: psycopg.Connection[Any],
                  url: SecretUrl, source_major: int, redact: Callable[[str], str],
                  copies: _Copies) -> _Copy:
    """A scratch database created on the target server (OPSGATE_DRILL_RESTORE=
    target-scratch): a write to production, chosen explicitly."""
    name = scratch_name()
    # Held until the session ends: a later drill sees this copy is in use.
    session.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (DRILL_LOCK_CLASS, name))
    # Named before it exists: a stop that lands while CREATE DATABASE completes must
    # still drop it (the drop is IF EXISTS).
    copies.scratch = name
    try:
        session.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        session.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(name), sql.Literal(
                f"{SCRATCH_COMMENT}{src.info.dbname}: {url.masked}, created "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by pid "
                f"{os.getpid()} on {socket.gethostname()}; dropped when the drill "
                "ends: safe to drop")))
    except psycopg.errors.InsufficientPrivilege:
        raise DrillError(
            f"no permission to create a scratch database on {url.masked}; grant "
            "CREATEDB to this role, set OPSGATE_DRILL_RESTORE=local (the default) or "
            "DRILL_DATABASE_URL to an empty database the drill may restore into") from None
    except psycopg.Error as exc:
        raise DrillError(f"creating the scratch database {name} failed: "
                         f"{redact(first_line(exc))[:300]}") from None
    target = SecretUrl(_with_db(url.reveal(), name))
    return _Copy(target, source_major, True, "target-scratch",
                 f"{target.masked} (a scratch database on the target server, dropped "
                 "afterwards)")


def _earlier_scratch_copies(settings: Settings, session: psycopg.Connection[Any] | None,
                            src: psycopg.Connection[Any], redact: Callable[[str], str],
                            result: DrillResult) -> None:
    """Scratch databases earlier drills left on the target server: in target-scratch
    mode those of dead drills are dropped (and one that cannot be fails the drill); in
    local mode they are only listed (on ``src``, in its snapshot transaction), since
    dropping them would be a write."""
    if settings.drill_database_url is not None:
        return
    if session is None:  # local mode: only target-scratch opens a writing session
        result.other_scratch_databases = list_scratch_databases(src)
        return
    sweep = sweep_leftovers(session, redact)
    result.leftovers_removed = sweep.removed
    result.other_scratch_databases = sweep.not_ours
    if sweep.stuck:
        raise DrillError(
            f"{len(sweep.stuck)} scratch database(s) left by an earlier drill could "
            f"not be removed: {'; '.join(sweep.stuck[:5])}; each is a full copy of "
            "the data: drop it as its owner (DROP DATABASE name WITH (FORCE))")


def _verify(drill: _Drill, tables: list[str], source_hashes: dict[str, canon.TableHash],
            early: dict[str, Future[canon.TableHash]], tools: PgBinaries, target: SecretUrl,
            bar: progress.Bar, steps: StepFn) -> None:
    """Compare the restored copy's hashes (taken while it was restored, or now) with the
    source's, name the rows behind a mismatch, and fill in the combined hashes."""
    result, redact = drill.result, drill.redact
    bar.phase("verify the restored copy")
    with _step(drill, "verify", "hashes compared", timing="verify") as detail, \
            steps("verify: canon-v1 hash of every table, source vs restored"):
        restored = {tbl: f.result() for tbl, f in early.items()}
        if not early:
            restored = _hash_tables(tools, target, tables, redact, drill.stop,
                                    advance=bar.advance)
        for tbl in tables:
            sh, rh = source_hashes[tbl], restored.get(tbl)
            result.tables.append(TableResult(tbl, sh.rows, rh.rows if rh else None,
                                             sh.sha256, rh.sha256 if rh else None))
        # Name the rows behind a mismatch. The source has moved on since the snapshot
        # on a live target, so on a busy one this may also list rows written since.
        mismatched = [x for x in result.tables if not x.match and x.restored_rows is not None]
        if mismatched:
            with db.connect(drill.url, redact=redact) as s2, \
                    db.connect(target, redact=redact, what="the restored database") as r, \
                    db.transaction(s2, read_only=True), db.transaction(r, read_only=True):
                for x in mismatched:
                    x.differing_rows = rowdiff.locate(s2, r, x.table).describe()
        differ = sum(not x.match for x in result.tables)
        detail.append(f"{len(tables) - differ} of {len(tables)} tables match")
    result.source_hash = canon.combined_hash({x.table: x.source_sha256 for x in result.tables})
    result.restored_hash = canon.combined_hash(
        {x.table: x.restored_sha256 for x in result.tables})


@dataclass
class _Drill:
    """What one drill holds open, for `_release` to close whatever happens: the session
    that creates and drops a scratch copy (target-scratch mode only), the source's
    snapshot transaction (exported to pg_dump, and hashed in), the dump folder, the
    copies made to restore into, the progress bar and the children's terminator
    (replaced once the client tools are known); and its `Summary` (the operation
    skeleton's), whose ``timings_s`` is the result's."""

    settings: Settings
    url: SecretUrl
    redact: Callable[[str], str]
    result: DrillResult
    summary: Summary
    session: psycopg.Connection[Any] | None
    src: psycopg.Connection[Any]
    workdir: Path
    copies: _Copies = field(default_factory=_Copies)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # On a stop, the children (pg_dump, pg_restore, psql) are terminated by the main
    # thread: the threads that started them never see the KeyboardInterrupt.
    stop: Terminator = field(default_factory=lambda: Terminator(()))


@contextlib.contextmanager
def _step(drill: _Drill, stage: str, step: str, *, timing: str | None = None
          ) -> Iterator[list[str]]:
    """One step of the drill's ``stage``, recorded in its summary: ``done`` with the
    detail the block appends, or ``failed`` with the line that stopped it. ``timing``
    names the evidence's ``timings_s`` entry it is timed into (`Summary.timed`)."""
    detail: list[str] = []
    try:
        with drill.summary.timed(timing) if timing else contextlib.nullcontext():
            yield detail
    except BaseException as exc:
        why = ("interrupted" if isinstance(exc, KeyboardInterrupt)
               else drill.redact(first_line(exc))[:300])
        drill.summary.step(stage, step, "failed", why)
        raise
    drill.summary.step(stage, step, "done", "; ".join(detail))


def _restore_mode(settings: Settings) -> str:
    """The evidence's ``restore_mode`` as the settings choose it (`_restore_copy`)."""
    return "DRILL_DATABASE_URL" if settings.drill_database_url is not None else (
        settings.drill_restore)


@dataclass
class _Pipeline:
    """The dump-then-restore thread's inputs, and what it hands back: its error, and the
    event that keeps the source's snapshot alive until pg_dump has finished."""

    drill: _Drill
    tools: PgBinaries
    snapshot: str
    pooler_hint: str
    archive: Path
    target: SecretUrl
    target_major: int
    bar: progress.Bar
    after_dump: Callable[[Path], None] | None
    error: list[BaseException] = field(default_factory=list)
    dumped: threading.Event = field(default_factory=threading.Event)


def _open_drill(settings: Settings) -> _Drill:
    """The source's URL and its sessions (the snapshot's, and in target-scratch mode the
    one that creates and drops the scratch database), earlier drills' dump folders swept
    and this drill's made; a `DrillError` when the source cannot be reached."""
    try:
        # pg_dump joins a snapshot the drill exports: a real session, so the direct
        # endpoint.
        url = settings.session_url("the backup/restore drill")
    except ConfigError as exc:
        raise DrillError(str(exc)) from None
    redact = settings.redactor()
    result = DrillResult()
    # The summary's clock starts here, as the evidence's "total" always has.
    summary = Summary(operation="backup-restore-drill", mode=_restore_mode(settings),
                      timings_s=result.timings_s)
    # No application_name in the startup packet: if the "direct" URL is a pooler after
    # all, PgBouncer would replay it onto a server connection the app then inherits.
    # A second session only where something is written (CREATE DATABASE needs
    # autocommit): across the network a connection costs about eight round trips.
    scratch = settings.drill_database_url is None and settings.drill_restore == "target-scratch"
    # Timed: a compute waking from scale to zero answers in seconds (the check says so).
    with summary.timed("connect"):
        try:
            session = db.connect(url, redact=redact) if scratch else None
        except DatabaseUnavailableError as exc:
            raise DrillError(str(exc)) from None
        try:
            src = db.connect(url, redact=redact, autocommit=False)
        except DatabaseUnavailableError as exc:
            if session is not None:
                session.close()
            raise DrillError(str(exc)) from None
    result.source = url.masked
    result.dump_folders_removed = sweep_dump_folders()
    workdir = Path(tempfile.mkdtemp(prefix=f"{DUMP_FOLDER_PREFIX}{os.getpid()}-"))
    summary.step("preconditions", "source reached", "done", url.masked)
    result.summary = summary
    return _Drill(settings, url, redact, result, summary, session, src, workdir)


def _export_snapshot(drill: _Drill) -> tuple[str, int, int | None]:
    """Pin the source session to one read-only snapshot and export it: the snapshot's
    name, the server's version number and the port it answers on."""
    src = drill.src
    # Every transaction of this session: BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY.
    src.read_only = True
    src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    # This transaction only; canon-v1's settings too, for `_hash_source`'s COPYs.
    db.pin(src, canon.TABLE_SESSION_SETTINGS, application_name="opsgate-drill")
    row = db.one_row(src.execute(
        "SELECT pg_export_snapshot(), current_setting('server_version'), "
        "current_setting('server_version_num')::int, inet_server_port()"),
        "the source's snapshot and version")
    snapshot, drill.result.server_version, version_num, server_port = row
    return snapshot, version_num, server_port


def _client_tools(drill: _Drill, version_num: int, tool_search: dict[str, Any] | None
                  ) -> PgBinaries:
    """pg_dump and pg_restore of the source's major, built with TLS when the source's
    or the given copy's URL asks for it."""
    settings, url = drill.settings, drill.url
    try:
        wants_tls = url_wants_tls(url.reveal()) or (
            settings.drill_database_url is not None
            and url_wants_tls(settings.drill_database_url.reveal()))
        return find_client_tools(version_num // 10000, settings.pg_bindir,
                                 tls=wants_tls, **(tool_search or {}))
    except PostgresUnavailableError as exc:
        raise DrillError(str(exc)) from None


@dataclass(frozen=True)
class _Source:
    """What the preconditions found: the exported snapshot, the server's version number,
    a hint for a failing pg_dump, the client tools and the contract tables present."""

    snapshot: str
    version_num: int
    pooler_hint: str
    tools: PgBinaries
    tables: list[str]


def _preconditions(drill: _Drill, tools: PgBinaries | None,
                   tool_search: dict[str, Any] | None) -> _Source:
    """The snapshot exported, earlier drills' scratch copies dealt with, the client
    tools found and the contract tables present: each a step of the summary."""
    result = drill.result
    with _step(drill, "preconditions", "snapshot exported") as detail:
        snapshot, version_num, server_port = _export_snapshot(drill)
        detail.append(f"PostgreSQL {result.server_version}")
    with _step(drill, "preconditions", "earlier scratch copies") as detail:
        _earlier_scratch_copies(drill.settings, drill.session, drill.src, drill.redact,
                                result)
        detail.append(f"{len(result.leftovers_removed)} removed, "
                      f"{len(result.other_scratch_databases)} listed")
    with _step(drill, "preconditions", "client tools") as detail:
        if tools is None:
            tools = _client_tools(drill, version_num, tool_search)
        detail.append(f"PostgreSQL {tools.version} client tools")
    drill.stop = Terminator([tools.tool(name) for name in CLIENT_TOOLS])
    with _step(drill, "preconditions", "contract tables") as detail:
        tables = pgrun.contract_tables(drill.src)
        if not tables:
            raise DrillError("the target has none of the contract tables; nothing to drill")
        detail.append(f"{len(tables)} present")
    return _Source(snapshot, version_num, _pooler_hint(drill.url, server_port), tools,
                   tables)


def _prepare_copy(drill: _Drill, version_num: int, tools: PgBinaries) -> _Copy:
    """The restore target: local (default), given and empty, or a scratch database;
    its mode, role and client tools in the result."""
    result = drill.result
    copy = _restore_copy(drill.settings, drill.session, drill.src, drill.url,
                         version_num // 10000, drill.workdir, drill.redact, drill.copies)
    result.restore_mode, result.restore_role = copy.mode, copy.role
    result.restore_target = copy.where
    # "TLS" beside the tools only when pg_dump's and pg_restore's connections used it
    # (a scratch database is reached as the source is; a local copy over loopback).
    result.client_tools = tools.describe(
        connection_tls=bool(drill.src.pgconn.ssl_in_use) and copy.tls)
    return copy


def _archive_path(drill: _Drill) -> Path:
    """Where pg_dump writes: BACKUP_OUTPUT_PATH (kept, never overwritten) or the dump
    folder."""
    settings = drill.settings
    archive = Path(settings.backup_output_path) if settings.backup_output_path else (
        drill.workdir / "archive")
    if archive.exists():
        raise DrillError(f"BACKUP_OUTPUT_PATH {archive} already exists; "
                         "the drill never overwrites an archive")
    drill.result.archive_kept = settings.backup_output_path is not None
    drill.result.archive_path = str(archive)
    return archive


def _plan(drill: _Drill, source: _Source) -> tuple[_Copy, Path]:
    """Where the copy is restored (made now: a local cluster started, a scratch database
    created) and where pg_dump writes: each a step of the summary."""
    with _step(drill, "plan", "restore target", timing="prepare_copy") as detail:
        copy = _prepare_copy(drill, source.version_num, source.tools)
        detail.append(f"{copy.mode}: {copy.where}")
    with _step(drill, "plan", "archive") as detail:
        archive = _archive_path(drill)
        detail.append("kept" if drill.result.archive_kept else "removed afterwards")
    return copy, archive


def _dump_then_restore(job: _Pipeline) -> None:
    """pg_dump joins the snapshot; as soon as it is done the restore starts, while the
    main thread is still hashing the source in the same snapshot. Runs on its own
    thread: an error is handed back in ``job.error``."""
    drill, tools, archive, result = job.drill, job.tools, job.archive, job.drill.result
    url, redact = drill.url, drill.redact
    try:
        job.bar.phase("dump, hashing the source")
        try:
            with _step(drill, "apply", "dump", timing="dump") as detail:
                pgrun.run_tool([str(tools.tool("pg_dump")), "--format=directory",
                                f"--jobs={DUMP_JOBS}", "--compress=0",
                                f"--snapshot={job.snapshot}", "--no-owner",
                                "--no-privileges", f"--file={archive}",
                                f"--dbname={url.without_password}"],
                               "pg_dump", pgrun.tool_env(url), redact, DrillError,
                               hint=job.pooler_hint)
                detail.append(f"directory format, {DUMP_JOBS} jobs, the drill's snapshot")
        finally:
            job.dumped.set()
        result.archive_bytes = sum(p.stat().st_size for p in archive.rglob("*")
                                   if p.is_file())
        if job.after_dump is not None:
            job.after_dump(archive)
        _not_stopping(drill.stop)
        job.bar.phase("restore")
        with _step(drill, "apply", "restore", timing="restore") as detail:
            result.restore_method = pgrun.restore_archive(
                tools, archive, job.target, job.target_major, "pg_restore", redact,
                DrillError, options=("--no-owner", "--no-privileges"), jobs=DUMP_JOBS)
            detail.append(result.restore_method)
    except BaseException as exc:  # reported on the main thread
        job.error.append(exc)


def _dump_restore_and_hash(job: _Pipeline, tables: list[str], hash_early: bool,
                           steps: StepFn
                           ) -> tuple[dict[str, canon.TableHash],
                                      dict[str, Future[canon.TableHash]]]:
    """Dump and restore on a thread while this one hashes the source in the dump's
    snapshot (on the connection that holds it), then (``hash_early``) the restored
    tables as each is restored: the source's hashes and the restored ones' futures."""
    drill, tools, bar = job.drill, job.tools, job.bar
    stop = drill.stop
    early: dict[str, Future[canon.TableHash]] = {}
    worker = threading.Thread(target=_dump_then_restore, args=(job,),
                              name="opsgate-dump-restore")
    with drill.summary.timed("dump_restore_and_source_hash"):
        worker.start()
        # Allure steps belong to the test's thread, so the step spans the whole pipeline.
        with steps(f"dump and restore ({DUMP_JOBS} jobs each) while hashing the source "
                   "in the dump's snapshot (on its own connection, one table after the "
                   f"other); restore into {job.target.masked}"):
            try:
                with stop.on_interrupt():
                    with _step(drill, "apply", "hash the source",
                               timing="hash_source") as detail:
                        source_hashes = _hash_source(drill, tables, bar.advance)
                        detail.append(f"{len(tables)} tables in the dump's snapshot")
                    job.dumped.wait()
                    drill.src.commit()
                    if hash_early:  # the self-tests' faults go in after restore
                        bar.phase("restore, hashing restored tables")
                        early = _hash_as_restored(tools, job.target, tables, drill.redact,
                                                  worker, bar.advance, stop)
            finally:
                job.dumped.wait()
                worker.join()
    if job.error:
        raise job.error[0]
    return source_hashes, early


def _release(drill: _Drill, pending: BaseException | None) -> None:
    """Close what the drill holds (sessions, bar, children, the local cluster, the dump
    folder) whatever happened, and finish its summary; a scratch copy that cannot be
    dropped fails the drill, or travels with the drill's own error (``pending``), or is
    printed beside a stop."""
    drill.stop.close()
    drill.stack.close()
    drill.src.close()
    copies = drill.copies
    leftover = (_drop_scratch(drill.session, drill.url, copies.scratch, drill.redact)
                if copies.scratch and drill.session is not None else None)
    if drill.session is not None:
        drill.session.close()
    if copies.local is not None:
        copies.local.stop()  # the local cluster stopped and its folder removed
    shutil.rmtree(drill.workdir, ignore_errors=True)
    _finish(drill, pending, leftover)
    if leftover and pending is None:
        raise DrillError(leftover)
    if leftover and isinstance(pending, KeyboardInterrupt):
        # The stop goes on as a stop (pytest reports the run interrupted); the
        # copy left behind still gets its line.
        print(f"opsgate drill: {leftover}", file=sys.stderr, flush=True)
    elif leftover:
        # The drill's own error is on its way up; the leftover must not be lost
        # behind it, so the two travel as one line.
        raise DrillError(f"{first_line(pending) if pending else 'the drill failed'}; "
                         f"and {leftover}") from None


def _finish(drill: _Drill, pending: BaseException | None, leftover: str | None) -> None:
    """The summary's end, the skeleton's way: done, or stopped (`Stop`) as failed or
    interrupted with the line that says why; its duration is the evidence's total."""
    summary, result = drill.summary, drill.result
    if isinstance(pending, KeyboardInterrupt):
        summary.stopped(Stop("interrupted", EXIT_INTERRUPTED, "the drill was interrupted"))
    elif pending is not None or leftover:
        why = [drill.redact(first_line(pending))[:300] if pending else "", leftover or ""]
        summary.stopped(Stop("failed", EXIT_FAILED, "; ".join(w for w in why if w)))
    elif result.problems:
        summary.stopped(Stop("failed", EXIT_FAILED,
                             f"{len(result.problems)} table(s) differ after restore",
                             result.problems))
    else:
        summary.finish("done", EXIT_OK, f"{len(result.tables)} tables restored identical")
    if summary.duration_s is not None:  # set by finish
        result.timings_s["total"] = summary.duration_s


def _drill(drill: _Drill, tools: PgBinaries | None, tool_search: dict[str, Any] | None,
           after_dump: Callable[[Path], None] | None,
           before_verify: Callable[[SecretUrl], None] | None, steps: StepFn) -> None:
    """The drill's stages, in order, on what `_open_drill` opened: preconditions, plan,
    apply (dump and restore while the source is hashed) and verify. The record is the
    check's: it writes the evidence (`DrillResult.evidence`)."""
    source = _preconditions(drill, tools, tool_search)
    copy, archive = _plan(drill, source)
    bar = drill.stack.enter_context(progress.bar("backup/restore drill: tables hashed",
                                                 total=2 * len(source.tables),
                                                 unit="tables"))
    job = _Pipeline(drill, source.tools, source.snapshot, source.pooler_hint, archive,
                    copy.url, copy.major, bar, after_dump)
    source_hashes, early = _dump_restore_and_hash(job, source.tables,
                                                  before_verify is None, steps)
    if before_verify is not None:
        before_verify(copy.url)
    _verify(drill, source.tables, source_hashes, early, source.tools, copy.url, bar, steps)


def run_drill(
    settings: Settings,
    *,
    tools: PgBinaries | None = None,
    tool_search: dict[str, Any] | None = None,
    after_dump: Callable[[Path], None] | None = None,
    before_verify: Callable[[SecretUrl], None] | None = None,
    steps: StepFn = no_steps,
) -> DrillResult:
    """Dump, restore, verify. Raises `DrillError` when the drill cannot be carried out;
    returns a result whose ``problems`` list the mismatches when it can, and whose
    ``summary`` (the operation skeleton's) records its stages as steps.

    ``after_dump`` and ``before_verify`` exist for the self-tests' fault injection.
    """
    drill = _open_drill(settings)
    try:
        _drill(drill, tools, tool_search, after_dump, before_verify, steps)
        return drill.result
    finally:
        _release(drill, sys.exc_info()[1])


def _drop_scratch(session: psycopg.Connection[Any], url: SecretUrl, name: str,
                  redact: Callable[[str], str]) -> str | None:
    """Drop the drill's scratch copy; a failure is returned as the line that fails the
    check, because a copy of production left on the server is a fault, not a detail.

    A refusal on the live session is final (another try would be refused alike). A lost
    session (its backend terminated, a Neon compute restarted) took its advisory lock
    with it, so the copy is dropped over a new connection instead (`_drop_scratch_anew`)
    rather than left on the server until the next drill."""
    try:
        if session.closed or session.broken:
            raise DatabaseUnavailableError("it had already ended")
        _drop_database(session, name)
        return None
    except (psycopg.Error, DatabaseUnavailableError) as exc:
        why = redact(first_line(exc))[:200]
        if not (session.closed or session.broken):
            return _scratch_left(name, why)
    return _drop_scratch_anew(url, name, redact, why)


def _drop_scratch_anew(url: SecretUrl, name: str, redact: Callable[[str], str],
                       lost: str) -> str | None:
    """Drop the scratch copy over one new connection to the direct endpoint the drill's
    lost session used (the same database, so the same advisory locks), as the next
    drill's sweep would: only if its lock is free (`_drop_if_unlocked`). One attempt
    with the usual connect timeout, so a server that is really down cannot hold the
    drill; then the copy is reported left."""
    try:
        with db.connect(url, redact=redact) as fresh:
            if _drop_if_unlocked(fresh, name):
                return None
        why = "its advisory lock is held by another session"
    except DatabaseUnavailableError as exc:
        why = str(exc)[:300]  # one line, redacted, naming the masked URL
    except psycopg.Error as exc:
        why = redact(first_line(exc))[:200]
    return _scratch_left(name, f"the drill's session was lost: {lost}; then {why}")


def _scratch_left(name: str, why: str) -> str:
    """The line that fails the check when the scratch copy stays on the server."""
    return (f"the scratch database {name} could not be dropped ({why}) and is left on "
            "the server; it is a full copy of the data: drop it (DROP DATABASE ... WITH "
            "(FORCE)); the next drill also removes it")
