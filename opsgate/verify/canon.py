"""canon-v1: the one canonical hashing of opsgate (docs/canonical-hashing.md).

Two encodings, both frozen: a change to either is a new version (canon-v2), never an
edit here, because ledger rows and drill records store these hashes for years.

* Documents: normalise the sets (nodes by id, edges by (source, target, relation),
  ``domains`` and ``tags`` sorted), fold numbers onto the IEEE-754 doubles that JSON
  means, serialise with RFC 8785 (JCS, via the ``rfc8785`` library), SHA-256, hex.
* Tables: ``COPY (SELECT <columns by name> FROM t ORDER BY <primary key>) TO STDOUT``
  in text format under pinned session settings, streamed straight into SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785
from psycopg import Connection, sql

from opsgate.errors import CanonError
from opsgate.target import db
from opsgate.target.db import OUTPUT_SETTINGS

VERSION = "canon-v1"

#: 2**53 - 1: the largest integer a JSON number (an IEEE double) holds exactly.
_SAFE_INT = 2**53 - 1

#: The session settings canon-v1 table encodings are read under. They are opsgate's
#: output settings (`opsgate.target.db.OUTPUT_SETTINGS`), pinned inside every transaction;
#: changing them changes the bytes, and so would be a new canon version.
TABLE_SESSION_SETTINGS: tuple[tuple[str, str], ...] = OUTPUT_SETTINGS

_SORTED_STRING_SETS = frozenset({"domains", "tags"})


# -- documents ------------------------------------------------------------------


def _edge_key(edge: Any) -> tuple[str, str, str]:
    if not isinstance(edge, Mapping):
        raise CanonError(f"an edge must be an object, got {type(edge).__name__}")
    return (str(edge.get("source")), str(edge.get("target")), str(edge.get("relation")))


def _node_key(node: Any) -> str:
    if not isinstance(node, Mapping) or "id" not in node:
        raise CanonError("a node must be an object with an 'id'")
    return str(node["id"])


def normalize(value: Any) -> Any:
    """The canon-v1 normal form of a JSON value (a new object; the input is not touched).

    Set semantics apply by key name at any depth: ``nodes`` (by ``id``), ``edges`` (by
    source, target, relation), and ``domains``/``tags`` when they are lists of strings.
    Integers outside the exact-double range become doubles, as JSON numbers are.
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonError(f"object keys must be strings, got {type(k).__name__}")
            nv = normalize(v)
            if isinstance(nv, list):
                if k == "nodes" and all(isinstance(n, Mapping) for n in nv):
                    nv = sorted(nv, key=_node_key)
                elif k == "edges" and all(isinstance(e, Mapping) for e in nv):
                    nv = sorted(nv, key=_edge_key)
                elif k in _SORTED_STRING_SETS and all(isinstance(s, str) for s in nv):
                    nv = sorted(nv)
            out[k] = nv
        return out
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        try:
            return float(value)
        except OverflowError:
            raise CanonError(f"integer {value} is outside the range of a JSON number") from None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise CanonError("NaN and infinity are not JSON numbers")
        if value.is_integer() and abs(value) <= _SAFE_INT:
            return int(value)
        return value
    if isinstance(value, datetime):
        return canonical_timestamp(value)
    raise CanonError(f"{type(value).__name__} is not a JSON value")


def canonical_json(document: Any) -> bytes:
    """RFC 8785 bytes of the canon-v1 normal form of ``document``."""
    try:
        return bytes(rfc8785.dumps(normalize(document)))
    except rfc8785.CanonicalizationError as exc:
        raise CanonError(f"cannot canonicalise: {exc}") from None


def document_hash(document: Any) -> str:
    """canon-v1 hash of a JSON document: SHA-256 of its canonical JSON, lowercase hex."""
    return hashlib.sha256(canonical_json(document)).hexdigest()


def canonical_timestamp(value: datetime | str) -> str:
    """A timestamp as canon-v1 writes it inside documents: UTC, microseconds, ``Z``.

    Strings are parsed (ISO 8601, ``Z`` accepted); naive values are taken as UTC.
    """
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CanonError(f"not an ISO 8601 timestamp: {text[:40]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def admin_state_document(
    content_state: Mapping[str, Any], history: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The admin state as one canon-v1 document, whatever store it came from.

    ``content_state`` maps key -> payload (``admin_content_state`` or blob
    ``content-state.json``); ``history`` holds entries with id, key, payload, action,
    actor and created_at (either spelling ``createdAt``), ordered here by id.
    """
    entries = []
    for h in history:
        created = h.get("created_at", h.get("createdAt"))
        entries.append(
            {
                "id": h.get("id"),
                "key": h.get("key"),
                "payload": h.get("payload"),
                "action": h.get("action"),
                "actor": h.get("actor"),
                "createdAt": canonical_timestamp(created) if created is not None else None,
            }
        )
    entries.sort(key=lambda e: (str(type(e["id"])), e["id"]))
    return {"contentState": dict(content_state), "history": entries}


def admin_state_hash(
    content_state: Mapping[str, Any], history: Iterable[Mapping[str, Any]]
) -> str:
    return document_hash(admin_state_document(content_state, history))


# -- tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class TableHash:
    """canon-v1 hash of one table, with what it covered."""

    table: str
    sha256: str
    rows: int
    bytes: int
    columns: tuple[str, ...]
    order_by: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "sha256": self.sha256,
            "rows": self.rows,
            "bytes": self.bytes,
            "columns": list(self.columns),
            "order_by": list(self.order_by),
            "version": VERSION,
        }


def pin_session(conn: Connection[Any]) -> None:
    """Apply `TABLE_SESSION_SETTINGS` to ``conn``'s current transaction (never to its
    session: on a pooled connection a session setting outlives us and reaches the app)."""
    db.pin(conn, TABLE_SESSION_SETTINGS)


def table_shape(conn: Connection[Any], table: str, schema: str = "public") -> tuple[
    tuple[str, ...], tuple[str, ...]
]:
    """(columns sorted by name, primary-key columns in key order) of ``table``.

    A table without a primary key is ordered by all its columns, by name: still a total
    order up to duplicate rows, which hash the same whichever comes first.
    """
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT a.attname FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
            """,
            (schema, table),
        )
        columns = tuple(sorted(r[0] for r in cur.fetchall()))
        if not columns:
            raise CanonError(f"table {schema}.{table} does not exist or has no columns")
        cur.execute(
            """
            SELECT a.attname FROM pg_index i
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
            WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary
            ORDER BY k.ord
            """,
            (schema, table),
        )
        pk = tuple(r[0] for r in cur.fetchall())
    return columns, pk or columns


def table_copy_query(
    table: str, columns: Iterable[str], order_by: Iterable[str], schema: str = "public"
) -> sql.Composed:
    """The exact COPY statement canon-v1 streams (shown in evidence for auditors)."""
    return sql.SQL("COPY (SELECT {cols} FROM {tbl} ORDER BY {order}) TO STDOUT").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        tbl=sql.Identifier(schema, table),
        order=sql.SQL(", ").join(sql.Identifier(c) for c in order_by),
    )


def iter_table_copy(
    conn: Connection[Any], table: str, schema: str = "public"
) -> Iterator[bytes]:
    """Yield the canon-v1 COPY stream of ``table`` in chunks, under pinned settings."""
    with db.reading(conn):
        pin_session(conn)
        columns, order_by = table_shape(conn, table, schema)
        with conn.cursor() as cur, \
                cur.copy(table_copy_query(table, columns, order_by, schema)) as cp:
            for chunk in cp:
                yield bytes(chunk)


def table_hash(conn: Connection[Any], table: str, schema: str = "public") -> TableHash:
    """canon-v1 hash of ``table``: constant client memory whatever the table's size.
    How the bytes are received (buffers, a hashing thread) is `opsgate.verify.tablehash`."""
    from opsgate.verify import tablehash

    return tablehash.table_hash(conn, table, schema)


def combined_hash(hashes: Mapping[str, str | None]) -> str:
    """One hash over many tables: canon-v1 document hash of {table: sha256} (null for a
    table that is missing on that side)."""
    return document_hash(dict(hashes))
