"""Knowledge drift: the legacy constellation payload against the DB-backed kb_* graph.

Both sides are streams in key order: the payload is parsed incrementally (ijson) and
sorted in bounded memory, the tables are read through server-side cursors ordered with
the "C" collation (code point order, the order Python compares strings in). A merge
walk reports missing, extra and changed nodes and edges with the fields that differ,
and each side's canon-v1 graph hash is computed on the fly, byte for byte the hash
``canon.document_hash`` gives the same graph in memory.

One pass over each side: every node and edge is canonicalised once, as it is read, into
a record ``(key, canonical bytes)``; sorting, spooling, the equality test and both graph
hashes use those bytes (`opsgate.verify.extsort`), and only a changed item is parsed
again, to name what changed. The client's memory is bounded by the sort's runs, also
when the payload comes from the database: it is streamed to a spool file in slices
(`payload_from_database`), never held whole.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import ijson
import jsonschema
import jsonschema_rs
import orjson
import psycopg
from psycopg import sql

from opsgate import progress
from opsgate.errors import DriftInputError, OpsgateError, first_line
from opsgate.target import contracts, db, kb
from opsgate.verify import canon
from opsgate.verify.evidence import MAX_EXAMPLES
from opsgate.verify.extsort import Record, sort_records, spool_records
from opsgate.verify.steps import StepFn, no_steps

NODE_FIELDS = ("type", "label", "domain", "tags", "summary", "media", "sources", "workflows")
EDGE_FIELDS = ("weight",)

#: A changed node or edge names at most this many differing places, each value shown
#: in at most `MAX_VALUE_CHARS` characters of its canonical JSON.
MAX_DIFFS = 3
MAX_VALUE_CHARS = 80


def node_key(n: dict[str, Any]) -> str:
    return str(n["id"])


def edge_key(e: dict[str, Any]) -> tuple[str, str, str]:
    return (str(e["source"]), str(e["target"]), str(e["relation"]))


class StreamingDocumentHash:
    """canon-v1 hash of a document whose ``edges`` and ``nodes`` arrays are fed member by
    member in canon-v1 order, the other (small) fields given up front.

    RFC 8785 serialises an array as "[" + ",".join(members) + "]" and an object with its
    keys sorted (by UTF-16 code units), so emitting the pieces in that order gives exactly
    the bytes of the whole document's canonical form, without holding the document.

    The envelope is normalised as the whole document would be (`canon.normalize`), so
    its sets (``domains``) may come in any order. The members must come in canon-v1
    order (edges by (source, target, relation), nodes by id); each one is normalised
    on its own (its ``tags`` sorted, its ordered arrays kept).
    """

    def __init__(self, envelope: dict[str, Any]) -> None:
        envelope = canon.normalize(envelope)
        keys = sorted([*envelope, "edges", "nodes"], key=lambda k: k.encode("utf-16-be"))
        if keys.index("edges") > keys.index("nodes"):  # pragma: no cover - fixed key names
            raise OpsgateError("canon-v1 streaming needs 'edges' before 'nodes'")
        self._parts = {"before": keys[: keys.index("edges")],
                       "between": keys[keys.index("edges") + 1: keys.index("nodes")],
                       "after": keys[keys.index("nodes") + 1:]}
        self._env = envelope
        self._h = hashlib.sha256()
        # Members arrive a few hundred bytes at a time: hashlib is fed `HASH_BUFFER` at a
        # time instead (as canon.table_hash does).
        self._buf = bytearray(b"{" + self._fields("before", trailing=True) + b'"edges":[')
        self._first = True

    def _fields(self, part: str, trailing: bool = False, leading: bool = False) -> bytes:
        items = [canon.canonical_json(k) + b":" + canon.canonical_json(self._env[k])
                 for k in self._parts[part]]
        if not items:
            return b""
        body = b",".join(items)
        return (b"," if leading else b"") + body + (b"," if trailing else b"")

    def add(self, item: dict[str, Any]) -> bytes:
        """Feed one member; returns its canonical bytes (callers compare with them)."""
        data = canonical_member(item)
        self.add_bytes(data)
        return data

    def add_bytes(self, data: bytes) -> None:
        """Feed one member's canonical bytes (`canonical_member`)."""
        buf = self._buf
        if not self._first:
            buf += b","
        self._first = False
        buf += data
        if len(buf) >= canon.HASH_BUFFER:
            self._h.update(buf)
            buf.clear()

    def start_nodes(self) -> None:
        self._buf += b"]," + self._fields("between", trailing=True) + b'"nodes":['
        self._first = True

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(self._buf)
        h.update(b"]" + self._fields("after", leading=True) + b"}")
        return h.hexdigest()


def canonical_member(item: dict[str, Any]) -> bytes:
    """canon-v1 bytes of one node or edge, as they appear inside the whole document's."""
    return canon.canonical_json(item)


#: Progress is counted in batches of this many items (a bar update per item would cost
#: more than the item).
_TICK = 4096


def records(items: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any],
            bar: progress.Bar | None = None) -> Iterator[Record]:
    """``(key, canonical bytes)`` of each item: the one time an item is canonicalised.

    The bytes are copied to their size: orjson hands back its output in a buffer of at
    least 4 KiB, so a sort run of 50,000 edges held as they come costs 200 MiB instead of
    6 (measured)."""
    member = canon.canonical_json
    n = 0
    for item in items:
        yield key(item), bytes(memoryview(member(item)))
        n += 1
        if n == _TICK:
            if bar is not None:
                bar.advance(n)
            n = 0
    if bar is not None and n:
        bar.advance(n)


def graph_hasher(domains: list[str]) -> StreamingDocumentHash:
    """The hasher of the graph part ({"domains", "edges", "nodes"}) of a payload; the
    domains in any order (canon-v1 sorts them)."""
    return StreamingDocumentHash({"domains": domains})


class StreamingArrayHash:
    """canon-v1 hash of the one-key document ``{key: [members]}``, members fed in canon-v1
    order (for ``nodes``: by id), one at a time: the migration of workflows hashes its
    projection ``{"nodes": [{"id", "workflows"}]}`` of a payload this way."""

    def __init__(self, key: str) -> None:
        self._h = hashlib.sha256(b"{" + canon.canonical_json(key) + b":[")
        self._first = True
        self.count = 0

    def add(self, item: dict[str, Any]) -> bytes:
        """Feed one member; returns its canonical bytes (callers compare with them)."""
        data = canonical_member(item)
        if not self._first:
            self._h.update(b",")
        self._first = False
        self._h.update(data)
        self.count += 1
        return data

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(b"]}")
        return h.hexdigest()


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


def _brief(value: Any) -> str:
    """A value for a message: its canonical JSON, cut to `MAX_VALUE_CHARS`."""
    if value is ABSENT:
        return "(absent)"
    text = canon.canonical_json(value).decode("utf-8")
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def differences(path: str, a: Any, b: Any, limit: int = MAX_DIFFS) -> list[dict[str, str]]:
    """Where ``a`` (payload) and ``b`` (kb) differ, deepest first: up to ``limit``
    ``{"path", "payload", "kb"}`` entries, values cut short (`ABSENT` for a missing key
    or member), e.g. ``workflows[1](Publish).steps[2](Render media).status``.

    Lists of objects line up by index; when their lengths differ and every member has a
    distinct ``name`` (workflows, steps), by name instead, so that one member missing
    from the middle is one difference, not a shift of all that follow."""
    out: list[dict[str, str]] = []
    _walk(path, a, b, out, limit)
    return out


def _names(items: list[Any]) -> list[str] | None:
    names = [x["name"] for x in items if isinstance(x, dict) and isinstance(x.get("name"), str)]
    return names if len(names) == len(items) == len(set(names)) else None


def _walk(path: str, a: Any, b: Any, out: list[dict[str, str]], limit: int) -> None:
    if len(out) >= limit or (a is not ABSENT and b is not ABSENT
                             and canon.canonical_json(a) == canon.canonical_json(b)):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            _walk(f"{path}.{k}", a.get(k, ABSENT), b.get(k, ABSENT), out, limit)
        return
    # Lists of objects (media, workflows, steps) member by member; lists of strings (tags,
    # sources) are shown whole, as a set's members do not line up by index.
    if isinstance(a, list) and isinstance(b, list) and any(isinstance(x, dict) for x in a + b):
        an, bn = _names(a), _names(b)
        if len(a) != len(b) and an is not None and bn is not None:
            for i, name in enumerate(an):
                _walk(f"{path}[{i}]({name})", a[i],
                      b[bn.index(name)] if name in bn else ABSENT, out, limit)
            for j, name in enumerate(bn):
                if name not in an:
                    _walk(f"{path}[{j}]({name})", ABSENT, b[j], out, limit)
            _walk(f"{path}(order)", [n for n in an if n in bn], [n for n in bn if n in an],
                  out, limit)
            return
        for i in range(max(len(a), len(b))):
            x = a[i] if i < len(a) else ABSENT
            y = b[i] if i < len(b) else ABSENT
            named = x if isinstance(x, dict) else y
            label = f"({named['name']})" if isinstance(named, dict) and "name" in named else ""
            _walk(f"{path}[{i}]{label}", x, y, out, limit)
        return
    out.append({"path": path, "payload": _brief(a), "kb": _brief(b)})


@dataclass
class Side:
    label: str
    nodes: int = 0
    edges: int = 0
    domains: list[str] = field(default_factory=list)
    graph_hash: str = ""


@dataclass
class DriftResult:
    payload: Side
    kb: Side
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def note(self, kind: str, example: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < MAX_EXAMPLES:
            bucket.append(example)

    @property
    def drifted(self) -> bool:
        return bool(self.counts) or self.payload.graph_hash != self.kb.graph_hash

    def summary_lines(self) -> list[str]:
        lines = []
        for kind in ("nodes missing from kb", "extra kb nodes", "changed nodes",
                     "edges missing from kb", "extra kb edges", "changed edges",
                     "domains missing from kb", "extra kb domains"):
            if kind in self.counts:
                lines.append(f"{self.counts[kind]} {kind}, e.g. "
                             + "; ".join(map(show_example, self.examples[kind][:5])))
        return lines

    def evidence(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "payload": vars(self.payload), "kb": vars(self.kb),
            "hash_match": self.payload.graph_hash == self.kb.graph_hash,
            "differences": self.counts, "examples": self.examples,
            "timings_s": self.timings_s, "hash_version": canon.VERSION,
        }


def kb_graph_hash(conn: psycopg.Connection[Any]) -> str:
    """canon-v1 hash of the kb graph, streamed from the tables."""
    h = graph_hasher(kb.domains(conn))
    for e in kb.iter_edges(conn):
        h.add(e)
    h.start_nodes()
    for n in kb.iter_nodes(conn):
        h.add(n)
    return h.hexdigest()


def show_example(example: Any) -> str:
    """One example of a difference as a line of text (bounded)."""
    if isinstance(example, dict) and "fields" in example:
        text = f"{example['key']} ({', '.join(example['fields'])})"
        diffs = example.get("diffs") or []
        if diffs:
            text += " " + ", ".join(f"{d['path']}: payload {d['payload']} vs kb {d['kb']}"
                                    for d in diffs)
        return text
    return str(example)


# -- payload side ---------------------------------------------------------------------


#: The prefixes of the events `PayloadReader.header` looks at.
_HEADER_PREFIXES = frozenset({"", "version", "generatedAt", "domains", "domains.item", "nodes",
                              "edges"})
_ENVELOPE = frozenset({"_object", "version", "generatedAt", "domains", "_domains_end"})


class PayloadReader:
    """Incremental reads of a payload file (or bytes), validated item by item."""

    def __init__(self, opener: Any, label: str) -> None:
        self._open = opener
        self.label = label
        #: The spool file a payload read from the database lives in (kept open with us).
        self.spool: IO[bytes] | None = None
        #: Graph arrays `header` stopped before reaching (checked if found empty).
        self._unseen: set[str] = set()
        full = contracts.schema("constellation-payload")
        defs = full["$defs"]
        # jsonschema-rs checks each item (~100x faster); the pure-Python validator only
        # explains the first failure, with its JSON path.
        self._schemas = {kind: {"$ref": f"#/$defs/{kind}", "$defs": defs}
                         for kind in ("node", "edge")}
        self._fast = {kind: jsonschema_rs.validator_for(schema)
                      for kind, schema in self._schemas.items()}

    def _items(self, prefix: str) -> Iterator[Any]:
        handle: IO[bytes] = self._open()
        try:
            yield from ijson.items(handle, prefix, use_float=True)
        except ijson.JSONError as exc:
            raise self._not_json(exc) from None
        finally:
            handle.close()

    def hashes(self, chunk_size: int = 50_000) -> tuple[str, str, dict[str, int]]:
        """(canon-v1 hash of the whole payload, of its graph part, counts), in one
        streamed pass that also validates every item."""
        header = self.header()
        envelope = {k: header[k] for k in ("version", "generatedAt", "domains")}
        full, graph = StreamingDocumentHash(envelope), graph_hasher(header["domains"])
        counts = {"nodes": 0, "edges": 0, "domains": len(header["domains"])}
        for _, data in sort_records(records(self.edges(), edge_key), chunk_size):
            full.add_bytes(data)
            graph.add_bytes(data)
            counts["edges"] += 1
        full.start_nodes()
        graph.start_nodes()
        for _, data in sort_records(records(self.nodes(), node_key), chunk_size):
            full.add_bytes(data)
            graph.add_bytes(data)
            counts["nodes"] += 1
        return full.hexdigest(), graph.hexdigest(), counts

    def _not_json(self, exc: BaseException) -> DriftInputError:
        return DriftInputError(f"{self.label}: not valid JSON ({first_line(exc)[:300]})")

    def header(self, stop_early: bool = True) -> dict[str, Any]:
        """The envelope (version, generatedAt, domains), checked present with the graph's
        arrays.

        With ``stop_early``, the pass ends as soon as the envelope is whole and one graph
        array has begun: the rest of the file is graph, which the item passes parse (and
        refuse, if it is not JSON). An array not reached by then is checked only if its
        item pass finds nothing (`_require`): a payload lists its envelope first, and
        reading past a million nodes to see where ``edges`` begins cost a whole pass.
        """
        handle: IO[bytes] = self._open()
        found: dict[str, Any] = {}
        stopped = False
        # Only the envelope's events reach Python: the filter runs in C (tee, map, compress
        # over ijson's C parser), not in a Python loop over every event of the graph.
        events, peek = itertools.tee(ijson.parse(handle, use_float=True))
        wanted = itertools.compress(events, map(_HEADER_PREFIXES.__contains__,
                                                map(itemgetter(0), peek)))
        try:
            for prefix, event, value in wanted:
                if prefix in ("version", "generatedAt") and event in ("string", "number"):
                    found[prefix] = value
                elif prefix == "" and event == "start_map":
                    found["_object"] = True
                elif prefix == "domains.item":
                    found.setdefault("domains", []).append(value)
                elif prefix == "domains" and event == "start_array":
                    found.setdefault("domains", [])
                elif prefix in ("nodes", "edges") and event == "start_array":
                    found["_" + prefix] = True
                elif prefix == "domains" and event == "end_array":
                    found["_domains_end"] = True
                if stop_early and found.keys() >= _ENVELOPE and (
                        "_nodes" in found or "_edges" in found):
                    stopped = True
                    break
        except ijson.JSONError as exc:
            raise self._not_json(exc) from None
        finally:
            handle.close()
        missing = [k for k in ("version", "generatedAt", "domains") if k not in found]
        unseen = [k for k in ("nodes", "edges") if "_" + k not in found]
        if stopped:
            self._unseen = set(unseen)
        else:
            missing += unseen
        if not found.get("_object") or missing:
            raise DriftInputError(f"{self.label} does not match its contract: "
                                  f"missing {', '.join(missing) or 'top-level object'}")
        return found

    def _require(self, array: str) -> None:
        """Check that ``array`` is in the payload (its item pass found no items, and
        `header` stopped before reaching it): the whole file is read this once."""
        if array in self._unseen:
            self.header(stop_early=False)  # raises, naming what is missing
            self._unseen.discard(array)

    def _validated(self, prefix: str, kind: str) -> Iterator[dict[str, Any]]:
        fast = self._fast[kind]
        seen = False
        for i, item in enumerate(self._items(prefix)):
            seen = True
            if fast.is_valid(item):
                yield item
                continue
            slow = jsonschema.Draft202012Validator(self._schemas[kind])
            err = next(iter(slow.iter_errors(item)), None)
            if err is not None:
                path = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]"
                               for p in err.absolute_path)
                raise DriftInputError(f"{self.label} does not match its contract: "
                                      f"$['{prefix.split('.')[0]}'][{i}]{path}: "
                                      f"{err.message[:120]}")
            raise DriftInputError(f"{self.label}: {prefix.split('.')[0]}[{i}] is invalid")
        if not seen:
            self._require(prefix.split(".")[0])

    def nodes(self) -> Iterator[dict[str, Any]]:
        return self._validated("nodes.item", "node")

    def edges(self) -> Iterator[dict[str, Any]]:
        return self._validated("edges.item", "edge")


def payload_from_file(path: str | Path) -> PayloadReader:
    p = Path(path)
    if not p.is_file():
        raise DriftInputError(f"payload file {p} does not exist")
    return PayloadReader(lambda: p.open("rb"), f"payload file {p.name}")


#: The payload leaves the server in slices of this many bytes. PostgreSQL sends a row
#: as one message, so a payload read as one value (``SELECT payload::text``) arrives
#: whole, however it is read; sliced, the client holds one slice at a time.
PAYLOAD_SLICE = 1 << 20

#: Slices of the payload's JSON text in order. The text is computed once: the lateral
#: generate_series needs the CTE's row first, and substring of an in-memory bytea is
#: a copy of the slice (substring of text would count characters from the start).
_PAYLOAD_SLICES = sql.SQL("""
    COPY (
      WITH p AS MATERIALIZED (
        SELECT convert_to(payload::text, 'UTF8') AS b FROM admin_content_state
        WHERE key = 'constellation')
      SELECT substring(p.b FROM i FOR {n})
      FROM p, LATERAL generate_series(1, octet_length(p.b), {n}) AS i ORDER BY i
    ) TO STDOUT (FORMAT binary)""")


class _SpoolView(io.RawIOBase):
    """A reader of one (unlinked) spool file with its own position (``os.pread``), so the
    payload can be read again and again without reopening a file that has no name."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd, self._pos, self._size = fd, 0, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def payload_from_database(conn: psycopg.Connection[Any]) -> PayloadReader:
    """The payload in ``admin_content_state`` (key ``constellation``), streamed to an
    unlinked spool file in `PAYLOAD_SLICE` slices: the client never holds it whole."""
    spool = tempfile.TemporaryFile(prefix="opsgate-payload-")  # noqa: SIM115 - outlives us
    size = 0
    try:
        query = _PAYLOAD_SLICES.format(n=sql.Literal(PAYLOAD_SLICE))
        with conn.cursor() as cur, cur.copy(query) as cp:
            cp.set_types(["bytea"])
            for (piece,) in cp.rows():
                spool.write(piece)
                size += len(piece)
        spool.flush()
    except BaseException:
        spool.close()
        raise
    if size == 0:
        spool.close()
        raise DriftInputError("admin_content_state has no 'constellation' key "
                              "(set OPSGATE_LEGACY_PAYLOAD_FILE to compare a file instead)")
    # The reader keeps the spool open (and its disk space, already unlinked) as long as
    # the reader lives; the views never close it.
    reader = PayloadReader(lambda: _SpoolView(spool.fileno(), size),
                           "admin_content_state['constellation']")
    reader.spool = spool
    return reader


# -- the merge --------------------------------------------------------------------------


def _differing(a: dict[str, Any], b: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    return [f for f in fields
            if canon.canonical_json(a.get(f)) != canon.canonical_json(b.get(f))]


def changed_example(key: Any, a: dict[str, Any], b: dict[str, Any],
                    fields: tuple[str, ...]) -> dict[str, Any]:
    """The example of a changed node or edge: its key, the fields that differ and where
    (bounded, with both values)."""
    diff = _differing(a, b, fields)
    diffs: list[dict[str, str]] = []
    for f in diff:
        diffs += differences(f, a.get(f, ABSENT), b.get(f, ABSENT), MAX_DIFFS - len(diffs))
    return {"key": key, "fields": diff or ["canonical form"], "diffs": diffs}


def _merge(result: DriftResult, left: Iterator[Record], right: Iterator[Record],
           fields: tuple[str, ...], noun: str,
           hashes: tuple[StreamingDocumentHash, StreamingDocumentHash],
           show: Callable[[Any], str], bar: progress.Bar) -> tuple[int, int]:
    """Walk two key-ordered streams of records; returns (left count, right count). Equal
    canonical bytes mean equal items; a changed pair alone is parsed, to name its
    fields."""
    nl = nr = 0
    lh, rh = hashes
    a = next(left, None)
    b = next(right, None)
    last_b: Any = None
    tick = 0
    while a is not None or b is not None:
        tick += 1
        if tick == _TICK:
            bar.advance(tick)
            tick = 0
        if b is not None:
            if last_b is not None and b[0] < last_b:
                raise OpsgateError(f"kb {noun}s are not in key order; the database "
                                   "collation is not honoured")
            if a is None or b[0] < a[0]:
                result.note(f"extra kb {noun}s", show(b[0]))
                rh.add_bytes(b[1])
                nr += 1
                last_b = b[0]
                b = next(right, None)
                continue
        assert a is not None
        if b is None or a[0] < b[0]:
            result.note(f"{noun}s missing from kb", show(a[0]))
            lh.add_bytes(a[1])
            nl += 1
            a = next(left, None)
            continue
        lh.add_bytes(a[1])
        rh.add_bytes(b[1])
        if a[1] != b[1]:
            example = changed_example(show(a[0]), orjson.loads(a[1]), orjson.loads(b[1]),
                                      fields)
            result.note(f"changed {noun}s", example)
        nl += 1
        nr += 1
        last_b = b[0]
        a = next(left, None)
        b = next(right, None)
    bar.advance(tick)
    return nl, nr


def _show_edge(key: tuple[str, str, str]) -> str:
    source, target, relation = key
    return f"{source}-[{relation}]->{target}"


def _show_node(key: str) -> str:
    return key


def compare(payload: PayloadReader, conn: psycopg.Connection[Any], source: str,
            chunk_size: int = 50_000, steps: StepFn = no_steps) -> DriftResult:
    """Compare ``payload`` with the kb graph on ``conn`` (read only). Memory is bounded
    by the sort chunk, not by the graph.

    The client's work and the database's are kept apart: the payload is sorted first;
    then one read-only snapshot copies the kb side to local spool files as fast as it
    arrives; the merge runs after that transaction has ended, so it is never idle while
    the client works. Called inside the caller's transaction (a migration's verify),
    the kb side is read in that transaction instead, which the caller owns.
    """
    t0 = time.monotonic()
    own = not db.in_transaction(conn)
    header = payload.header()
    pdomains = list(header.get("domains", []))
    t = time.monotonic()
    with steps("sort: the payload's edges and nodes by key, in bounded memory"), \
            progress.bar("drift: canonicalise and sort the payload", unit="items") as bar:
        payload_edges = sort_records(records(payload.edges(), edge_key, bar), chunk_size)
        payload_nodes = sort_records(records(payload.nodes(), node_key, bar), chunk_size)
    result_timings = {"sort_payload": round(time.monotonic() - t, 3)}
    t = time.monotonic()
    snapshot: AbstractContextManager[Any] = (
        db.transaction(conn, read_only=True, isolation=psycopg.IsolationLevel.REPEATABLE_READ,
                       application_name="opsgate-drift") if own else nullcontext())
    with steps("read: kb domains, edges and nodes in one read-only snapshot"), snapshot, \
            progress.bar("drift: read and canonicalise the kb", unit="items") as bar:
        kdomains = kb.domains(conn)
        kb_edges = spool_records(records(kb.iter_edges(conn), edge_key, bar))
        kb_nodes = spool_records(records(kb.iter_nodes(conn), node_key, bar))
    result_timings["read_kb"] = round(time.monotonic() - t, 3)
    result = DriftResult(Side("payload"), Side("kb"), source=source)
    result.timings_s.update(result_timings)
    result.payload.domains, result.kb.domains = sorted(pdomains), kdomains
    for d in sorted(set(pdomains) - set(kdomains)):
        result.note("domains missing from kb", d)
    for d in sorted(set(kdomains) - set(pdomains)):
        result.note("extra kb domains", d)
    hashes = (graph_hasher(pdomains), graph_hasher(kdomains))

    t = time.monotonic()
    with steps("compare: edges by (source, target, relation)"), \
            progress.bar("drift: compare edges", unit="edges") as bar:
        result.payload.edges, result.kb.edges = _merge(
            result, payload_edges, kb_edges, EDGE_FIELDS, "edge", hashes, _show_edge, bar)
    result.timings_s["edges"] = round(time.monotonic() - t, 3)
    for h in hashes:
        h.start_nodes()
    t = time.monotonic()
    with steps("compare: nodes by id, field by field"), \
            progress.bar("drift: compare nodes", unit="nodes") as bar:
        result.payload.nodes, result.kb.nodes = _merge(
            result, payload_nodes, kb_nodes, NODE_FIELDS, "node", hashes, _show_node, bar)
    result.timings_s["nodes"] = round(time.monotonic() - t, 3)
    result.payload.graph_hash, result.kb.graph_hash = (h.hexdigest() for h in hashes)
    result.timings_s["total"] = round(time.monotonic() - t0, 3)
    return result
