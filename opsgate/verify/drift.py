"""Knowledge drift: the legacy constellation payload against the DB-backed kb_* graph.

Both sides are streams in key order: the payload is parsed incrementally (ijson) and
sorted in bounded memory (`opsgate.verify.payload`, in a second process when it is a
file of `SECOND_PROCESS_FROM` bytes or more), the tables are read in code point order
(the order Python compares strings in) in one read-only snapshot. Each side's canon-v1
graph hash is computed on the fly, byte for byte the hash ``canon.document_hash`` gives
the same graph in memory; equal hashes end the comparison, otherwise a merge walk
reports missing, extra and changed nodes and edges with the fields that differ.

One pass over each side: every node and edge is canonicalised once, as it is read, into
an entry ``(key, seq, canonical bytes)``; sorting, spooling, the equality test and both
graph hashes use those bytes (`opsgate.verify.extsort`), and only a changed item is
parsed again, to name what changed. The client's memory is bounded by the sort's runs,
also when the payload comes from the database: it is streamed to a spool file in slices
(`payload_from_database`), never held whole.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg
from psycopg import sql

from opsgate import progress
from opsgate.clients import db, kb
from opsgate.errors import DriftInputError, OpsgateError, first_line
from opsgate.processes import exited, piped, wait_exit
from opsgate.verify import canon
from opsgate.verify.canon_members import edge_row_bytes, node_bytes
from opsgate.verify.evidence import MAX_EXAMPLES
from opsgate.verify.extsort import CHUNK, Entry, merge_runs, read_run, write_run
from opsgate.verify.payload import (
    _TICK,
    PayloadReader,
    PayloadSummary,
    StreamingArrayHash,
    StreamingDocumentHash,
    canonical_member,
    cycle_collector_paused,
    edge_key,
    graph_hasher,
    hash_runs,
    node_key,
    payload_from_file,
    payload_side,
    records,
)
from opsgate.verify.steps import StepFn, no_steps

# The payload side lives in `opsgate.verify.payload` (no database driver: it runs in a
# second process); its names are drift's too, as callers have always used them.
__all__ = [
    "EDGE_FIELDS", "NODE_FIELDS", "DriftInputError", "DriftResult", "PayloadReader",
    "PayloadSummary", "Side", "StreamingArrayHash", "StreamingDocumentHash",
    "canonical_member", "changed_example", "compare", "differences", "edge_key",
    "graph_hasher", "kb_graph_hash", "node_key", "payload_from_database",
    "payload_from_file", "payload_side", "records", "show_example",
]

NODE_FIELDS = ("type", "label", "domain", "tags", "summary", "media", "sources", "workflows")
EDGE_FIELDS = ("weight",)

#: A changed node or edge names at most this many differing places, each value shown
#: in at most `MAX_VALUE_CHARS` characters of its canonical JSON.
MAX_DIFFS = 3
MAX_VALUE_CHARS = 80


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

    def evidence(self, pinned: str | None = None) -> DriftEvidence:
        """knowledge_drift's evidence; ``pinned``: the kb graph hash the expectations
        pin, if any."""
        return DriftEvidence(self.source, self.payload, self.kb, self.counts,
                             self.examples, self.timings_s, pinned)


@dataclass(frozen=True)
class DriftEvidence:
    """knowledge_drift: both sides' figures and graph hashes, the differences counted
    per kind with bounded examples, timings, and the pinned hash (omitted when none)."""

    source: str
    payload: Side
    kb: Side
    differences: dict[str, int]
    examples: dict[str, list[Any]]
    timings_s: dict[str, float]
    pinned_kb_graph_sha256: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "payload": dict(vars(self.payload)), "kb": dict(vars(self.kb)),
            "hash_match": self.payload.graph_hash == self.kb.graph_hash,
            "differences": self.differences, "examples": self.examples,
            "timings_s": self.timings_s, "hash_version": canon.VERSION,
        }
        if self.pinned_kb_graph_sha256:
            out["pinned_kb_graph_sha256"] = self.pinned_kb_graph_sha256
        return out


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


#: The payload leaves the server in slices of this many bytes. PostgreSQL sends a row
#: as one message, so a payload read as one value (``SELECT payload::text``) arrives
#: whole, however it is read; sliced, the client holds one slice at a time.
PAYLOAD_SLICE = 1 << 20

#: The payload's JSON text in slices, in three parts when it is an object: part 0 the
#: envelope (the object without nodes and edges, as jsonb prints it), part 1 the nodes
#: array, part 2 the edges array (no row for a key the object lacks). Any other JSON
#: value is part 0 alone, spooled as it prints, for the payload side to refuse by name.
#: Envelope first: jsonb prints shorter keys first, edges and nodes before the envelope,
#: and the payload side, which reads the envelope first, then tokenised both arrays to
#: reach it (at 100k entities drift from the database spent 5.5 s comparing a spool in
#: jsonb's order against 3.5 s for the same payload envelope first). Each part's text is
#: computed once: the lateral generate_series needs its row first, and substring of an
#: in-memory bytea is a copy of the slice (substring of text would count characters
#: from the start). The payload is detoasted once per part (and once to see its type).
_PAYLOAD_SLICES = sql.SQL("""
    COPY (
      WITH r AS MATERIALIZED (
        SELECT payload AS j, jsonb_typeof(payload) = 'object' AS obj
        FROM admin_content_state WHERE key = 'constellation'),
      parts AS (
        SELECT 0 AS part, convert_to(CASE WHEN obj THEN ((j - 'nodes') - 'edges')::text
                                          ELSE j::text END, 'UTF8') AS b FROM r
        UNION ALL SELECT 1, convert_to((j -> 'nodes')::text, 'UTF8') FROM r WHERE obj
        UNION ALL SELECT 2, convert_to((j -> 'edges')::text, 'UTF8') FROM r WHERE obj)
      SELECT part, substring(b FROM i FOR {n})
      FROM parts, LATERAL generate_series(1, octet_length(b), {n}) AS i ORDER BY part, i
    ) TO STDOUT (FORMAT binary)""")

#: What goes before each part of an object's text in the spool file.
_PART_LEAD = {1: b'"nodes": ', 2: b'"edges": '}


def payload_from_database(conn: psycopg.Connection[Any]) -> PayloadReader:
    """The payload in ``admin_content_state`` (key ``constellation``), streamed to a spool
    file in `PAYLOAD_SLICE` slices, an object's members envelope first (`_PAYLOAD_SLICES`),
    each member's text as jsonb prints it: the client never holds it whole. The file
    lives in a private temporary folder that goes with the reader."""
    folder = tempfile.TemporaryDirectory(prefix="opsgate-payload-")
    path = Path(folder.name) / "payload.json"
    size = 0
    try:
        query = _PAYLOAD_SLICES.format(n=sql.Literal(PAYLOAD_SLICE))
        with path.open("wb") as spool, conn.cursor() as cur, cur.copy(query) as cp:
            cp.set_types(["int4", "bytea"])
            _spool_parts(cp.rows(), spool)
            size = spool.tell()
    except BaseException:
        folder.cleanup()
        raise
    if size == 0:
        folder.cleanup()
        raise DriftInputError("admin_content_state has no 'constellation' key "
                              "(set OPSGATE_LEGACY_PAYLOAD_FILE to compare a file instead)")
    reader = PayloadReader(lambda: path.open("rb"), "admin_content_state['constellation']",
                           path)
    reader._spool_dir = folder  # removed when the reader goes (TemporaryDirectory's finalizer)
    return reader


def _spool_parts(rows: Iterable[tuple[int, bytes]], spool: IO[bytes]) -> None:
    """Write the parts' slices as one JSON text: the envelope but for its closing brace,
    each array after its key, then the brace. A value that is no object (part 0 alone)
    is written as it came."""
    part, pending, envelope_bytes = -1, b"", 0
    for n, piece in rows:
        if n != part:
            if part == 0 and n > 0:  # the envelope's "}" waits until the arrays are in
                pending = b""
                spool.write(b", " if envelope_bytes > 2 else b"")  # "{}" has no member
            elif part > 0:
                spool.write(b", ")
            if n > 0:
                spool.write(_PART_LEAD[n])
            part = n
        if part == 0:
            envelope_bytes += len(piece)
            spool.write(pending + piece[:-1])
            pending = piece[-1:]
        else:
            spool.write(piece)
    spool.write(pending if part <= 0 else b"}")


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


def _merge(result: DriftResult, left: Iterator[Entry], right: Iterator[Entry],
           fields: tuple[str, ...], noun: str,
           hashes: tuple[StreamingDocumentHash, StreamingDocumentHash] | None,
           show: Callable[[Any], str], bar: progress.Bar) -> tuple[int, int]:
    """Walk two key-ordered streams of records; returns (left count, right count). Equal
    canonical bytes mean equal items; a changed pair alone is parsed, to name its
    fields. ``hashes`` are fed each side's members, when the caller needs them."""
    nl = nr = 0
    lh, rh = hashes if hashes is not None else (_NO_HASH, _NO_HASH)
    a = next(left, None)
    b = next(right, None)
    last_b: Any = None
    tick = 0
    while True:
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
                rh.add_bytes(b[2])
                nr += 1
                last_b = b[0]
                b = next(right, None)
                continue
        if a is None:  # and b is None: the branch above takes b's rows while a has none
            break
        if b is None or a[0] < b[0]:
            result.note(f"{noun}s missing from kb", show(a[0]))
            lh.add_bytes(a[2])
            nl += 1
            a = next(left, None)
            continue
        lh.add_bytes(a[2])
        rh.add_bytes(b[2])
        if a[2] != b[2]:
            example = changed_example(show(a[0]), orjson.loads(a[2]), orjson.loads(b[2]),
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


class _NoHash(StreamingDocumentHash):
    def __init__(self) -> None:
        pass

    def add_bytes(self, data: bytes) -> None:
        pass


_NO_HASH = _NoHash()


#: A payload file smaller than this is worked on in drift's own process, after the kb.
#: A second process costs an interpreter start and the payload modules' imports (about
#: 0.08 s of CPU and more of wall time); overlapping the two sides saves some 0.02 s per
#: MiB on two cores. Measured (median of 3, whole `compare`, this process then the
#: second): 0.33 MiB fixture 0.03 s / 0.10 s; 3 MiB 0.21 s / 0.17 s; 9.9 MiB 0.60 s /
#: 0.40 s. The second process pays from about 2 MiB.
SECOND_PROCESS_FROM = 2 << 20


class _PayloadRun:
    """The payload side (`payload_side`), started by `start` in a second process when the
    payload is a file of `SECOND_PROCESS_FROM` bytes or more, else run here when its
    result is asked for."""

    def __init__(self, reader: PayloadReader, folder: Path, chunk_size: int) -> None:
        """Nothing is started here (`start` does it): a constructor runs no process."""
        self._reader, self._folder, self._chunk = reader, folder, chunk_size
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()

    def start(self) -> _PayloadRun:
        """The second process started, with its output pumps, when the payload is a file
        of `SECOND_PROCESS_FROM` bytes or more; else nothing (`result` runs it here)."""
        reader, folder, chunk_size = self._reader, self._folder, self._chunk
        if reader.path is None or _size(reader.path) < SECOND_PROCESS_FROM:
            return self
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "opsgate.verify._payload_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        order, out, errors = (piped(self._proc.stdin), piped(self._proc.stdout),
                              piped(self._proc.stderr))
        order.write(json.dumps({
            "path": str(reader.path), "label": reader.label, "folder": str(folder),
            "chunk_size": chunk_size}).encode() + b"\n")
        order.close()
        self._stderr = bytearray()
        self._threads = [
            threading.Thread(target=self._pump, args=(out,), name="opsgate-drift-payload",
                             daemon=True),
            threading.Thread(target=lambda: self._stderr.extend(errors.read()),
                             name="opsgate-drift-payload-stderr", daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def _pump(self, out: IO[bytes]) -> None:
        for line in out:
            self._lines.put(line)
        self._lines.put(None)

    def result(self, bar: progress.Bar) -> PayloadSummary:
        """The payload side's summary. From the second process, its sorted runs are
        merged and hashed here as each array's are ready: the edges' while it still reads
        the nodes (when the nodes come first in the file), which keeps this process, done
        with the kb, from waiting idle."""
        if self._proc is None:
            try:
                return payload_side(self._reader, self._folder, self._chunk, bar.advance)
            except OSError as exc:
                # What the second process reports as its own failure, in the same words.
                raise OpsgateError("the payload side of drift failed: "
                                   f"{type(exc).__name__}: {exc}") from None
        domains: list[str] | None = None
        runs: dict[str, list[Path]] = {}
        counts: dict[str, int] = {}
        hasher: StreamingDocumentHash | None = None
        error: dict[str, Any] | None = None
        seconds = 0.0
        while (line := self._lines.get()) is not None:
            word, _, rest = line.decode().rstrip("\n").partition(" ")
            if word == "tick":
                bar.advance(int(rest))
                continue
            what = json.loads(rest)
            if word == "header":
                domains = what["domains"]
                hasher = graph_hasher(what["domains"])
            elif word == "runs":
                runs[what["kind"]] = [Path(r) for r in what["runs"]]
            elif word == "done":
                seconds = what["seconds"]
            elif word == "error":
                error = what
            if hasher is not None and "edge" in runs and "edges" not in counts:
                with cycle_collector_paused():
                    counts["edges"] = hash_runs(hasher, runs["edge"])
                hasher.start_nodes()
            if hasher is not None and "edges" in counts and "node" in runs \
                    and "nodes" not in counts:
                with cycle_collector_paused():
                    counts["nodes"] = hash_runs(hasher, runs["node"])
        code = self._proc.wait()
        for thread in self._threads:
            thread.join()
        if error is not None:
            raise (DriftInputError if error["kind"] == "DriftInputError"
                   else OpsgateError)(error["message"])
        if code == 0 and hasher is not None and domains is not None and "nodes" in counts:
            return PayloadSummary(domains, counts["edges"], counts["nodes"],
                                  hasher.hexdigest(), [str(r) for r in runs["edge"]],
                                  [str(r) for r in runs["node"]], seconds)
        lines = self._stderr.decode(errors="replace").strip().splitlines()
        last = first_line(lines[-1]) if lines else "no message"
        raise OpsgateError(f"the payload side of drift failed (exit {code}): {last}")

    def close(self) -> None:
        if self._proc is not None and not exited(self._proc):
            self._proc.kill()
            wait_exit(self._proc, None)


def _size(path: Path) -> int:
    """The file's size; a file that cannot be read is the second process's to report (it
    opens it, and says how that failed), so it counts as large."""
    try:
        return path.stat().st_size
    except OSError:
        return SECOND_PROCESS_FROM


def _hashing(hasher: StreamingDocumentHash, counter: list[int]
             ) -> Callable[[list[Entry]], None]:
    """A block callback for `extsort.write_run`: the kb's entries fed to its graph hash
    a block at a time (one join per block, not a call per member), and counted."""
    counter.append(0)

    def on_block(block: list[Entry]) -> None:
        counter[0] += hasher.add_many(map(_DATA, block))
    return on_block


_DATA = itemgetter(2)


def kb_edge_entries(rows: Iterable[tuple[str, str, str, Any]], bar: progress.Bar | None = None
                    ) -> Iterator[Entry]:
    """Entries of the kb's edges straight from their rows (`kb.iter_edge_rows`), through
    `canon_members.edge_row_bytes` (the same bytes as ``edge_bytes``;
    tests/unit/test_drift_payload.py)."""
    return records(rows, _EDGE_ROW_KEY, bar, edge_row_bytes)


_EDGE_ROW_KEY = itemgetter(0, 1, 2)


#: The kb snapshot's settings: the output settings and the kb reads' planner settings,
#: pinned with its BEGIN (one round trip), not again before the nodes' read.
_KB_SNAPSHOT_SETTINGS = (*db.OUTPUT_SETTINGS, *kb.READ_SETTINGS)


def _spool_kb(conn: psycopg.Connection[Any], edges: Path, nodes: Path, pinned: bool,
              bar: progress.Bar) -> tuple[list[str], StreamingDocumentHash, int, int]:
    """The kb's edges and nodes into the sorted spool files ``edges`` and ``nodes``,
    hashing its graph as they pass, inside the caller's snapshot: (its domains, the graph
    hash, the edge and node counts).

    Each stream is closed before the snapshot ends, however it ends: a stop raised while
    a stream waits at its yield leaves it holding the connection's lock, and the
    snapshot's rollback would wait for it forever (a stopped gate hung until SIGKILL)."""
    kdomains, orders = kb.domains_and_orders(conn)
    khash = graph_hasher(kdomains)
    edge_count: list[int] = []
    node_count: list[int] = []
    with closing(kb.iter_edge_rows(conn, orders["edges"])) as edge_rows:
        write_run(edges, kb_edge_entries(edge_rows, bar), _hashing(khash, edge_count))
    khash.start_nodes()
    with closing(kb.iter_nodes(conn, orders["nodes"], pinned=pinned)) as node_rows:
        write_run(nodes, records(node_rows, node_key, bar, node_bytes),
                  _hashing(khash, node_count))
    return kdomains, khash, edge_count[0], node_count[0]


def compare(payload: PayloadReader, conn: psycopg.Connection[Any], source: str,
            chunk_size: int = CHUNK, steps: StepFn = no_steps) -> DriftResult:
    """Compare ``payload`` with the kb graph on ``conn`` (read only). Memory is bounded
    by the sort chunk, not by the graph.

    The two sides are worked on at once when the payload is a file of
    `SECOND_PROCESS_FROM` bytes or more: the payload's (`payload_side`) in a second
    process, and the kb's, read here in one read-only snapshot into a spool file as fast
    as it arrives, hashing its graph as it goes; a smaller payload's side runs here,
    after the kb's.
    When the two graph hashes are equal, the graphs are the same, byte for byte: nothing
    more is read. Otherwise both sorted streams are merged, to name what differs; the
    merge runs after the snapshot has ended, so a transaction is never idle while the
    client works. Called inside the caller's transaction (a migration's verify), the kb
    side is read in that transaction instead, which the caller owns.
    """
    t0 = time.monotonic()
    own = not db.in_transaction(conn)
    # A payload that is not one is refused by the payload side (in the second process
    # when there is one, while the kb is read: then the kb's read was in vain, but nothing
    # runs the file's first pass twice, which for a payload spooled from jsonb, its
    # envelope last, is a whole pass).
    with tempfile.TemporaryDirectory(prefix="opsgate-drift-") as tmp:
        folder = Path(tmp)
        run = _PayloadRun(payload, folder, chunk_size).start()
        try:
            t = time.monotonic()
            snapshot: AbstractContextManager[Any] = (
                db.transaction(conn, read_only=True, settings=_KB_SNAPSHOT_SETTINGS,
                               isolation=psycopg.IsolationLevel.REPEATABLE_READ,
                               application_name="opsgate-drift") if own else nullcontext())
            kb_edges, kb_nodes = folder / "kb-edges.rec", folder / "kb-nodes.rec"
            with steps("read: kb domains, edges and nodes in one read-only snapshot"), \
                    snapshot, cycle_collector_paused(), progress.bar(
                        "drift: read and canonicalise the kb", unit="items") as bar:
                kdomains, khash, edge_count, node_count = _spool_kb(
                    conn, kb_edges, kb_nodes, own, bar)
            timings = {"read_kb": round(time.monotonic() - t, 3)}
            t = time.monotonic()
            with steps("sort: the payload's edges and nodes by key, in bounded memory"), \
                    progress.bar("drift: canonicalise and sort the payload",
                                 unit="items") as bar:
                side = run.result(bar)
            timings["sort_payload"] = side.seconds
            timings["wait_payload"] = round(time.monotonic() - t, 3)
        finally:
            run.close()
        result = DriftResult(Side("payload"), Side("kb"), source=source)
        result.timings_s.update(timings)
        result.payload.domains, result.kb.domains = sorted(side.domains), kdomains
        result.payload.graph_hash, result.kb.graph_hash = side.graph_hash, khash.hexdigest()
        result.payload.edges, result.payload.nodes = side.edges, side.nodes
        result.kb.edges, result.kb.nodes = edge_count, node_count
        for d in sorted(set(side.domains) - set(kdomains)):
            result.note("domains missing from kb", d)
        for d in sorted(set(kdomains) - set(side.domains)):
            result.note("extra kb domains", d)
        if result.payload.graph_hash != result.kb.graph_hash:
            for noun, step, payload_runs, kb_run, fields, show in (
                    ("edge", "by (source, target, relation)", side.edge_runs, kb_edges,
                     EDGE_FIELDS, _show_edge),
                    ("node", "by id, field by field", side.node_runs, kb_nodes,
                     NODE_FIELDS, _show_node)):
                t = time.monotonic()
                with steps(f"compare: {noun}s {step}"), \
                        progress.bar(f"drift: compare {noun}s", unit=f"{noun}s") as bar:
                    _merge(result, merge_runs(map(Path, payload_runs)), read_run(kb_run),
                           fields, noun, None, show, bar)
                result.timings_s[f"{noun}s"] = round(time.monotonic() - t, 3)
    result.timings_s["total"] = round(time.monotonic() - t0, 3)
    return result
