"""Locating the rows that differ between two copies of a table, on two servers.

When canon-v1 says two tables differ, an auditor wants the keys. Both servers split the
rows into the same buckets and return one order-free digest per bucket (a count and a
sum of row hashes), scanning at the same time; only buckets whose digests differ are
read row by row, and only a bounded number of keys is kept: examples, and counts for
the rest. Client memory is constant whatever the table's size or the number of
differences.

Buckets are key ranges when the primary key is one integer column: the bucket is
arithmetic on the key, and differing buckets are read back through the key's index as
ranges (nearby ones as one range, `SPAN_BUCKETS`). Any other key falls back to buckets
by md5 of the key's text (the same on any two servers), read back by a scan.

Rows are compared as the text of their columns in name order, under canon-v1's pinned
session settings, so two servers configured differently still agree on equal rows. The
bucket digest sums a 64-bit hash of that text (``hashtextextended``, much cheaper than
md5); within a differing bucket rows are compared by md5 of the same text, so if the
two servers ever hashed text differently every bucket would differ and the answer would
be slower, never wrong.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from opsgate.clients import db
from opsgate.verify.canon import pin_session, table_shape

BUCKETS = 4096

#: Keys kept per kind of difference; the rest are counted only.
EXAMPLES = 20

#: Differing integer-key buckets read back as one key range when they lie within this
#: many buckets of each other (`_Ranges.spans`): at most 4096 / 128 = 32 range queries
#: whatever the number of differences, each reading at most 128 buckets' rows.
SPAN_BUCKETS = 128

#: How long the other server's scan is cancelled for (again and again, `_cancel_until`)
#: when one side has failed or stopped; it ends as soon as that server acts on a cancel
#: that arrives while the statement runs.
_CANCEL_FOR_S = 5.0

#: Rows fetched per round trip when a differing bucket is read back.
_FETCH = 5000

_INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})


@dataclass
class RowDiff:
    """Differing keys of one table: up to `EXAMPLES` of each kind, counts of all."""

    table: str
    key_columns: tuple[str, ...]
    only_in_a: list[tuple[Any, ...]] = field(default_factory=list)
    only_in_b: list[tuple[Any, ...]] = field(default_factory=list)
    changed: list[tuple[Any, ...]] = field(default_factory=list)
    count_only_in_a: int = 0
    count_only_in_b: int = 0
    count_changed: int = 0
    buckets_compared: int = 0
    buckets_differing: int = 0
    bucketing: str = ""
    examples: int = EXAMPLES

    @property
    def total(self) -> int:
        return self.count_only_in_a + self.count_only_in_b + self.count_changed

    def _add(self, kind: str, key: tuple[Any, ...]) -> None:
        count = getattr(self, f"count_{kind}") + 1
        setattr(self, f"count_{kind}", count)
        if count <= self.examples:
            kept = getattr(self, kind)
            kept.append(key)
            kept.sort(key=_display_order)

    def describe(self, limit: int = 10) -> str:
        parts = []
        for label, keys, count in (
                ("changed", self.changed, self.count_changed),
                ("missing from the copy", self.only_in_a, self.count_only_in_a),
                ("only in the copy", self.only_in_b, self.count_only_in_b)):
            if count:
                shown = ", ".join(str(k[0] if len(k) == 1 else k) for k in keys[:limit])
                parts.append(f"{count} {label} ({', '.join(self.key_columns)}: {shown}"
                             + (" …" if count > min(limit, len(keys)) else "") + ")")
        return "; ".join(parts) or "no differing rows"


def _display_order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Examples are shown in key order where Python can order the key, else as text."""
    return tuple((0, x, "") if isinstance(x, int | float) else (1, 0, str(x)) for x in key)


def _cols(columns: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def _row_md5(columns: Sequence[str]) -> sql.Composable:
    return sql.SQL("md5(ROW({})::text)").format(_cols(columns))


def _row_digest(columns: Sequence[str], cheap: bool) -> sql.Composable:
    """One row's contribution to its bucket's sum (as numeric in the sum: no overflow)."""
    if cheap:
        return sql.SQL("hashtextextended(ROW({})::text, 0)").format(_cols(columns))
    return sql.SQL("('x' || substr({}, 1, 15))::bit(60)::bigint").format(_row_md5(columns))


def _md5_bucket(key: Sequence[str], buckets: int) -> sql.Composable:
    keytext = sql.SQL("ROW({})::text").format(_cols(key))
    # md5, not hashtext: the bucket of a key must be the same on any two servers.
    return sql.SQL("mod(('x' || substr(md5({}), 1, 7))::bit(28)::int, {})").format(
        keytext, sql.Literal(buckets))


@dataclass(frozen=True)
class _Ranges:
    """Integer key ``k`` is in bucket ``(k - low) / width`` (floor division)."""

    key: str
    low: int
    width: int
    wide: bool  # key - low may leave bigint: compute in numeric

    def bucket(self) -> sql.Composable:
        if self.wide:
            return sql.SQL("floor(({}::numeric - {}) / {})::bigint").format(
                sql.Identifier(self.key), sql.Literal(self.low), sql.Literal(self.width))
        return sql.SQL("({} - {}::bigint) / {}::bigint").format(
            sql.Identifier(self.key), sql.Literal(self.low), sql.Literal(self.width))

    def spans(self, differing: list[int]
              ) -> Iterator[tuple[sql.Composable, tuple[int, int]]]:
        """One key range for each run of the (sorted) ``differing`` buckets that fits in
        `SPAN_BUCKETS` buckets: a query per bucket cost a table with differences
        everywhere (every bucket differing) 4,096 queries, each two server-side
        cursors; across the network to Neon, minutes of round trips. Equal buckets
        inside a span are read and merged as equal."""
        i = 0
        while i < len(differing):
            first, j = differing[i], i
            while j + 1 < len(differing) and differing[j + 1] - first < SPAN_BUCKETS:
                j += 1
            start, end = self.low + first * self.width, self.low + (differing[j] + 1) * self.width
            yield (sql.SQL("{k} >= %s AND {k} < %s").format(k=sql.Identifier(self.key)),
                   (start, end))
            i = j + 1


def _integer_key_type(conn: psycopg.Connection[Any], table: str, key: Sequence[str]
                      ) -> bool:
    if len(key) != 1:
        return False
    row = conn.execute(
        "SELECT format_type(a.atttypid, NULL) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attname = %s",
        (sql.Identifier("public", table).as_string(conn), key[0])).fetchone()
    return row is not None and row[0] in _INTEGER_TYPES


def _key_span(conn: psycopg.Connection[Any], table: str, key: str) -> tuple[int, int] | None:
    row = conn.execute(sql.SQL("SELECT min({k}), max({k}) FROM {t}").format(
        k=sql.Identifier(key), t=sql.Identifier("public", table))).fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))


def locate(conn_a: psycopg.Connection[Any], conn_b: psycopg.Connection[Any], table: str,
           buckets: int = BUCKETS, examples: int = EXAMPLES) -> RowDiff:
    """Keys of rows that differ between ``table`` on ``conn_a`` and on ``conn_b``, each
    read in a read-only transaction under canon-v1's pinned settings (the callers', or
    one of our own)."""
    with db.reading(conn_a), db.reading(conn_b):
        pin_session(conn_a)
        pin_session(conn_b)
        return _locate(conn_a, conn_b, table, buckets, examples)


def _both(fn: Callable[[psycopg.Connection[Any]], Any], conn_a: psycopg.Connection[Any],
          conn_b: psycopg.Connection[Any]) -> tuple[Any, Any]:
    """``fn`` on both servers at the same time (each scan is the servers' work).

    When one side ends in an error, or this thread in a stop (psycopg cancels its own
    query on a KeyboardInterrupt, and a stop may also come while this thread waits for
    the other side), the other side's query is cancelled rather than waited out: a scan
    of a large table would otherwise hold a failed or stopped run for its whole length,
    past CI's SIGKILL. The run then ends once that server has acted on the cancel; one
    that does not answer at all still holds it (its transaction is rolled back on the
    same connection). A stop outranks the errors it caused.
    """
    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    a_done = threading.Event()

    def run(label: str, conn: psycopg.Connection[Any]) -> None:
        try:
            results[label] = fn(conn)
        except BaseException as exc:  # re-raised on the calling thread
            errors.append(exc)
            if label == "b":  # the other side is not waited out either
                _cancel_until(conn_a, a_done.is_set)

    other = threading.Thread(target=run, args=("b", conn_b), name="opsgate-rowdiff",
                             daemon=True)
    other.start()
    try:
        run("a", conn_a)
    finally:
        a_done.set()
    try:
        if errors:
            raise _first(errors)
        other.join()  # a stop while waiting here cancels the other side too
    except BaseException:
        _cancel_until(conn_b, lambda: not other.is_alive())
        raise
    if errors:
        raise _first(errors)
    return results["a"], results["b"]


def _first(errors: list[BaseException]) -> BaseException:
    """The error to report: a stop if there was one (the other side's error is then its
    consequence, a cancelled query), else the first."""
    return next((e for e in errors if isinstance(e, KeyboardInterrupt)), errors[0])


def _cancel_until(conn: psycopg.Connection[Any], ended: Callable[[], bool]) -> None:
    """Cancel ``conn``'s query until ``ended()`` (the side running queries on it has
    finished), for at most `_CANCEL_FOR_S`: a cancel that lands before a statement
    starts, or between two, cancels nothing, so it is sent again."""
    deadline = time.monotonic() + _CANCEL_FOR_S
    while not ended() and (left := deadline - time.monotonic()) > 0:
        _cancel(conn, left)
        time.sleep(0.05)


def _cancel(conn: psycopg.Connection[Any], timeout: float) -> None:
    """Cancel ``conn``'s running query, if any (a cancel request on a connection of its
    own, given ``timeout`` seconds; nothing happens to an idle one)."""
    with contextlib.suppress(psycopg.Error):  # a server that is gone: its query with it
        if hasattr(conn, "cancel_safe"):  # psycopg 3.2 and later
            conn.cancel_safe(timeout=timeout)
        else:
            conn.cancel()


def _locate(conn_a: psycopg.Connection[Any], conn_b: psycopg.Connection[Any], table: str,
            buckets: int, examples: int) -> RowDiff:
    columns, key = table_shape(conn_a, table)
    out = RowDiff(table, tuple(key), examples=examples)
    tbl = sql.Identifier("public", table)
    cheap = min(conn_a.info.server_version, conn_b.info.server_version) >= 110000
    ranges: _Ranges | None = None
    if _integer_key_type(conn_a, table, key) and _integer_key_type(conn_b, table, key):
        spans = [s for s in _both(lambda c: _key_span(c, table, key[0]), conn_a, conn_b) if s]
        if not spans:
            out.bucketing = "key ranges"
            return out  # both tables empty
        low, high = min(s[0] for s in spans), max(s[1] for s in spans)
        width = max(1, -(-(high - low + 1) // buckets))
        ranges = _Ranges(key[0], low, width, wide=high - low >= 2**62)
    bucket = ranges.bucket() if ranges else _md5_bucket(key, buckets)
    out.bucketing = (f"{buckets} ranges of {key[0]}" if ranges
                     else f"{buckets} buckets by md5 of the key")
    digests = sql.SQL(
        "SELECT {bucket} AS b, count(*), sum({digest})::text FROM {tbl} GROUP BY 1").format(
        bucket=bucket, digest=_row_digest(columns, cheap), tbl=tbl)

    def scan(conn: psycopg.Connection[Any]) -> dict[int, tuple[int, str]]:
        return {int(b): (int(n), str(d)) for b, n, d in conn.execute(digests)}

    a, b = _both(scan, conn_a, conn_b)
    every = set(a) | set(b)
    differing = sorted(k for k in every if a.get(k) != b.get(k))
    out.buckets_compared = len(every)
    out.buckets_differing = len(differing)
    del a, b, every  # one entry per bucket: bounded by `buckets`, freed before reading rows
    if ranges is not None:
        for where, params in ranges.spans(differing):
            _compare(conn_a, conn_b, columns, key, tbl, where, params, out)
    else:
        for first in range(0, len(differing), 64):
            chunk = differing[first:first + 64]
            where = sql.SQL("{} = ANY(%s)").format(bucket)
            _compare(conn_a, conn_b, columns, key, tbl, where, (chunk,), out)
    return out


def _stream(conn: psycopg.Connection[Any], query: sql.Composed, params: tuple[Any, ...]
            ) -> Generator[tuple[Any, ...], None, None]:
    """Rows of ``query`` through a server-side cursor, `_FETCH` at a time (the caller's
    transaction holds it; it closes with the generator)."""
    with conn.cursor(name="opsgate_rowdiff") as cur:
        cur.itersize = _FETCH
        cur.execute(query, params)
        yield from cur


def _compare(conn_a: psycopg.Connection[Any], conn_b: psycopg.Connection[Any],
             columns: Sequence[str], key: Sequence[str], tbl: sql.Composable,
             where: sql.Composable, params: tuple[Any, ...], out: RowDiff) -> None:
    """Merge the two sides' rows of some buckets: constant memory. Both sides sort by
    (md5 of the key's text, the key's text) in byte order, an order Python's string
    comparison reproduces for any key type, collation or NULL (a table without a
    primary key is keyed by all its columns)."""
    keytext = sql.SQL("ROW({})::text").format(_cols(key))
    query = sql.SQL(
        'SELECT md5({kt}) COLLATE "C", {kt} COLLATE "C", {row}, {key} FROM {tbl} '
        "WHERE {where} ORDER BY 1, 2").format(
        kt=keytext, row=_row_md5(columns), key=_cols(key), tbl=tbl, where=where)
    rows_a, rows_b = _stream(conn_a, query, params), _stream(conn_b, query, params)
    ra, rb = next(rows_a, None), next(rows_b, None)
    while ra is not None or rb is not None:
        if rb is None or (ra is not None and (ra[0], ra[1]) < (rb[0], rb[1])):
            out._add("only_in_a", tuple(ra[3:]))  # type: ignore[index]
            ra = next(rows_a, None)
        elif ra is None or (ra[0], ra[1]) != (rb[0], rb[1]):
            out._add("only_in_b", tuple(rb[3:]))
            rb = next(rows_b, None)
        else:
            if ra[2] != rb[2]:
                out._add("changed", tuple(ra[3:]))
            ra, rb = next(rows_a, None), next(rows_b, None)
    rows_a.close()
    rows_b.close()
