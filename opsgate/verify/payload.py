"""The legacy payload, one side of knowledge drift: read, validated, canonicalised, sorted.

Everything here is client work on a file: parsing (ijson's C backend), validating each
member against the contract (jsonschema-rs), writing its canon-v1 bytes
(`canon_members`), sorting them in bounded memory (`extsort`) and hashing the graph.
It imports no database driver, so that `compare` can run it in a second process
(`_payload_worker`) that costs little memory, while the first reads the kb.
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import ijson
import jsonschema_rs

from opsgate.clients import contracts
from opsgate.errors import DriftInputError, OpsgateError, first_line
from opsgate.verify import canon
from opsgate.verify.canon_members import edge_bytes, node_bytes
from opsgate.verify.extsort import (
    CHUNK,
    RECORD_BYTES,
    Entry,
    merge_runs,
    write_sorted_run,
)

if TYPE_CHECKING:
    from opsgate import progress

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

    def add_many(self, datas: Iterable[bytes]) -> int:
        """Feed members' canonical bytes in order, a batch at a time (one join per batch,
        not a call per member); returns how many."""
        n = 0
        buf = self._buf
        for batch in _batches(datas):
            if not self._first:
                buf += b","
            self._first = False
            buf += b",".join(batch)
            n += len(batch)
            if len(buf) >= canon.HASH_BUFFER:
                self._h.update(buf)
                buf.clear()
        return n

    def start_nodes(self) -> None:
        self._buf += b"]," + self._fields("between", trailing=True) + b'"nodes":['
        self._first = True

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(self._buf)
        h.update(b"]" + self._fields("after", leading=True) + b"}")
        return h.hexdigest()


def _batches(datas: Iterable[bytes]) -> Iterator[tuple[bytes, ...]]:
    it = iter(datas)
    while batch := tuple(itertools.islice(it, 4096)):
        yield batch


def canonical_member(item: dict[str, Any]) -> bytes:
    """canon-v1 bytes of one node or edge, as they appear inside the whole document's."""
    return canon.canonical_json(item)


#: Progress is counted in batches of this many items (a bar update per item would cost
#: more than the item).
_TICK = 4096


def records(items: Iterable[Any], key: Callable[[Any], Any],
            bar: progress.Bar | None = None,
            member: Callable[[Any], bytes] = canon.canonical_json,
            ) -> Iterator[Entry]:
    """``(key, seq, canonical bytes)`` of each item, ``seq`` its position (`extsort.Entry`):
    the one time an item is canonicalised (``member``: `canon_members.node_bytes` or
    ``edge_bytes`` for graph members).

    The bytes are copied to their size: orjson hands back its output in a buffer of at
    least 4 KiB, so a sort run of 50,000 edges held as they come costs 200 MiB instead of
    6 (measured)."""
    advance = bar.advance if bar is not None else None
    n = 0
    for seq, item in enumerate(items):
        yield key(item), seq, bytes(memoryview(member(item)))
        n += 1
        if n == _TICK:
            if advance is not None:
                advance(n)
            n = 0
    if advance is not None and n:
        advance(n)


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


# -- payload side ---------------------------------------------------------------------


#: The prefixes of the events `PayloadReader.header` looks at.
_HEADER_PREFIXES = frozenset({"", "version", "generatedAt", "domains", "domains.item", "nodes",
                              "edges"})
_ENVELOPE = frozenset({"_object", "version", "generatedAt", "domains", "_domains_end"})


class PayloadReader:
    """Incremental reads of a payload file (or bytes), validated item by item."""

    def __init__(self, opener: Any, label: str, path: Path | None = None) -> None:
        self._open = opener
        self.label = label
        #: The file the payload is in, when it has a name: `compare` then reads it in a
        #: second process (`payload_side`) while it reads the kb itself, from
        #: `drift.SECOND_PROCESS_FROM` bytes on.
        self.path = path
        self._header: dict[str, Any] | None = None
        #: The folder of a payload read from the database (removed with the reader).
        self._spool_dir: tempfile.TemporaryDirectory[str] | None = None
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

    def _items(self, prefix: str, limit: int | None = None,
               reader: _Reader | None = None) -> Iterator[Any]:
        """The items under ``prefix``. With ``limit``, the file ends there for ijson: a
        later pass over the array that comes first in the file stops where the other
        began (see `graph_runs`); the error at that artificial end is expected."""
        handle = _Reader(self._open(), limit) if reader is None else reader
        try:
            yield from ijson.items(handle, prefix, use_float=True)
        except ijson.JSONError as exc:
            if handle.cut:
                return
            raise self._not_json(exc) from None
        finally:
            handle.close()

    def graph_runs(self, folder: Path, chunk_size: int = CHUNK,
                   tick: Callable[[int], None] | None = None,
                   on_runs: Callable[[str, list[Path]], None] | None = None,
                   ) -> tuple[list[Path], list[Path]]:
        """(edge runs, node runs): `member_runs` of both arrays, in two passes of ijson.

        ijson follows one prefix per pass, and a pass tokenises the whole file, including
        the other array (measured at 100k entities: the nodes pass over the whole file
        0.87 s, over the file up to the edges 0.58 s). So the array that comes later in
        the file is read first, in full (which also proves the whole file is JSON), and
        the pass over the earlier one ends where the later one had begun: at the bytes
        ijson had read when it handed over the later array's first item. (A top-level
        object that repeats "nodes" or "edges" after the other array is read up to
        there; json.loads would keep the last of them, ijson all: no reading of such a
        document is the contract's.)"""
        header = self.header()
        first = header.get("_first")
        report = on_runs if on_runs is not None else (lambda kind, runs: None)
        if first is None:  # the header pass did not see where they begin: no shortcut
            edge_runs = self.member_runs("edge", folder, chunk_size, tick)
            report("edge", edge_runs)
            node_runs = self.member_runs("node", folder, chunk_size, tick)
            report("node", node_runs)
            return edge_runs, node_runs
        earlier = "node" if first == "nodes" else "edge"
        later = "edge" if earlier == "node" else "node"
        counted = _Reader(self._open(), None)
        later_runs = self.member_runs(later, folder, chunk_size, tick, reader=counted)
        report(later, later_runs)
        earlier_runs = self.member_runs(earlier, folder, chunk_size, tick,
                                        limit=counted.first_item_at)
        report(earlier, earlier_runs)
        if earlier == "node":
            return later_runs, earlier_runs
        return earlier_runs, later_runs

    def hashes(self, chunk_size: int = CHUNK) -> tuple[str, str, dict[str, int]]:
        """(canon-v1 hash of the whole payload, of its graph part, counts), in one
        streamed pass that also validates every item."""
        header = self.header()
        envelope = {k: header[k] for k in ("version", "generatedAt", "domains")}
        full, graph = StreamingDocumentHash(envelope), graph_hasher(header["domains"])
        counts = {"nodes": 0, "edges": 0, "domains": len(header["domains"])}
        with tempfile.TemporaryDirectory(prefix="opsgate-sort-") as tmp:
            for kind, runs in zip(("edge", "node"), self.graph_runs(Path(tmp), chunk_size),
                                  strict=True):
                if kind == "node":
                    full.start_nodes()
                    graph.start_nodes()
                for entry in merge_runs(runs):
                    full.add_bytes(entry[2])
                    graph.add_bytes(entry[2])
                    counts[f"{kind}s"] += 1
        return full.hexdigest(), graph.hexdigest(), counts

    def _not_json(self, exc: BaseException) -> DriftInputError:
        return DriftInputError(f"{self.label}: not valid JSON ({first_line(exc)[:300]})")

    def header(self, stop_early: bool = True) -> dict[str, Any]:
        """The envelope (version, generatedAt, domains), checked present with the graph's
        arrays (read once per reader: where the envelope comes last, as in a payload
        spooled from jsonb, whose keys are sorted by length, this pass reads the whole
        file).

        With ``stop_early``, the pass ends as soon as the envelope is whole and one graph
        array has begun: the rest of the file is graph, which the item passes parse (and
        refuse, if it is not JSON). An array not reached by then is checked only if its
        item pass finds nothing (`_require`): a payload lists its envelope first, and
        reading past a million nodes to see where ``edges`` begins cost a whole pass.
        """
        if stop_early and self._header is not None:
            return self._header

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
                    found.setdefault("_first", prefix)
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
        if stop_early:
            self._header = found
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
            self._refuse(prefix, kind, i, item)
        if not seen:
            self._require(prefix.split(".")[0])

    def _refuse(self, prefix: str, kind: str, i: int, item: Any) -> NoReturn:
        """Raise the error of the ``i``-th member, which the compiled validator refused:
        the pure-Python validator finds the first failure's JSON path, for the message."""
        import jsonschema  # only here, to explain a failure (not loaded before)

        slow = jsonschema.Draft202012Validator(self._schemas[kind])
        err = next(iter(slow.iter_errors(item)), None)
        if err is not None:
            path = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]"
                           for p in err.absolute_path)
            raise DriftInputError(f"{self.label} does not match its contract: "
                                  f"$['{prefix.split('.')[0]}'][{i}]{path}: "
                                  f"{err.message[:120]}")
        raise DriftInputError(f"{self.label}: {prefix.split('.')[0]}[{i}] is invalid")

    def member_runs(self, kind: str, folder: Path, chunk_size: int = CHUNK,
                    tick: Callable[[int], None] | None = None, limit: int | None = None,
                    reader: _Reader | None = None) -> list[Path]:
        """Every ``kind`` member ("node" or "edge") validated, canonicalised and written
        as sorted runs of records into ``folder`` (`extsort.spill_runs`'s format).

        `_validated`, `records` and `spill_runs` in one loop: at a million entities each
        layer of generator between them cost about a second of the payload side."""
        prefix = f"{kind}s.item"
        is_valid = self._fast[kind].is_valid
        member = node_bytes if kind == "node" else edge_bytes
        key = itemgetter("id") if kind == "node" else itemgetter("source", "target", "relation")
        runs: list[Path] = []
        chunk: list[Entry] = []
        append = chunk.append
        size = n = since_tick = 0
        for item in self._items(prefix, limit, reader):
            if n == 0 and reader is not None:
                reader.first_item_at = reader.read_bytes
            if not is_valid(item):
                self._refuse(prefix, kind, n, item)
            # Copied to its size: orjson's output sits in a buffer of at least 4 KiB.
            data = bytes(memoryview(member(item)))
            append((key(item), n, data))
            size += len(data)
            n += 1
            if len(chunk) >= chunk_size or size >= RECORD_BYTES:
                runs.append(write_sorted_run(folder / f"payload-{kind}s-{len(runs):05d}.rec",
                                             chunk))
                if tick is not None:
                    tick(len(chunk))
                since_tick += len(chunk)
                chunk.clear()
                size = 0
        if chunk:
            runs.append(write_sorted_run(folder / f"payload-{kind}s-{len(runs):05d}.rec", chunk))
        if tick is not None and n > since_tick:
            tick(n - since_tick)
        if not n:
            self._require(prefix.split(".")[0])
        return runs

    def nodes(self) -> Iterator[dict[str, Any]]:
        return self._validated("nodes.item", "node")

    def edges(self) -> Iterator[dict[str, Any]]:
        return self._validated("edges.item", "edge")


class _Reader(io.RawIOBase):
    """A binary file as ijson reads it, counting the bytes handed over, and ending early
    at ``limit`` if given (``cut`` then says that it did)."""

    def __init__(self, handle: IO[bytes], limit: int | None) -> None:
        super().__init__()
        self._handle, self._limit = handle, limit
        self.read_bytes = 0
        self.first_item_at: int | None = None
        self.cut = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._limit is not None:
            left = self._limit - self.read_bytes
            if left <= 0:
                self.cut = True
                return b""
            size = left if size < 0 else min(size, left)
        data = self._handle.read(size)
        self.read_bytes += len(data)
        return data

    def readinto(self, buffer: Any) -> int:  # pragma: no cover - ijson calls read
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()


def payload_from_file(path: str | Path) -> PayloadReader:
    p = Path(path)
    if not p.is_file():
        raise DriftInputError(f"payload file {p} does not exist")
    return PayloadReader(lambda: p.open("rb"), f"payload file {p.name}", p)


# -- the payload side ---------------------------------------------------------------------


@dataclass
class PayloadSummary:
    """What the payload side hands back: its graph's canon-v1 hash and counts, and the
    sorted runs of its records (files in the caller's folder), merged again only if the
    graph differs from the kb's."""

    domains: list[str]
    edges: int
    nodes: int
    graph_hash: str
    edge_runs: list[str]
    node_runs: list[str]
    seconds: float


_DATA = itemgetter(2)


def hash_runs(hasher: StreamingDocumentHash, runs: Iterable[Path]) -> int:
    """Feed the merge of sorted runs to ``hasher``; returns how many members."""
    return hasher.add_many(map(_DATA, merge_runs(runs)))


@contextmanager
def cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a loop over millions of members.

    Drift's loops allocate millions of small dicts, lists and tuples, all acyclic (they
    are freed by reference counting: at 100k entities, `gc.collect()` after a kb read
    with the collector paused found nothing), while a sort run of 40,000 entries stays
    alive; each collection the allocations trigger walks the live run again. Paused,
    the payload side took 4% and the kb read 8% less CPU (measured at 100k). The
    collector runs again when the block ends, as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def payload_side(reader: PayloadReader, folder: Path, chunk_size: int = CHUNK,
                 tick: Callable[[int], None] | None = None) -> PayloadSummary:
    """Validate, canonicalise and sort the payload's members into runs in ``folder``, and
    hash its graph from their merge: everything drift does with the payload, in one pass
    over it. Runs in a second process when the payload is a file of
    `drift.SECOND_PROCESS_FROM` bytes or more (`_payload_worker`)."""
    t = time.monotonic()
    header = reader.header()
    domains = list(header["domains"])
    with cycle_collector_paused():
        edge_runs, node_runs = reader.graph_runs(folder, chunk_size, tick)
        h = graph_hasher(domains)
        edges = hash_runs(h, edge_runs)
        h.start_nodes()
        nodes = hash_runs(h, node_runs)
    return PayloadSummary(domains, edges, nodes, h.hexdigest(), [str(r) for r in edge_runs],
                          [str(r) for r in node_runs], round(time.monotonic() - t, 3))
