"""Receiving canon-v1 table bytes as fast as the tools allow.

The bytes are frozen (`opsgate.verify.canon`): COPY text of the table's columns by name,
ordered by the primary key, under the pinned session settings, into SHA-256. How they
are received is free, and it is most of the client's cost:

* Through psycopg, COPY arrives one protocol message per row, and each message costs the
  interpreter about a microsecond. Rows are gathered into 1 MiB buffers and hashed on a
  thread of their own (`StreamDigest`): hashlib releases the GIL for large buffers, so
  hashing one buffer overlaps receiving the next.
* Through psql (`table_hash_via_psql`), a C client receives the rows and writes them to
  a pipe; Python only reads 1 MiB at a time and hashes. This is what an auditor's
  ``psql ... | sha256sum`` costs, and what the drill uses for the restored copy's tables
  over 1 MiB (a local server by default): tables of millions of small rows, on a machine
  it shares with pg_dump and pg_restore. Smaller ones cost less through psycopg than a
  psql's process and connection (`opsgate.verify.drill.HASH_HERE_MAX_BYTES`). The
  drill's source side is across the network, where each psql pays a connection (about 8
  round trips), so the source is hashed on the connection that holds pg_dump's snapshot
  instead (`table_hash_in_snapshot`, one COPY and one round trip per table).
* A large table hashed outside the caller's transaction is read in primary-key ranges
  over two connections that share one exported snapshot (`table_hash_read`,
  `_parallel`): the server's COPY work, most of the cost, then runs on two cores. The
  ranges are hashed in key order, so the bytes are the single COPY's.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import queue
import re
import select
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psycopg
from psycopg import Connection, pq, sql

from opsgate.clients import db
from opsgate.clients.db import CONNECT_TIMEOUT_S
from opsgate.config import DEFAULT_HASH_CONNECTIONS, MAX_HASH_CONNECTIONS, Settings, in_effect
from opsgate.errors import CanonError, first_line
from opsgate.processes import piped
from opsgate.verify.canon import (
    TABLE_SESSION_SETTINGS,
    TableHash,
    pin_session,
    table_copy_query,
    table_shape,
)

#: Bytes gathered before they are handed to the hashing thread.
HASH_BUFFER = 1 << 20

#: Buffers waiting for the hashing thread at most: bounds client memory to a few MiB.
_QUEUE_DEPTH = 4

#: How long a block that failed or was stopped waits for its digest thread to end.
_ABANDON_WAIT_S = 5.0

#: Connections a large table is read with, the caller's included (``OPSGATE_HASH_CONNECTIONS``).
DEFAULT_CONNECTIONS = DEFAULT_HASH_CONNECTIONS
MAX_CONNECTIONS = MAX_HASH_CONNECTIONS

#: Tables smaller than this on disk (``pg_table_size``) are read with one COPY: below
#: it, starting a second connection costs about what it saves (docs/performance.md).
PARALLEL_MIN_BYTES = 16 << 20

#: Ranges are cut to about this many bytes on disk, at least one per connection and at
#: most `MAX_RANGES`: more ranges even out the connections' shares (the last range
#: keeps one connection busy alone) and bound the spool; each costs a COPY statement.
RANGE_BYTES = 32 << 20
MAX_RANGES = 64

#: Planner settings of every range's transaction (SET LOCAL; they change plans, never
#: bytes). A range is a slice of the key's index, to be read in its order as the whole
#: table's COPY is; left alone, the planner reads a range of a table whose heap is not
#: in key order with a bitmap scan, parallel workers and an external sort to disk, which
#: measured twice the server CPU of the single COPY (1M rows: 3.4 s against 1.6 s),
#: and JIT-compiles each range's query again.
_RANGE_PLAN_SETTINGS: tuple[tuple[str, str], ...] = (
    ("enable_sort", "off"), ("enable_bitmapscan", "off"),
    ("max_parallel_workers_per_gather", "0"), ("jit", "off"))

#: Ranges a connection may take beyond the one being hashed: bounds the spool to about
#: this many ranges when one range takes much longer than the others.
_MAX_AHEAD = 4

#: Heap pages read at random to choose the split keys (`_split_keys`).
SAMPLE_PAGES = 256


class StreamDigest:
    """SHA-256, size and line count of a byte stream fed in pieces of any size.

    Hashing runs on its own thread, fed whole 1 MiB buffers through a bounded queue, so
    memory stays constant whatever the stream's length. Use as a context manager: the
    thread ends with the block, also when the block fails. ``count_rows=False`` when
    the feeder counts rows itself (`_receive_copy` does, one message per row): counting
    newlines costs that thread as much CPU as hashing them, holding the GIL.
    """

    def __init__(self, *, count_rows: bool = True) -> None:
        self._digest = hashlib.sha256()
        self._queue: queue.Queue[bytearray | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        self._buf = bytearray()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="opsgate-sha256", daemon=True)
        self._thread.start()
        self.rows = 0
        self.bytes = 0
        self._count_rows = count_rows
        self._hexdigest: str | None = None
        self._abandoned = False

    def _run(self) -> None:
        while (buf := self._queue.get()) is not None and not self._abandoned:
            try:
                self._digest.update(buf)
                if self._count_rows:
                    self.rows += buf.count(b"\n")
                self.bytes += len(buf)
            except BaseException as exc:  # re-raised by hexdigest on the caller's thread
                self._error = exc

    def feed(self, chunk: Any) -> None:
        self._buf += chunk
        if len(self._buf) >= HASH_BUFFER:
            self._queue.put(self._buf)
            self._buf = bytearray()

    def put(self, buf: bytearray) -> None:
        """Hand over a whole buffer (gathered by the caller; nothing is held here)."""
        if self._buf:
            self._queue.put(self._buf)
            self._buf = bytearray()
        if buf:
            self._queue.put(buf)

    def hexdigest(self) -> str:
        """End the stream and return its digest (idempotent)."""
        if self._hexdigest is None:
            if self._buf:
                self._queue.put(self._buf)
                self._buf = bytearray()
            self._queue.put(None)
            self._thread.join()
            if self._error is not None:
                raise self._error
            self._hexdigest = self._digest.hexdigest()
        return self._hexdigest

    def __enter__(self) -> StreamDigest:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """After `hexdigest` the thread has ended. Otherwise the block failed or was
        stopped and the digest is not wanted: the thread is told to stop and waited for
        at most `_ABANDON_WAIT_S` (it is a daemon). A Ctrl-C or SIGTERM that lands inside
        the queue's own locking (a `put` blocked on a full queue) can cost the thread
        the wake-up it waits for; waiting for it without a bound hung a stopped drill
        here until it was killed."""
        if not self._thread.is_alive():
            return
        self._abandoned = True
        with contextlib.suppress(queue.Full):  # full: the thread is busy, and sees the flag
            self._queue.put_nowait(None)
        self._thread.join(_ABANDON_WAIT_S)


def table_hash(conn: Connection[Any], table: str, schema: str = "public", *,
               connections: int | None = None) -> TableHash:
    """canon-v1 hash of ``table`` read through ``conn`` (see `canon.table_hash`)."""
    return table_hash_read(conn, table, schema, connections=connections)[0]


def table_hash_read(conn: Connection[Any], table: str, schema: str = "public", *,
                    connections: int | None = None, min_parallel_bytes: int | None = None,
                    ) -> tuple[TableHash, HashRead]:
    """canon-v1 hash of ``table``, and how its bytes were received.

    In a transaction the caller holds, one COPY in that transaction: its snapshot and
    its own writes are what the hash must describe, and no other session can see its
    writes. Otherwise a transaction of our own (REPEATABLE READ, READ ONLY), and a
    table with a primary key of at least ``min_parallel_bytes`` (default
    `PARALLEL_MIN_BYTES`) is read in key ranges over ``connections`` connections
    (default `hash_connections`, 2) that share its snapshot (see `_parallel`).
    """
    in_callers = db.in_transaction(conn)
    wanted = 1 if in_callers else hash_connections() if connections is None else connections
    if wanted < 2:
        why = "the caller's transaction" if in_callers else "one connection"
        with db.reading(conn):
            pin_session(conn)
            columns, order_by = table_shape(conn, table, schema)
            return _single(conn, table, columns, order_by, schema), HashRead(note=why)
    minimum = PARALLEL_MIN_BYTES if min_parallel_bytes is None else min_parallel_bytes
    ranges = _Ranges()
    helpers: list[threading.Thread] = []
    try:
        with db.transaction(conn, read_only=True,
                            isolation=psycopg.IsolationLevel.REPEATABLE_READ,
                            settings=TABLE_SESSION_SETTINGS):
            columns, order_by = table_shape(conn, table, schema)
            facts = _table_facts(conn, table, schema)
            comparison = _comparison(facts)
            why = ("no primary key" if not facts.operators
                   else "a temporary table" if facts.temporary
                   else "the key's columns do not share one ordering operator"
                   if comparison is None
                   else f"{facts.size} bytes, under {minimum}" if facts.size < minimum
                   else "")
            if why or comparison is None:
                return _single(conn, table, columns, order_by, schema), HashRead(note=why)
            try:
                h, read = _parallel(conn, table, columns, order_by, schema, facts,
                                    comparison, wanted, ranges, helpers)
            except BaseException as exc:
                ranges.fail(exc)
                raise
    finally:
        # After our transaction has ended: a helper still waiting for a pooled server
        # connection gets ours, fails to import the ended snapshot and stops.
        ranges.cancel()
        for helper in helpers:
            helper.join()
        ranges.close()
    return h, replace(read, note=read.note or ranges.note)


def table_hash_in_snapshot(conn: Connection[Any], table: str, columns: tuple[str, ...],
                          order_by: tuple[str, ...], schema: str = "public") -> TableHash:
    """canon-v1 hash of ``table`` in the transaction ``conn`` has open, whose settings the
    caller has already pinned (`canon.pin_session`, once for every table) and whose
    shape (``columns``, ``order_by``) it has read (`canon.table_shapes`): one COPY, one
    network round trip. The drill hashes the source this way on the connection that
    exported pg_dump's snapshot."""
    if not db.in_transaction(conn):
        raise psycopg.ProgrammingError("table_hash_in_snapshot needs an open transaction")
    return _single(conn, table, columns, order_by, schema)


def _single(conn: Connection[Any], table: str, columns: tuple[str, ...],
            order_by: tuple[str, ...], schema: str) -> TableHash:
    """One COPY of the whole table in ``conn``'s open transaction, settings pinned."""
    query = table_copy_query(table, columns, order_by, schema)
    with StreamDigest(count_rows=False) as digest, conn.cursor() as cur, cur.copy(query):
        rows = _receive_copy(conn, digest.put)
        sha256 = digest.hexdigest()
    return TableHash(table, sha256, rows, digest.bytes, columns, order_by)


def _receive_copy(conn: Connection[Any], emit: Callable[[bytearray], None]) -> int:
    """Every row of the COPY TO that ``conn`` has just started, into ``emit`` in buffers
    of `HASH_BUFFER` bytes or more (the last one may be shorter, or empty); the number
    of rows (COPY sends one message per row).

    Hand-written on libpq's own calls (psycopg.pq): psycopg's ``Copy.read`` runs a
    generator and a wait per row, which at millions of small rows costs more than the
    server's work (kb_edges at 400k rows: 0.29 s of client CPU and 2.0 s wall against
    0.13 s and 0.9 s here). This is the loop psycopg runs, without the per-row
    machinery: take every row libpq already holds, wait for the socket only when it
    holds none. Rows are gathered here, inline, rather than by a call per row. The
    final result is read here too, which leaves psycopg's ``Copy`` nothing to do when
    its block ends without an error.
    """
    pgconn = conn.pgconn
    get = pgconn.get_copy_data
    buf = bytearray()
    rows = 0
    while True:
        nbytes, data = get(1)
        if nbytes > 0:
            rows += 1
            buf += data
            if len(buf) >= HASH_BUFFER:
                emit(buf)
                buf = bytearray()
        elif nbytes == 0:  # nothing buffered: wait for the server (the GIL is released)
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
        else:
            break
    while pgconn.is_busy():
        select.select([pgconn.socket], [], [])
        pgconn.consume_input()
    failure = None
    while (result := pgconn.get_result()) is not None:
        if result.status != pq.ExecStatus.COMMAND_OK and failure is None:
            failure = result
    if failure is not None:
        raise psycopg.errors.error_from_result(failure, encoding=conn.info.encoding)
    if nbytes == -2:
        raise psycopg.OperationalError(
            f"receiving COPY data failed: {pgconn.get_error_message()}")
    emit(buf)
    return rows


# -- one table over several connections -------------------------------------------


@dataclass(frozen=True)
class HashRead:
    """How a table hash received its bytes. Not part of the hash: every way of receiving
    gives the same bytes in the same order."""

    #: COPY statements the bytes came in (key ranges, in key order).
    ranges: int = 1
    #: Ranges each connection received, the caller's first; (1,) for one COPY.
    by_connection: tuple[int, ...] = (1,)
    #: Bytes received ahead of their turn and read back from the spool.
    spooled_bytes: int = 0
    #: Why one COPY, or why a connection did not join (one line, never a password).
    note: str = ""


def hash_connections(environ: Mapping[str, str] | None = None) -> int:
    """Connections a large table's hash reads with, the caller's included:
    ``OPSGATE_HASH_CONNECTIONS`` of the settings in effect (`config.in_effect`: a run's
    env file counts), or of ``environ`` when given; 1 keeps one COPY."""
    return (in_effect() if environ is None else Settings.load(environ=environ)
            ).hash_connections


@dataclass(frozen=True)
class _Table:
    """What deciding how to read a table needs, from the catalog only."""

    size: int  # pg_table_size: heap, TOAST and maps
    heap: int  # the main fork: what TABLESAMPLE samples
    temporary: bool  # visible to its own session only
    #: The primary key's ordering operators, ``("schema", "<", "schema", ">=")`` per
    #: column; empty without a primary key.
    operators: tuple[tuple[str, str, str, str], ...]


#: What an operator's name may hold (it is written into SQL as it stands).
_OPERATOR_NAME = re.compile(r"[+\-*/<>=~!@#%^&|`?]{1,63}")


def _table_facts(conn: Connection[Any], table: str, schema: str) -> _Table:
    """Sizes, persistence and the primary key's operators, whatever the table's size.

    The operators are those of the primary-key index's operator classes: a primary key
    always uses each column type's default b-tree class, the one ``ORDER BY`` sorts
    with, so its "less than" (strategy 1) and "greater or equal" (strategy 4) are
    exactly the comparisons the COPY's order makes; they are written schema-qualified,
    so no search_path (the caller's session may have set one) picks another."""
    row = conn.execute(
        "SELECT pg_table_size(c.oid), pg_relation_size(c.oid), c.relpersistence = 't', "
        "(SELECT array_agg(ARRAY[ln.nspname::text, lo.oprname::text, gn.nspname::text, "
        "                        go.oprname::text] ORDER BY k.ord) "
        " FROM pg_index i "
        " CROSS JOIN LATERAL unnest(i.indclass::oid[]) WITH ORDINALITY AS k(opc, ord) "
        " JOIN pg_opclass oc ON oc.oid = k.opc "
        " LEFT JOIN pg_amop lt ON lt.amopfamily = oc.opcfamily AND lt.amopstrategy = 1 "
        "      AND lt.amoplefttype = oc.opcintype AND lt.amoprighttype = oc.opcintype "
        " LEFT JOIN pg_operator lo ON lo.oid = lt.amopopr "
        " LEFT JOIN pg_namespace ln ON ln.oid = lo.oprnamespace "
        " LEFT JOIN pg_amop ge ON ge.amopfamily = oc.opcfamily AND ge.amopstrategy = 4 "
        "      AND ge.amoplefttype = oc.opcintype AND ge.amoprighttype = oc.opcintype "
        " LEFT JOIN pg_operator go ON go.oid = ge.amopopr "
        " LEFT JOIN pg_namespace gn ON gn.oid = go.oprnamespace "
        " WHERE i.indrelid = c.oid AND i.indisprimary) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
    if row is None:
        return _Table(0, 0, False, ())
    operators = tuple((str(o[0] or ""), str(o[1] or ""), str(o[2] or ""), str(o[3] or ""))
                      for o in (row[3] or ()))
    return _Table(int(row[0] or 0), int(row[1] or 0), bool(row[2]), operators)


def _comparison(table: _Table) -> tuple[sql.Composable, sql.Composable] | None:
    """``OPERATOR(schema.<)`` and ``OPERATOR(schema.>=)`` comparing the whole key as a
    row value, or None when the key's columns do not share one pair of operators (a
    row comparison takes one operator name) or an operator is missing."""
    pairs = {(ops[0], ops[1], ops[2], ops[3]) for ops in table.operators}
    if len(pairs) != 1:
        return None
    lt_schema, lt, ge_schema, ge = pairs.pop()
    if not (lt_schema and ge_schema and _OPERATOR_NAME.fullmatch(lt)
            and _OPERATOR_NAME.fullmatch(ge)):
        return None
    return (sql.SQL("OPERATOR({}.{})").format(sql.Identifier(lt_schema), sql.SQL(lt)),
            sql.SQL("OPERATOR({}.{})").format(sql.Identifier(ge_schema), sql.SQL(ge)))


def _split_keys(conn: Connection[Any], table: str, schema: str, order_by: tuple[str, ...],
                heap: int, ranges: int) -> list[tuple[str, ...]]:
    """Up to ``ranges - 1`` primary keys (as text, ascending) that cut the table into
    ranges of about as many rows, chosen from a sample of its pages.

    A sample rather than pg_stats' histogram: it is read in the hash's own snapshot, so
    it follows the table as it is (a histogram is as old as the last ANALYZE, absent
    after a restore, and covers the key's first column only); ``TABLESAMPLE SYSTEM``
    reads whole pages picked at random, about `SAMPLE_PAGES` of the heap's, not the
    table. Sorted by the same ``ORDER BY`` as the COPY (the columns' own types and
    collations), so the keys come in the order the ranges need.
    """
    percent = min(100.0, 100.0 * SAMPLE_PAGES / max(1, heap // 8192))
    # ORDER BY names the table's columns through its alias: a bare name would be the
    # output column of that name, the key cast to text, sorted as text.
    keys = sql.SQL(", ").join(sql.Identifier("s", c) for c in order_by)
    texts = sql.SQL(", ").join(sql.SQL("{}::text AS {}").format(
        sql.Identifier("s", c), sql.Identifier(f"k{n}")) for n, c in enumerate(order_by))
    rows = conn.execute(sql.SQL(
        "SELECT {texts} FROM {table} AS s TABLESAMPLE SYSTEM ({percent}) ORDER BY {keys}"
    ).format(texts=texts, table=sql.Identifier(schema, table),
             percent=sql.Literal(round(percent, 6)), keys=keys)).fetchall()
    chosen: list[tuple[str, ...]] = []
    for j in range(1, ranges):
        at = j * len(rows) // ranges
        key = tuple(str(v) for v in rows[at]) if rows else ()
        if at > 0 and (not chosen or chosen[-1] != key):
            chosen.append(key)
    return chosen


def _range_queries(table: str, columns: tuple[str, ...], order_by: tuple[str, ...],
                   schema: str, keys: list[tuple[str, ...]],
                   comparison: tuple[sql.Composable, sql.Composable]) -> list[sql.Composed]:
    """The COPY of each range: the canon-v1 query with ``WHERE`` bounds on the primary
    key. Range i holds the rows with ``keys[i-1] <= key < keys[i]`` (no lower bound for
    the first, no upper bound for the last), compared as the ``ORDER BY`` compares:
    the key's columns as one row value, ``(a, b) >= ('x', 'y')``, with the key's own
    operators (`_comparison`) and each column's collation (a literal has none, so the
    column's applies; an untyped literal takes the column's type). Primary-key columns
    are NOT NULL and the key is unique, so each row satisfies exactly one range's
    bounds, and concatenating the ranges' COPY bytes in order gives the one COPY's."""
    def row(values: Iterable[sql.Composable]) -> sql.Composable:
        joined = sql.SQL(", ").join(values)
        return sql.SQL("({})").format(joined) if len(order_by) > 1 else joined

    lt, ge = comparison
    lhs = row(sql.Identifier(c) for c in order_by)
    bounds = [row(sql.Literal(v) for v in key) for key in keys]
    queries = []
    for i in range(len(keys) + 1):
        conds = []
        if i > 0:
            conds.append(sql.SQL("{} {} {}").format(lhs, ge, bounds[i - 1]))
        if i < len(keys):
            conds.append(sql.SQL("{} {} {}").format(lhs, lt, bounds[i]))
        queries.append(sql.SQL(
            "COPY (SELECT {cols} FROM {tbl} WHERE {where} ORDER BY {order}) TO STDOUT").format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            tbl=sql.Identifier(schema, table), where=sql.SQL(" AND ").join(conds),
            order=sql.SQL(", ").join(sql.Identifier(c) for c in order_by)))
    return queries


def _parallel(conn: Connection[Any], table: str, columns: tuple[str, ...],
              order_by: tuple[str, ...], schema: str, facts: _Table,
              comparison: tuple[sql.Composable, sql.Composable], wanted: int,
              ranges: _Ranges, helpers: list[threading.Thread],
              ) -> tuple[TableHash, HashRead]:
    """The table in primary-key ranges over ``wanted`` connections sharing one snapshot.

    ``conn`` is in our REPEATABLE READ READ ONLY transaction, settings pinned. The
    other connections are opened at once, to the server ``conn`` is connected to
    (`sibling_conninfo`), while ``conn`` exports its snapshot (``pg_export_snapshot``)
    and samples split keys (`_split_keys`). Each of them begins REPEATABLE READ READ
    ONLY, imports the snapshot (``SET TRANSACTION SNAPSHOT``), pins the same settings
    with SET LOCAL and checks that it sees the same snapshot, all in one round trip
    (`_helper`). Through a transaction pooler each transaction holds a server
    connection of its own and the snapshot is the server's, so it is shared across
    them. Then every connection takes the next range in key order until none is left;
    the range whose turn it is streams straight into SHA-256, a range received ahead
    of its turn is spooled to an anonymous temporary file and hashed when its turn
    comes (`_Ranges`). A connection that cannot join (no free connection, a pool that
    makes it wait, a snapshot it does not see) takes no range and leaves the work to
    the others: never another hash, at worst the time of one connection.

    The helpers are started here and joined by the caller once this transaction has
    ended: one still waiting for a pooled server connection gets this one's then.
    """
    info = sibling_conninfo(conn)
    for n in range(1, wanted):
        helper = threading.Thread(target=_helper, args=(info, ranges, n),
                                  name=f"opsgate-hash-{n}", daemon=True)
        helper.start()
        helpers.append(helper)
    del info
    function = "pg_current_snapshot" if conn.info.server_version >= 130000 \
        else "txid_current_snapshot"
    export = sql.SQL("SELECT pg_export_snapshot(), {}()::text, {}").format(
        sql.Identifier(function), _set_local(_RANGE_PLAN_SETTINGS))
    row = db.one_row(conn.execute(export), "the exported snapshot")
    ranges.publish_snapshot(str(row[0]), str(row[1]), function)
    count = max(wanted, min(MAX_RANGES, -(-facts.size // RANGE_BYTES)))
    keys = _split_keys(conn, table, schema, order_by, facts.heap, count)
    if not keys:
        ranges.cancel()
        return (_single(conn, table, columns, order_by, schema),
                HashRead(note="no split key in the sample"))
    ranges.start(_range_queries(table, columns, order_by, schema, keys, comparison))
    hasher = threading.Thread(target=ranges.hash_in_order, name="opsgate-sha256", daemon=True)
    hasher.start()
    try:
        _take_ranges(conn, ranges, 0)
    except _Stopped:
        pass  # another thread failed: its error is raised below
    except BaseException as exc:
        ranges.fail(exc)
    finally:
        hasher.join()
    ranges.raise_failure()
    sha256, rows, nbytes = ranges.result()
    read = HashRead(ranges=len(keys) + 1, by_connection=ranges.by_connection(wanted),
                    spooled_bytes=ranges.spooled)
    return TableHash(table, sha256, rows, nbytes, columns, order_by), read


def sibling_conninfo(conn: Connection[Any]) -> str:
    """libpq keywords for another connection like ``conn``, to the very server it is
    connected to: its own connection options (PQconninfo: user, database, password,
    TLS, ...), with the host, port and address it actually reached (of a host list,
    or a name that resolves to several). Holds the password: never shown; the caller
    hands it straight to libpq."""
    params = {o.keyword.decode(): o.val.decode() for o in conn.pgconn.info
              if o.val is not None and o.val != b""}
    params["host"] = conn.info.host
    params["port"] = str(conn.info.port)
    params.pop("hostaddr", None)
    try:
        address = conn.info.hostaddr
    except psycopg.NotSupportedError:  # libpq before 12
        address = ""
    if address:
        params["hostaddr"] = address
    return psycopg.conninfo.make_conninfo("", **params)


def _set_local(settings: Iterable[tuple[str, str]]) -> sql.Composable:
    """``set_config(name, value, true), ...``: each setting for the transaction only."""
    return sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
        for k, v in settings)


class _Stopped(Exception):
    """Another thread of the same hash failed; this one stops without an error of its own."""


def _take_ranges(conn: Connection[Any], ranges: _Ranges, who: int) -> None:
    """Take the next range in key order and receive it, until none is left."""
    while (i := ranges.claim(who)) is not None:
        query = ranges.queries[i]
        with conn.cursor() as cur, cur.copy(query):
            rows = _receive_copy(conn, functools.partial(ranges.put, i))
        ranges.done(i, rows)


def _helper(conninfo: str, ranges: _Ranges, who: int) -> None:
    """A connection of its own that joins the hash's snapshot, then takes ranges.

    Hand-written rather than through `opsgate.clients.db.transaction`: the import must be
    the first statement of its transaction, and sending ``BEGIN``, ``SET TRANSACTION
    SNAPSHOT``, the settings and the check as one simple query costs one round trip,
    where a transaction block would cost three. Nothing is set outside the
    transaction, and the connection is closed at the end."""
    try:
        conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None,
                               connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        ranges.left_out(who, f"connection {who} could not connect: {first_line(exc)}")
        return
    del conninfo
    claimed = False
    try:
        snapshot = ranges.wait_snapshot()
        if snapshot is None:
            return
        exported, seen, function = snapshot
        script = sql.SQL("; ").join([
            sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)),
            sql.SQL("SELECT {}").format(
                _set_local((*TABLE_SESSION_SETTINGS, *_RANGE_PLAN_SETTINGS))),
            sql.SQL("SELECT {}()::text").format(sql.Identifier(function)),
        ])
        try:
            cur = conn.execute(script)
            while cur.nextset():
                pass
            row = cur.fetchone()
        except psycopg.Error as exc:
            ranges.left_out(who, f"connection {who} did not join the snapshot: "
                            f"{first_line(exc)}")
            return
        if row is None or str(row[0]) != seen:
            ranges.left_out(who, f"connection {who} did not see the same snapshot")
            return
        claimed = True
        _take_ranges(conn, ranges, who)
        conn.execute("ROLLBACK")  # read only: nothing to keep
    except _Stopped:
        pass
    except BaseException as exc:
        if claimed:
            ranges.fail(exc)
        else:
            ranges.left_out(who, f"connection {who}: {first_line(exc)}")
    finally:
        # End a transaction that failed (an import refused) before closing: a pooler
        # then keeps a clean server connection rather than dropping a dirty one.
        if not conn.closed and conn.info.transaction_status in (
                pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        conn.close()


class _Range:
    """One key range on its way to the digest: spooled until its turn, then direct."""

    __slots__ = ("direct", "done", "pending", "read", "spool", "spooled", "writing")

    def __init__(self) -> None:
        self.direct = False  # its turn has come: buffers go to `pending`, not the spool
        self.done = False
        self.pending: deque[bytearray] = deque()
        self.spool: IO[bytes] | None = None
        self.spooled = 0  # bytes written to the spool and visible to the reader
        self.read = 0  # bytes of the spool hashed
        self.writing = False  # a buffer is being written to the spool (outside the lock)


class _Ranges:
    """The ranges of one table hash, taken by connections in key order and hashed in
    key order on a thread of its own (`hash_in_order`).

    The range whose turn it is (the first not wholly hashed) is direct: its receiver
    hands 1 MiB buffers to the hasher through a queue of `_QUEUE_DEPTH` buffers. Every
    other range is received ahead of its turn and written to its own spool, an
    anonymous temporary file (``tempfile.TemporaryFile``: no name on Linux, nothing to
    clean up however the process ends). When its turn comes the hasher reads its
    spool, then switches it to direct once it has read all that was written while no
    write is under way, so its bytes reach the digest once each and in order. Client
    memory stays a few buffers per connection whatever the table's size; the spool
    holds the ranges taken ahead of their turn, at most `_MAX_AHEAD` of them.

    Hand-written on one condition variable: no standard queue spools to a file and
    hands over in order, and a range's switch from spool to direct must be decided
    under the same lock as its receiver's choice of where each buffer goes (one lock
    round per 1 MiB buffer, not per row).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._snapshot: tuple[str, str, str] | None = None
        self._cancelled = False
        self.queries: Sequence[sql.Composed] = ()
        self._ranges: list[_Range] = []
        self._started = False
        self._next = 0
        self._head = 0  # the range being hashed
        self._taken: dict[int, int] = {}
        self._failure: BaseException | None = None
        self._digest = hashlib.sha256()
        self._rows = 0
        self._bytes = 0
        self.spooled = 0
        self.note = ""

    # -- set-up, by the caller's thread

    def publish_snapshot(self, exported: str, seen: str, function: str) -> None:
        with self._cond:
            self._snapshot = (exported, seen, function)
            self._cond.notify_all()

    def start(self, queries: Sequence[sql.Composed]) -> None:
        with self._cond:
            self.queries = queries
            self._ranges = [_Range() for _ in queries]
            self._ranges[0].direct = True
            self._started = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """No more ranges to take (all taken, or none will be): helpers still joining
        stop there."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = exc
            self._cancelled = True
            self._cond.notify_all()

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def left_out(self, who: int, why: str) -> None:
        """A helper that took no range: the hash goes on without it."""
        with self._cond:
            self.note = self.note or why

    def close(self) -> None:
        """Close the spools left after a failure (all threads joined)."""
        for r in self._ranges:
            if r.spool is not None:
                r.spool.close()
                r.spool = None

    # -- by the receiving threads

    def wait_snapshot(self) -> tuple[str, str, str] | None:
        with self._cond:
            while self._snapshot is None and not self._cancelled:
                self._cond.wait()
            return None if self._cancelled else self._snapshot

    def claim(self, who: int) -> int | None:
        with self._cond:
            while not self._cancelled and (
                    not self._started or self._next > self._head + _MAX_AHEAD):
                self._cond.wait()  # not yet planned, or far enough ahead of the hasher
            if self._failure is not None:
                raise _Stopped
            if self._cancelled or self._next >= len(self._ranges):
                return None
            i = self._next
            self._next += 1
            self._taken[who] = self._taken.get(who, 0) + 1
            return i

    def put(self, i: int, buf: bytearray) -> None:
        if not buf:
            return
        r = self._ranges[i]
        with self._cond:
            while r.direct and len(r.pending) >= _QUEUE_DEPTH and self._failure is None:
                self._cond.wait()
            if self._failure is not None:
                raise _Stopped
            if r.direct:
                r.pending.append(buf)
                self._cond.notify_all()
                return
            r.writing = True
        try:
            if r.spool is None:
                r.spool = tempfile.TemporaryFile(prefix="opsgate-hash-")  # noqa: SIM115 (closed by the hasher)
            fd = r.spool.fileno()
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view):]
        finally:
            with self._cond:
                r.writing = False
                r.spooled += len(buf)
                self.spooled += len(buf)
                self._cond.notify_all()

    def done(self, i: int, rows: int) -> None:
        with self._cond:
            self._ranges[i].done = True
            self._rows += rows
            self._cond.notify_all()

    # -- by the hashing thread

    def hash_in_order(self) -> None:
        try:
            for i, r in enumerate(self._ranges):
                with self._cond:
                    self._head = i
                    self._cond.notify_all()
                self._hash_spool(r)
                self._hash_direct(r)
        except _Stopped:
            pass
        except BaseException as exc:
            self.fail(exc)

    def _update(self, data: Any) -> None:
        self._digest.update(data)  # releases the GIL for large buffers
        self._bytes += len(data)

    def _hash_spool(self, r: _Range) -> None:
        while True:
            with self._cond:
                while r.read == r.spooled and r.writing and self._failure is None:
                    self._cond.wait()
                if self._failure is not None:
                    raise _Stopped
                upto = r.spooled
                if r.read == upto:  # all read, no write under way: its turn, direct
                    r.direct = True
                    spool, r.spool = r.spool, None
                    break
                fd = r.spool.fileno() if r.spool is not None else -1
            while r.read < upto:
                data = os.pread(fd, min(HASH_BUFFER, upto - r.read), r.read)
                if not data:
                    raise CanonError("the hash's spool file ended early")
                self._update(data)
                r.read += len(data)
        if spool is not None:
            spool.close()

    def _hash_direct(self, r: _Range) -> None:
        while True:
            with self._cond:
                while not r.pending and not r.done and self._failure is None:
                    self._cond.wait()
                if self._failure is not None:
                    raise _Stopped
                if not r.pending:
                    return
                buf = r.pending.popleft()
                self._cond.notify_all()
            self._update(buf)

    # -- results

    def result(self) -> tuple[str, int, int]:
        return self._digest.hexdigest(), self._rows, self._bytes

    def by_connection(self, wanted: int) -> tuple[int, ...]:
        return tuple(self._taken.get(n, 0) for n in range(wanted))


def psql_script(query: sql.Composable, settings: Iterable[tuple[str, str]],
                snapshot: str | None = None) -> list[str]:
    """psql's ``-c`` argument for one read-only transaction that may join ``snapshot``
    and pins ``settings`` with SET LOCAL: nothing outlives it. client_encoding goes
    through PGCLIENTENCODING instead (see `psql_env`).

    One ``-c`` holding every statement, BEGIN to COMMIT: psql sends it as one simple
    query, so the whole transaction, COPY included, waits out one network round trip
    after the connection's own. One ``-c`` per statement under ``--single-transaction``
    waited out one each, about ten per table across a continent. A failing statement
    ends the string there, the server rolls the transaction back and psql exits 1.
    """
    statements: list[sql.Composable] = [
        sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")]
    if snapshot is not None:
        statements.append(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    statements += [sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(k), sql.Literal(v))
                   for k, v in settings if k != "client_encoding"]
    statements += [query, sql.SQL("COMMIT")]
    return ["-c", "; ".join(statement.as_string() for statement in statements)]


def psql_env(base: Mapping[str, str], settings: Iterable[tuple[str, str]]) -> dict[str, str]:
    env = dict(base)
    encoding = dict(settings).get("client_encoding")
    if encoding:
        env["PGCLIENTENCODING"] = encoding
    return env


def table_hash_via_psql(psql: Path, dbname_arg: str, env: Mapping[str, str], table: str,
                        columns: tuple[str, ...], order_by: tuple[str, ...], *,
                        snapshot: str | None = None, schema: str = "public",
                        redact: Callable[[str], str] = str) -> TableHash:
    """canon-v1 hash of ``table`` with psql receiving the COPY stream.

    ``dbname_arg`` is psql's ``--dbname`` value without a password (it is on a command
    line); the password travels in ``env`` (PGPASSWORD). With ``snapshot`` the
    transaction joins an exported snapshot (the drill's), so the hash describes exactly
    what pg_dump read. Shape (``columns``, ``order_by``) comes from the caller, read
    once per table in the same snapshot.
    """
    query = table_copy_query(table, columns, order_by, schema)
    args = [str(psql), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1",
            f"--dbname={dbname_arg}",
            *psql_script(query, TABLE_SESSION_SETTINGS, snapshot)]
    try:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL,
                                env=psql_env(env, TABLE_SESSION_SETTINGS))
    except OSError as exc:
        raise CanonError(f"psql ({psql}) could not be started: {exc.strerror}") from None
    out, errors = piped(proc.stdout), piped(proc.stderr)
    err = bytearray()
    drain = threading.Thread(target=lambda: err.extend(errors.read()),
                             name="opsgate-psql-stderr", daemon=True)
    drain.start()
    try:
        with StreamDigest() as digest:
            fd = out.fileno()
            while chunk := os.read(fd, HASH_BUFFER):
                digest.feed(chunk)
            sha256 = digest.hexdigest()
    finally:
        out.close()
        proc.wait()
        drain.join()
        errors.close()
    if proc.returncode != 0:
        raise CanonError(f"psql COPY of {schema}.{table} failed (exit {proc.returncode}): "
                         f"{redact(_psql_verdict(err.decode(errors='replace')))}")
    return TableHash(table, sha256, digest.rows, digest.bytes, columns, order_by)


def _psql_verdict(stderr: str) -> str:
    """The line that says what went wrong: psql follows an ERROR with the statement and a
    caret, so the last line is rarely the one to show."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in lines:
        if any(mark in line for mark in ("ERROR:", "FATAL:", "error:")):
            return line[:300]
    return lines[-1][:300] if lines else "no message"
