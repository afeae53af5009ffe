"""Connections a gate run opens to the database, counted by a proxy in front of it: each
one costs about six round trips (TLS, SCRAM) before its first query, which across a
continent is most of a check's time (`bench.roundtrips` measures it at 50 ms)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from bench.delayproxy import ProxySet
from opsgate.clients import db, kb, pgrun
from opsgate.config import Settings
from opsgate.sandbox import Sandbox
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.sensitive import SecretUrl
from opsgate.verify import canon, tablehash
from opsgate.verify.drill import DUMP_JOBS, run_drill
from tests.gate_helpers import clean_env, run_gate_here

pytestmark = pytest.mark.usefixtures("gate_in_process")


def test_checks_share_one_read_only_connection(sandbox: Sandbox, tmp_path: Path) -> None:
    """Six checks reading the database, parity's shared computation and blob fallback's
    comparison among them: one connection, each test in a read-only transaction of its
    own on it."""
    url = sandbox.environ()["DATABASE_URL"]
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.0) as proxies:
        proxied = url.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1)
        run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m",
                            "preflight or ledger or health or parity or blob_fallback "
                            "or knowledge_drift", env=clean_env(DATABASE_URL=proxied))
        counts = proxies.snapshot()["db"]
    assert run.code == 0, run.stdout[-3000:]
    assert counts.connections == 1, (
        f"the run opened {counts.connections} database connections, not 1")


def test_the_ledger_check_reads_the_ledger_once(sandbox: Sandbox, tmp_path: Path) -> None:
    """The ledger's three tests judge one read: after connecting, three round trips
    (BEGIN and the settings with the existence check, the rows, ROLLBACK), where each
    test read it again (six round trips a test: 18)."""
    url = sandbox.environ()["DATABASE_URL"]
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.02) as proxies:
        proxied = url.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1)
        with db.connect(SecretUrl(proxied)):
            pass
        connecting = proxies.snapshot()["db"].round_trips
        run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", "ledger",
                            env=clean_env(DATABASE_URL=proxied))
        counts = proxies.snapshot()["db"]
    assert run.code == 0, run.stdout[-3000:]
    assert (counts.connections, counts.round_trips - 2 * connecting) == (2, 3), (
        counts, connecting)


def test_a_transaction_begins_with_its_settings_in_one_round_trip(fresh_db: str) -> None:
    """BEGIN and the settings pinned to the transaction travel together: a read-only
    transaction of one query waits out three round trips (BEGIN with its settings, the
    query, COMMIT), where it waited out four. The proxy holds each direction 10 ms, so
    the bytes a client writes at once are counted as the one burst they are."""
    parts = urlsplit(fresh_db)
    assert parts.hostname is not None and parts.port is not None
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.02) as proxies:
        url = SecretUrl(fresh_db.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1))
        with db.connect(url) as conn:
            before = proxies.snapshot()["db"].round_trips
            with db.transaction(conn, read_only=True, statement_timeout_ms=1000):
                timeout = conn.execute("SHOW statement_timeout").fetchone()
            waited = proxies.snapshot()["db"].round_trips - before
            after = conn.execute("SHOW statement_timeout").fetchone()
    assert (waited, timeout, after) == (3, ("1s",), ("0",))


def test_psql_hashes_a_table_in_the_round_trips_of_one_statement(fresh_db: str,
                                                                  pg: EmbeddedPostgres) -> None:
    """The drill's psql hash (BEGIN, the snapshot, the settings, COPY, COMMIT) waits out
    what psql running one statement waits out; one ``-c`` per statement waited out ten
    more, each one network round trip."""
    parts = urlsplit(fresh_db)
    assert parts.hostname is not None and parts.port is not None
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO t SELECT i, 'n' || i FROM generate_series(1, 500) i")
        columns, order_by = canon.table_shape(conn, "t")
        expected = canon.table_hash(conn, "t")
    psql = pg.binaries.tool("psql")
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.02) as proxies:
        url = SecretUrl(fresh_db.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1))
        env = {**os.environ, "PGPASSWORD": url.password or ""}

        def waited(work: Callable[[], object]) -> int:
            before = proxies.snapshot()["db"].round_trips
            work()
            return proxies.snapshot()["db"].round_trips - before

        one_statement = waited(lambda: subprocess.run(
            [str(psql), "--no-psqlrc", "-qAt", f"--dbname={url.without_password}", "-c",
             "SELECT 1"], env=env, check=True, capture_output=True))
        hashed: list[canon.TableHash] = []
        hashing = waited(lambda: hashed.append(tablehash.table_hash_via_psql(
            psql, url.without_password, env, "t", columns, order_by)))
    assert hashed == [expected]
    assert hashing == one_statement, (hashing, one_statement)


def test_kb_reads_and_table_shapes_take_one_round_trip_a_statement(sandbox: Sandbox) -> None:
    """Reading the kb's edges inside the caller's transaction (as drift does) waits out
    its two statements only: the order's collation query and the stream. A savepoint
    around them added SAVEPOINT and RELEASE, two more round trips, and scoped nothing.
    A table's shape (columns, key), which the drill reads per table and side, is one
    statement, where it was two; so are the kb's domains and the orders of its two
    reads, which drift asks for together (three statements before)."""
    url = sandbox.environ()["DATABASE_URL"]
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.02) as proxies:
        proxied = SecretUrl(url.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1))
        with db.connect(proxied) as conn, db.transaction(conn, read_only=True):
            before = proxies.snapshot()["db"].round_trips
            edges = sum(1 for _ in kb.iter_edge_rows(conn))
            waited = proxies.snapshot()["db"].round_trips - before
            shape_before = proxies.snapshot()["db"].round_trips
            shape = canon.table_shape(conn, "kb_edges")
            shape_waited = proxies.snapshot()["db"].round_trips - shape_before
            # Drift asks for the domains and both reads' orders in one statement.
            domains = kb.domains(conn)
            orders = {"edges": kb.order_by(conn, "kb_edges", "kb_edges",
                                           ["source_id", "target_id", "relation"]),
                      "nodes": kb.order_by(conn, "kb_entities", "e", ["id"])}
            together_before = proxies.snapshot()["db"].round_trips
            together = kb.domains_and_orders(conn)
            together_waited = proxies.snapshot()["db"].round_trips - together_before
    assert edges > 0
    assert waited == 2, f"reading {edges} edges waited out {waited} round trips, not 2"
    assert (together_waited, together) == (1, (domains, orders)), together_waited
    assert shape_waited == 1, f"table_shape waited out {shape_waited} round trips, not 1"
    assert shape == (("id", "relation", "source_id", "target_id", "weight"), ("id",)), shape


def test_the_drill_hashes_each_source_table_in_one_round_trip(sandbox: Sandbox) -> None:
    """Inside the drill's snapshot transaction (settings pinned once), every contract
    table's shape is one statement and each table's hash one COPY: one round trip each,
    where a psql of its own waited out a connection's eight. The hashes are canon-v1's."""
    url = sandbox.environ()["DATABASE_URL"]
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with db.connect(SecretUrl(url)) as plain, db.transaction(plain, read_only=True):
        tables = pgrun.contract_tables(plain)
        expected = {t: canon.table_hash(plain, t) for t in tables}
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.02) as proxies:
        proxied = SecretUrl(url.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1))
        with db.connect(proxied) as conn, db.transaction(
                conn, read_only=True, isolation=psycopg.IsolationLevel.REPEATABLE_READ,
                settings=canon.TABLE_SESSION_SETTINGS):
            before = proxies.snapshot()["db"].round_trips
            shapes = canon.table_shapes(conn, tables)
            shapes_waited = proxies.snapshot()["db"].round_trips - before
            got, waited = {}, []
            for t in tables:
                before = proxies.snapshot()["db"].round_trips
                got[t] = tablehash.table_hash_in_snapshot(conn, t, *shapes[t])
                waited.append(proxies.snapshot()["db"].round_trips - before)
    assert len(tables) > 5
    assert shapes == {t: (expected[t].columns, expected[t].order_by) for t in tables}
    assert got == expected
    assert shapes_waited == 1, shapes_waited
    assert waited == [1] * len(tables), waited


def test_the_drill_reaches_the_source_only_for_its_snapshot_and_pg_dump(
        sandbox: Sandbox) -> None:
    """A local drill's connections to the source: the one that exports the snapshot and
    hashes in it, and pg_dump's (its leader and one per job). No psql per table, no
    session beside the snapshot's, and the restore is watched on the local copy."""
    values = sandbox.environ()
    parts = urlsplit(values["DATABASE_URL"])
    assert parts.hostname is not None and parts.port is not None
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.0) as proxies:
        port = f"127.0.0.1:{proxies.port('db')}"
        proxied = {k: v.replace(f"127.0.0.1:{parts.port}", port) for k, v in values.items()}
        result = run_drill(Settings.load(environ={**proxied, "OPSGATE_DRILL_RESTORE": "local"}))
        counts = proxies.snapshot()["db"]
    assert result.problems == [] and result.restore_mode == "local"
    assert counts.connections == 1 + 1 + DUMP_JOBS, counts


def test_a_checks_transaction_begins_with_its_first_statement(fresh_db: str) -> None:
    """A check's read-only session (autocommit, guarded): its first statement travels in
    one pipeline with BEGIN READ ONLY and the settings, one round trip for the three,
    where psycopg's own BEGIN, then the settings, then the statement waited out three.
    The transaction is read only and repeatable read; once it is released, a statement
    is refused rather than run outside one."""
    parts = urlsplit(fresh_db)
    assert parts.hostname is not None and parts.port is not None
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.02) as proxies:
        url = SecretUrl(fresh_db.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1))
        with db.read_only_session(url) as conn:
            conn.begin_on_next_statement(db.pin_statement(statement_timeout_ms=1234))
            before = proxies.snapshot()["db"].round_trips
            row = conn.execute("SELECT current_setting('transaction_read_only'), "
                               "current_setting('transaction_isolation'), "
                               "current_setting('statement_timeout')").fetchone()
            waited = proxies.snapshot()["db"].round_trips - before
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("CREATE TEMP TABLE opsgate_probe (x int)")
            db.release(conn)
            with pytest.raises(psycopg.ProgrammingError, match="outside a transaction"):
                conn.execute("SELECT 1")
            with pytest.raises(psycopg.ProgrammingError, match="outside a transaction"), \
                    conn.cursor() as cur, cur.copy("COPY (SELECT 1) TO STDOUT"):
                pass
            with db.reading(conn):  # a transaction of its own: read only, like the first
                again = conn.execute("SELECT current_setting('transaction_read_only')"
                                     ).fetchone()
            # psycopg's own transaction() on an armed session runs inside the armed one.
            conn.begin_on_next_statement(db.pin_statement(statement_timeout_ms=4321))
            with conn.transaction():
                inner = conn.execute("SHOW statement_timeout").fetchone()
            conn.rollback()
    assert (waited, row, again) == (1, ("on", "repeatable read", "1234ms"), ("on",))
    assert inner == ("4321ms",)


def test_count_rows_counts_in_one_round_trip(fresh_db: str) -> None:
    """Exact counts of the tables that exist, None for one that does not, in one
    statement (it was two: which exist, then their counts)."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE a (x int); CREATE TABLE b (x int)")
        conn.execute("INSERT INTO a SELECT generate_series(1, 7)")
    parts = urlsplit(fresh_db)
    assert parts.hostname is not None and parts.port is not None
    with ProxySet({"db": (parts.hostname, parts.port)}, delay_s=0.02) as proxies:
        url = SecretUrl(fresh_db.replace(f":{parts.port}/", f":{proxies.port('db')}/", 1))
        with db.connect(url) as conn, db.transaction(conn, read_only=True, settings=()):
            before = proxies.snapshot()["db"].round_trips
            counts = db.count_rows(conn, ["a", "b", "missing"])
            waited = proxies.snapshot()["db"].round_trips - before
    assert (counts, waited) == ({"a": 7, "b": 0, "missing": None}, 1)
