"""Locating the rows that differ between two copies of a table, on two servers.

When canon-v1 says two tables differ, an auditor wants the keys. Both servers hash their
rows into the same buckets (by a hash of the primary key) and return one digest per
bucket; only buckets whose digests differ are read row by row. The heavy work is two
server-side scans running at the same time; the client holds one bucket's keys at most.
Rows are compared as the text of their columns in name order, under canon-v1's pinned
session settings, so two servers configured differently still agree on equal rows.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from opsgate.target import db
from opsgate.verify.canon import pin_session, table_shape

BUCKETS = 4096


@dataclass
class RowDiff:
    table: str
    key_columns: tuple[str, ...]
    only_in_a: list[tuple[Any, ...]] = field(default_factory=list)
    only_in_b: list[tuple[Any, ...]] = field(default_factory=list)
    changed: list[tuple[Any, ...]] = field(default_factory=list)
    buckets_compared: int = 0
    buckets_differing: int = 0

    @property
    def total(self) -> int:
        return len(self.only_in_a) + len(self.only_in_b) + len(self.changed)

    def describe(self, limit: int = 10) -> str:
        parts = []
        for label, keys in (("changed", self.changed), ("missing from the copy", self.only_in_a),
                            ("only in the copy", self.only_in_b)):
            if keys:
                shown = ", ".join(str(k[0] if len(k) == 1 else k) for k in keys[:limit])
                parts.append(f"{len(keys)} {label} ({', '.join(self.key_columns)}: {shown}"
                             + (" …" if len(keys) > limit else "") + ")")
        return "; ".join(parts) or "no differing rows"


def _row_text(columns: Sequence[str]) -> sql.Composable:
    return sql.SQL("md5(ROW({})::text)").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns))


def _bucket_expr(key: Sequence[str], buckets: int) -> sql.Composable:
    keytext = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in key))
    # md5, not hashtext: the bucket of a key must be the same on any two servers.
    return sql.SQL("mod(('x' || substr(md5({}), 1, 7))::bit(28)::int, {})").format(
        keytext, sql.Literal(buckets))


def _bucket_digests(conn: psycopg.Connection[Any], table: str, columns: Sequence[str],
                    key: Sequence[str], buckets: int) -> dict[int, tuple[int, str]]:
    # An order-free digest per bucket (sum of 60 bits of each row's md5, as numeric so it
    # cannot overflow): no per-bucket sort, one sequential scan per server.
    query = sql.SQL(
        "SELECT b, count(*), sum(('x' || substr(h, 1, 15))::bit(60)::bigint)::text FROM ("
        "SELECT {bucket} AS b, {row} AS h FROM {tbl}) s GROUP BY b"
    ).format(bucket=_bucket_expr(key, buckets), row=_row_text(columns),
             tbl=sql.Identifier(table))
    return {int(b): (int(n), str(d)) for b, n, d in conn.execute(query)}


def _bucket_rows(conn: psycopg.Connection[Any], table: str, columns: Sequence[str],
                 key: Sequence[str], buckets: int, wanted: list[int]
                 ) -> dict[tuple[Any, ...], str]:
    query = sql.SQL("SELECT {key}, {row} FROM {tbl} WHERE {bucket} = ANY(%s)").format(
        key=sql.SQL(", ").join(sql.Identifier(c) for c in key), row=_row_text(columns),
        tbl=sql.Identifier(table), bucket=_bucket_expr(key, buckets))
    return {tuple(r[:-1]): r[-1] for r in conn.execute(query, (wanted,))}


def locate(conn_a: psycopg.Connection[Any], conn_b: psycopg.Connection[Any], table: str,
           buckets: int = BUCKETS) -> RowDiff:
    """Keys of rows that differ between ``table`` on ``conn_a`` and on ``conn_b``, each
    read in a read-only transaction under canon-v1's pinned settings (the callers', or
    one of our own)."""
    with db.reading(conn_a), db.reading(conn_b):
        pin_session(conn_a)
        pin_session(conn_b)
        return _locate(conn_a, conn_b, table, buckets)


def _locate(conn_a: psycopg.Connection[Any], conn_b: psycopg.Connection[Any], table: str,
            buckets: int) -> RowDiff:
    columns, key = table_shape(conn_a, table)
    out = RowDiff(table, tuple(key))
    results: dict[str, dict[int, tuple[int, str]]] = {}
    errors: list[BaseException] = []

    def scan(label: str, conn: psycopg.Connection[Any]) -> None:
        try:
            results[label] = _bucket_digests(conn, table, columns, key, buckets)
        except BaseException as exc:  # re-raised on the calling thread
            errors.append(exc)

    other = threading.Thread(target=scan, args=("b", conn_b))
    other.start()
    scan("a", conn_a)
    other.join()
    if errors:
        raise errors[0]
    a, b = results["a"], results["b"]
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    out.buckets_compared = len(set(a) | set(b))
    out.buckets_differing = len(differing)
    for start in range(0, len(differing), 64):
        chunk = differing[start:start + 64]
        rows_a = _bucket_rows(conn_a, table, columns, key, buckets, chunk)
        rows_b = _bucket_rows(conn_b, table, columns, key, buckets, chunk)
        for k in sorted(set(rows_a) | set(rows_b), key=str):
            if k not in rows_b:
                out.only_in_a.append(k)
            elif k not in rows_a:
                out.only_in_b.append(k)
            elif rows_a[k] != rows_b[k]:
                out.changed.append(k)
    return out
