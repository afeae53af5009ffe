"""Sorting a stream of JSON objects in bounded memory (external merge sort).

Knowledge drift merges the legacy payload with the ``kb_*`` tables in key order; a
payload need not be sorted, and a million-node payload must not be held in memory.
No maintained library does an external sort of JSON records with a key function
(``heapq.merge`` does the merge half, and is used), so the chunking is written here.

Two shapes: JSON values sorted by a key function (`external_sorted`, `sort_now`,
`spooled`), and *records*, ``(key, canonical bytes)`` pairs (`sort_records`,
`spool_records`): knowledge drift canonicalises each item once, and from then on sorts,
compares and hashes its bytes, never parsing or encoding it again (only a changed item
is parsed, to say what changed).
"""

from __future__ import annotations

import heapq
import itertools
import json
import marshal
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

CHUNK = 40_000

#: A record: a sort key (a string or a tuple of strings) and an item's canonical JSON.
Record = tuple[Any, bytes]

#: A run of records is spilled at `CHUNK` records or at this many bytes of them,
#: whichever comes first: the client's memory is bounded by bytes, not by item count.
RECORD_BYTES = 12 << 20


def _spill(chunk: list[Any], key: Callable[[Any], Any], folder: Path, n: int) -> Path:
    chunk.sort(key=key)
    path = folder / f"run-{n:05d}.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for item in chunk:
            out.write(json.dumps(item, ensure_ascii=False))
            out.write("\n")
    return path


def _read(handle: IO[str]) -> Iterator[Any]:
    for line in handle:
        yield json.loads(line)


def external_sorted(items: Iterable[Any], key: Callable[[Any], Any],
                    chunk_size: int | None = None) -> Iterator[Any]:
    """``sorted(items, key=key)`` holding at most ``chunk_size`` items (plus one per run;
    `CHUNK` when not given, read at each call).

    Lazy: nothing is read before the first item is asked for. `sort_now` does the
    reading and spilling at once, for callers that must finish it before another
    resource (a database transaction) is opened.
    """
    yield from sort_now(items, key, chunk_size)


def sort_now(items: Iterable[Any], key: Callable[[Any], Any],
             chunk_size: int | None = None) -> Iterator[Any]:
    """Read and spill ``items`` now; return the (lazy) merge of the sorted runs."""
    if chunk_size is None:
        chunk_size = CHUNK
    chunk: list[Any] = []
    folder: tempfile.TemporaryDirectory[str] | None = None
    runs: list[Path] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= chunk_size:
            if folder is None:
                folder = tempfile.TemporaryDirectory(prefix="opsgate-sort-")
            runs.append(_spill(chunk, key, Path(folder.name), len(runs)))
            chunk = []
    if folder is None:  # made with the first run: nothing was spilled
        chunk.sort(key=key)
        return iter(chunk)
    if chunk:
        runs.append(_spill(chunk, key, Path(folder.name), len(runs)))
    return _merge_runs(runs, key, folder)


def _merge_runs(runs: list[Path], key: Callable[[Any], Any],
                folder: tempfile.TemporaryDirectory[str]) -> Iterator[Any]:
    try:
        handles = [p.open(encoding="utf-8") for p in runs]
        try:
            yield from heapq.merge(*(_read(h) for h in handles), key=key)
        finally:
            for h in handles:
                h.close()
    finally:
        folder.cleanup()


def spooled(items: Iterable[Any]) -> Iterator[Any]:
    """Copy ``items`` (JSON values) to a temporary file now and return a reader of it.

    Knowledge drift reads the kb tables this way: the database transaction then lasts
    exactly as long as the rows take to arrive, and is never idle while the client
    merges (an ``idle_in_transaction_session_timeout`` would end it).
    """
    # Handed on to the reader, which closes it: no `with` can span both.
    handle = tempfile.TemporaryFile(mode="w+", encoding="utf-8", prefix="opsgate-spool-")  # noqa: SIM115
    try:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False))
            handle.write("\n")
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return _read_and_close(handle)


def _read_and_close(handle: IO[str]) -> Iterator[Any]:
    with handle:
        yield from _read(handle)


# -- records: (key, canonical bytes) ---------------------------------------------------
#
# On disk and in the merges a record travels as an *entry* ``(key, seq, data)``: ``seq``
# is its position in the input, so plain tuple order (no key function) is the stable
# order by key, and two entries never compare their bytes. A run file is a sequence of
# blocks, each a 4-byte little-endian length and a `marshal` dump of up to
# `BLOCK_ENTRIES` entries. Hand-written because the per-record cost is the point: the
# first format (a JSON line per record, the key parsed back with orjson, merged with a
# key function) cost about 2.3 µs per record to read back and merge; marshal reads a
# block of tuples in C, and heapq.merge without a key compares the tuples in C. marshal
# is safe only for data this process or its sibling wrote, which is all these files
# hold: they live in a private temporary folder for the length of one run, written and
# read by the same interpreter.

#: ``(key, seq, canonical bytes)``: see above.
Entry = tuple[Any, int, bytes]

#: Entries per block: a merge holds one block per run (a few hundred KiB at most).
BLOCK_ENTRIES = 128

_LENGTH = struct.Struct("<I")


def _write_entries(out: IO[bytes], entries: Iterable[Entry],
                   on_block: Callable[[list[Entry]], None] | None = None) -> None:
    dumps, pack = marshal.dumps, _LENGTH.pack
    if isinstance(entries, list) and on_block is None:
        for i in range(0, len(entries), BLOCK_ENTRIES):
            block = dumps(entries[i:i + BLOCK_ENTRIES])
            out.write(pack(len(block)))
            out.write(block)
        return
    it = iter(entries)
    while batch := list(itertools.islice(it, BLOCK_ENTRIES)):
        if on_block is not None:
            on_block(batch)
        block = dumps(batch)
        out.write(pack(len(block)))
        out.write(block)


def read_run(path: Path) -> Iterator[Entry]:
    """The entries of one run, in the order they were written."""
    loads, unpack, size = marshal.loads, _LENGTH.unpack, _LENGTH.size
    with path.open("rb") as f:
        while header := f.read(size):
            (n,) = unpack(header)
            yield from loads(f.read(n))


def write_run(path: Path, entries: Iterable[Entry],
              on_block: Callable[[list[Entry]], None] | None = None) -> None:
    """Write entries already in order to ``path`` as one run (`read_run`); ``on_block``
    sees each block of them on its way (drift hashes the kb's entries so, a block at a
    time)."""
    with path.open("wb") as out:
        _write_entries(out, entries, on_block)


def write_sorted_run(path: Path, entries: list[Entry]) -> Path:
    """Sort ``entries`` (in place; stable by key through their ``seq``) and write them
    to ``path`` as one run."""
    entries.sort()
    write_run(path, entries)
    return path


def merge_runs(runs: Iterable[Path]) -> Iterator[Entry]:
    """The merge of sorted runs (one run is read as it is)."""
    readers = [read_run(p) for p in runs]
    if len(readers) == 1:
        return readers[0]
    return heapq.merge(*readers)


def sort_records(records: Iterable[Record], chunk_size: int = CHUNK,
                 max_bytes: int = RECORD_BYTES) -> Iterator[Record]:
    """Read and spill ``records`` now (sorted runs of at most ``chunk_size`` records or
    ``max_bytes`` bytes); return the lazy, stable merge of the runs by key. Records with
    equal keys keep their input order, as ``sorted`` keeps them."""
    folder = tempfile.TemporaryDirectory(prefix="opsgate-sort-")
    try:
        runs = spill_runs(((k, i, data) for i, (k, data) in enumerate(records)),
                          Path(folder.name), "run", chunk_size, max_bytes)
    except BaseException:
        folder.cleanup()
        raise
    return _pairs_then_cleanup(runs, folder)


def _pairs_then_cleanup(runs: list[Path], folder: tempfile.TemporaryDirectory[str]
                        ) -> Iterator[Record]:
    try:
        for key, _, data in merge_runs(runs):
            yield key, data
    finally:
        folder.cleanup()


def spill_runs(entries: Iterable[Entry], folder: Path, name: str, chunk_size: int = CHUNK,
               max_bytes: int = RECORD_BYTES) -> list[Path]:
    """Write ``entries`` into ``folder`` as sorted runs (``<name>-00000.rec``, ...; none
    for no entries), for `merge_runs` to merge later, here or in another process: the
    caller owns the folder and removes it."""
    runs: list[Path] = []
    chunk: list[Entry] = []
    size = 0
    for entry in entries:
        chunk.append(entry)
        size += len(entry[2])
        if len(chunk) >= chunk_size or size >= max_bytes:
            runs.append(write_sorted_run(folder / f"{name}-{len(runs):05d}.rec", chunk))
            chunk, size = [], 0
    if chunk:
        runs.append(write_sorted_run(folder / f"{name}-{len(runs):05d}.rec", chunk))
    return runs


def spool_records(records: Iterable[Record]) -> Iterator[Record]:
    """Copy records to a temporary file now; return a reader of it (which removes it)."""
    folder = tempfile.TemporaryDirectory(prefix="opsgate-spool-")
    path = Path(folder.name) / "spool.rec"
    try:
        write_run(path, ((k, i, data) for i, (k, data) in enumerate(records)))
    except BaseException:
        folder.cleanup()
        raise
    return _pairs_then_cleanup([path], folder)
