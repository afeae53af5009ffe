"""canon-v1: the one canonical hashing of opsgate (docs/canonical-hashing.md).

Two encodings, both frozen: a change to either is a new version (canon-v2), never an
edit here, because ledger rows and drill records store these hashes for years.

* Documents: normalise the sets (nodes by id, edges by (source, target, relation),
  ``domains`` and ``tags`` sorted), fold numbers onto the IEEE-754 doubles that JSON
  means, serialise with RFC 8785 (JCS), SHA-256, hex. orjson (compiled) writes the
  bytes, with the two places where it differs from RFC 8785 handled here (see
  `canonical_json`); the pure-Python ``rfc8785`` package is the self-tests' oracle.
* Tables: ``COPY (SELECT <columns by name> FROM t ORDER BY <primary key>) TO STDOUT``
  in text format under pinned session settings, streamed straight into SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from opsgate.clients.session_settings import OUTPUT_SETTINGS
from opsgate.errors import CanonError

if TYPE_CHECKING:  # the driver is imported where tables are read: the payload side of
    # drift canonicalises documents in a process that has no use for it (memory)
    from psycopg import Connection, sql

VERSION = "canon-v1"

#: 2**53 - 1: the largest integer a JSON number (an IEEE double) holds exactly.
_SAFE_INT = 2**53 - 1

#: The session settings canon-v1 table encodings are read under. They are opsgate's
#: output settings (`opsgate.clients.db.OUTPUT_SETTINGS`), pinned inside every transaction;
#: changing them changes the bytes, and so would be a new canon version.
TABLE_SESSION_SETTINGS: tuple[tuple[str, str], ...] = OUTPUT_SETTINGS

#: Bytes gathered before each SHA-256 update: one call per MiB instead of one per member
#: or row (the streamed document hashes here; table hashes in `opsgate.verify.tablehash`).
HASH_BUFFER = 1 << 20

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
        try:
            return orjson.dumps(_prepare(document, False), default=_es6_fragment,
                                option=orjson.OPT_SORT_KEYS)
        except _NeedsUtf16Order:
            return orjson.dumps(_prepare(document, True), default=_es6_fragment)
    except TypeError as exc:  # orjson.JSONEncodeError is one; non-string keys too
        raise CanonError(f"cannot canonicalise: {exc}") from None


# -- RFC 8785 through orjson ------------------------------------------------------
#
# orjson writes RFC 8785's bytes for strings (it escapes exactly '"', '\\' and the
# control characters, as \b \t \n \f \r or lowercase \u00xx, and nothing else; it
# refuses lone surrogates, as RFC 8785 does), for integers, and for non-integral doubles
# in [1e-4, 1e16), which both print as the shortest round-tripping decimal. It differs
# in two places, which `_prepare` takes over while it normalises, in one walk:
#
# * key order: RFC 8785 sorts by UTF-16 code units, orjson's OPT_SORT_KEYS by code
#   points; they disagree only where an astral character meets one in U+E000-U+FFFF.
#   orjson sorts every object, unless some key holds a character at or above U+E000:
#   then the document is prepared again with each object rebuilt in UTF-16 order, and
#   orjson keeps that (insertion) order.
# * other doubles: ECMAScript's Number.prototype.toString writes 1e+21, 0.000001 and
#   100000000000000000000 where orjson writes 1e21, 1e-6 and 1e20. Those doubles are
#   marked (`_ES6Double`) and written by `es6_number` as orjson Fragments.
#
# tests/unit/test_canon_vectors.py proves the bytes equal to the `rfc8785` package's
# (hypothesis, over the whole double range, astral keys, big integers) and to RFC
# 8785's published vectors. No maintained compiled JCS exists on PyPI; this is the
# little that orjson does not do.

#: A key holding a character at or above this code point may sort differently by UTF-16
#: code units than by code points.
_SURROGATE_SENSITIVE = "\ue000"


class _NeedsUtf16Order(Exception):
    """Some object's keys must be put in UTF-16 order by hand (see `canonical_json`)."""


def _utf16_sensitive(keys: str) -> bool:
    """Whether keys (joined) hold a character whose UTF-16 order differs from its code
    point order against another (isascii is O(1) in CPython: the common case is free)."""
    return not keys.isascii() and max(keys) >= _SURROGATE_SENSITIVE
_SET_KEYS = frozenset({"nodes", "edges", *_SORTED_STRING_SETS})
_STR_ONLY = frozenset({str})
_INF = float("inf")


class _ES6Double(float):
    """A double orjson does not write as RFC 8785 does (a float, so sort keys and
    comparisons see the same value)."""

    __slots__ = ()


def _es6_fragment(value: Any) -> orjson.Fragment:
    if type(value) is _ES6Double:
        return orjson.Fragment(es6_number(value).encode("ascii"))
    raise TypeError(f"{type(value).__name__} is not a JSON value")  # pragma: no cover


def es6_number(value: float) -> str:
    """A finite double as ECMAScript's Number.prototype.toString writes it (RFC 8785
    section 3.2.2.3): the shortest round-tripping digits (Python's repr finds them),
    placed per ECMA-262 7.1.12.1."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    if frac == "0":
        frac = ""
    digits = (whole + frac).lstrip("0")
    stripped = digits.rstrip("0")
    # value = int(stripped) * 10**(n - k), with k digits.
    k = len(stripped)
    n = k + int(exp or 0) - len(frac) + (len(digits) - k)
    if k <= n <= 21:
        text = stripped + "0" * (n - k)
    elif 0 < n <= 21:
        text = stripped[:n] + "." + stripped[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + stripped
    else:
        e = n - 1
        text = (stripped[0] + ("." + stripped[1:] if k > 1 else "")
                + ("e+" if e > 0 else "e-") + str(abs(e)))
    return sign + text


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _prepare(value: Any, ordered: bool) -> Any:
    """`normalize`'s normal form, ready for orjson: the doubles orjson would write
    differently marked, sets sorted; objects rebuilt in RFC 8785 key order if ``ordered``,
    else left to OPT_SORT_KEYS (`_NeedsUtf16Order` raised if it would get one wrong).
    One walk, type checks by identity first (the common case), the general ones after."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is dict:
        return _prepare_object(value, ordered)
    if t is list:
        # Lists of strings (tags, sources) are common: one C-level look instead of a
        # call per member.
        if set(map(type, value)) <= _STR_ONLY:
            return value
        return [_prepare(v, ordered) for v in value]
    if t is int:
        return value if -_SAFE_INT <= value <= _SAFE_INT else _prepare_big_int(value)
    if t is float:
        return _prepare_float(value)
    if isinstance(value, Mapping):
        return _prepare_object(value, ordered)
    if isinstance(value, list | tuple):
        return [_prepare(v, ordered) for v in value]
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value) if -_SAFE_INT <= value <= _SAFE_INT else _prepare_big_int(value)
    if isinstance(value, float):
        return _prepare_float(float(value))
    if isinstance(value, datetime):
        return canonical_timestamp(value)
    raise CanonError(f"{type(value).__name__} is not a JSON value")


def _prepare_big_int(value: int) -> Any:
    try:
        return _prepare_float(float(value))
    except OverflowError:
        raise CanonError(f"integer {value} is outside the range of a JSON number") from None


def _prepare_float(value: float) -> Any:
    if value != value or value == _INF or value == -_INF:
        raise CanonError("NaN and infinity are not JSON numbers")
    if value.is_integer():
        if abs(value) <= _SAFE_INT:
            return int(value)
        return _ES6Double(value)
    if 1e-4 <= abs(value) < 1e16:
        return value
    return _ES6Double(value)


def _prepare_object(value: Mapping[Any, Any], ordered: bool) -> dict[str, Any]:
    if ordered:
        keys: Iterable[Any] = sorted(value)
        if _utf16_sensitive("".join(keys)):
            keys = sorted(keys, key=_utf16)
    else:
        # A non-string key fails the join (TypeError: refused, as orjson would).
        if _utf16_sensitive("".join(value)):
            raise _NeedsUtf16Order
        keys = value
    out: dict[str, Any] = {}
    for k in keys:
        original = value[k]
        t = type(original)
        # The scalars that need nothing, inline (a call per value is most of the walk).
        if t is str or t is bool or original is None or (
                t is int and -_SAFE_INT <= original <= _SAFE_INT):
            out[k] = original
            continue
        v = _prepare(original, ordered)
        if k in _SET_KEYS and type(v) is list:
            v = _sorted_set(k, v, original)
        out[k] = v
    return out


def _key_text(prepared: Any, original: Any) -> str:
    """str() of a member's key field as `normalize` would have it: for scalars the
    prepared value prints the same; an object or array (never in a valid payload) is
    printed from its normal form, whose keys keep their input order."""
    if prepared is None or type(prepared) in (str, int, bool) or isinstance(prepared, float):
        return str(prepared)
    return str(normalize(original))


def _sorted_set(key: str, members: list[Any], originals: Any) -> list[Any]:
    if key == "nodes":
        if not all(type(n) is dict for n in members):
            return members
        for n in members:
            if "id" not in n:
                raise CanonError("a node must be an object with an 'id'")
        keyed = [(_key_text(n["id"], o["id"]), n) for n, o in zip(members, originals,
                                                                  strict=True)]
        keyed.sort(key=lambda p: p[0])
        return [n for _, n in keyed]
    if key == "edges":
        if not all(type(e) is dict for e in members):
            return members
        fields = ("source", "target", "relation")
        edge_keys = [tuple(_key_text(e.get(f), o.get(f)) for f in fields)
                     for e, o in zip(members, originals, strict=True)]
        order = sorted(range(len(members)), key=edge_keys.__getitem__)
        return [members[i] for i in order]
    if all(type(s) is str for s in members):
        return sorted(members)
    if all(isinstance(s, str) for s in members):
        return sorted(members)
    return members


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
    from opsgate.clients import db

    db.pin(conn, TABLE_SESSION_SETTINGS)


def table_shape(conn: Connection[Any], table: str, schema: str = "public") -> tuple[
    tuple[str, ...], tuple[str, ...]
]:
    """(columns sorted by name, primary-key columns in key order) of ``table``.

    A table without a primary key is ordered by all its columns, by name: still a total
    order up to duplicate rows, which hash the same whichever comes first.
    """
    return table_shapes(conn, [table], schema)[table]


def table_shapes(conn: Connection[Any], tables: Iterable[str], schema: str = "public"
                 ) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """`table_shape` of each of ``tables``, in one statement (one network round trip
    for all of them: the drill reads every contract table's at once)."""
    from psycopg.rows import tuple_row

    wanted = list(tables)
    # The columns, and the key's in key order.
    rows = conn.cursor(row_factory=tuple_row).execute(
        """
        SELECT c.relname::text,
          ARRAY(SELECT a.attname::text FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
          ARRAY(SELECT a.attname::text FROM pg_index i
                JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                WHERE i.indrelid = c.oid AND i.indisprimary
                ORDER BY k.ord)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = ANY(%s)
        """,
        (schema, wanted),
    ).fetchall()
    found = {name: (tuple(sorted(cols)), tuple(pk)) for name, cols, pk in rows}
    shapes = {}
    for table in wanted:
        columns, pk = found.get(table, ((), ()))
        if not columns:
            raise CanonError(f"table {schema}.{table} does not exist or has no columns")
        shapes[table] = (columns, pk or columns)
    return shapes


def table_copy_query(
    table: str, columns: Iterable[str], order_by: Iterable[str], schema: str = "public"
) -> sql.Composed:
    """The exact COPY statement canon-v1 streams (shown in evidence for auditors)."""
    from psycopg import sql

    return sql.SQL("COPY (SELECT {cols} FROM {tbl} ORDER BY {order}) TO STDOUT").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        tbl=sql.Identifier(schema, table),
        order=sql.SQL(", ").join(sql.Identifier(c) for c in order_by),
    )


def iter_table_copy(
    conn: Connection[Any], table: str, schema: str = "public"
) -> Iterator[bytes]:
    """Yield the canon-v1 COPY stream of ``table`` in chunks, under pinned settings."""
    from opsgate.clients import db

    with db.reading(conn):
        pin_session(conn)
        columns, order_by = table_shape(conn, table, schema)
        with conn.cursor() as cur, \
                cur.copy(table_copy_query(table, columns, order_by, schema)) as cp:
            for chunk in cp:
                yield bytes(chunk)


def table_hash(conn: Connection[Any], table: str, schema: str = "public") -> TableHash:
    """canon-v1 hash of ``table``: constant client memory whatever the table's size.
    How the bytes are received (buffers, a hashing thread, key ranges over connections
    sharing one snapshot for a large table) is `opsgate.verify.tablehash`."""
    # Imported here, not at the top, for the driver's sake (see TYPE_CHECKING above):
    # tablehash imports psycopg, which a process that hashes documents only never loads.
    # tablehash imports this module at its top; this is no cycle at import time.
    from opsgate.verify import tablehash

    return tablehash.table_hash(conn, table, schema)


def combined_hash(hashes: Mapping[str, str | None]) -> str:
    """One hash over many tables: canon-v1 document hash of {table: sha256} (null for a
    table that is missing on that side)."""
    return document_hash(dict(hashes))
