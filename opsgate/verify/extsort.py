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
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson

CHUNK = 50_000

#: A record: a sort key (a string or a tuple of strings) and an item's canonical JSON.
Record = tuple[Any, bytes]

#: A run of records is spilled at `CHUNK` records or at this many bytes of them,
#: whichever comes first: the client's memory is bounded by bytes, not by item count.
RECORD_BYTES = 16 << 20


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
                    chunk_size: int = CHUNK) -> Iterator[Any]:
    """``sorted(items, key=key)`` holding at most ``chunk_size`` items (plus one per run).

    Lazy: nothing is read before the first item is asked for. `sort_now` does the
    reading and spilling at once, for callers that must finish it before another
    resource (a database transaction) is opened.
    """
    yield from sort_now(items, key, chunk_size)


def sort_now(items: Iterable[Any], key: Callable[[Any], Any],
             chunk_size: int = CHUNK) -> Iterator[Any]:
    """Read and spill ``items`` now; return the (lazy) merge of the sorted runs."""
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
    if not runs:
        chunk.sort(key=key)
        return iter(chunk)
    assert folder is not None
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
# One line per record: the key as JSON, a tab, the canonical JSON, a newline. Neither
# JSON text can hold a raw tab or newline (RFC 8785 and orjson escape both), so the
# first tab and the line end delimit them whatever the item holds.


def _write_records(out: IO[bytes], records: Iterable[Record]) -> None:
    dumps = orjson.dumps
    out.writelines(dumps(k) + b"\t" + data + b"\n" for k, data in records)


def _read_records(handle: IO[bytes]) -> Iterator[Record]:
    loads = orjson.loads
    for line in handle:
        cut = line.index(b"\t")
        key = loads(line[:cut])
        yield (tuple(key) if type(key) is list else key), line[cut + 1: -1]


def sort_records(records: Iterable[Record], chunk_size: int = CHUNK,
                 max_bytes: int = RECORD_BYTES) -> Iterator[Record]:
    """Read and spill ``records`` now (sorted runs of at most ``chunk_size`` records or
    ``max_bytes`` bytes); return the lazy, stable merge of the runs by key. Records with
    equal keys keep their input order, as ``sorted`` keeps them."""
    chunk: list[Record] = []
    size = 0
    folder: tempfile.TemporaryDirectory[str] | None = None
    runs: list[Path] = []
    by_key = itemgetter(0)

    def spill() -> None:
        nonlocal folder
        if folder is None:
            folder = tempfile.TemporaryDirectory(prefix="opsgate-sort-")
        chunk.sort(key=by_key)
        path = Path(folder.name) / f"run-{len(runs):05d}.rec"
        with path.open("wb") as out:
            _write_records(out, chunk)
        runs.append(path)

    try:
        for record in records:
            chunk.append(record)
            size += len(record[1])
            if len(chunk) >= chunk_size or size >= max_bytes:
                spill()
                chunk, size = [], 0
        if not runs:
            chunk.sort(key=by_key)
            return iter(chunk)
        if chunk:
            spill()
            chunk = []
    except BaseException:
        if folder is not None:
            folder.cleanup()
        raise
    assert folder is not None
    return _merge_record_runs(runs, folder)


def _merge_record_runs(runs: list[Path], folder: tempfile.TemporaryDirectory[str]
                       ) -> Iterator[Record]:
    try:
        handles = [p.open("rb") for p in runs]
        try:
            yield from heapq.merge(*(_read_records(h) for h in handles), key=itemgetter(0))
        finally:
            for h in handles:
                h.close()
    finally:
        folder.cleanup()


def spill_runs(records: Iterable[Record], folder: Path, name: str, chunk_size: int = CHUNK,
               max_bytes: int = RECORD_BYTES) -> list[Path]:
    """Write ``records`` into ``folder`` as sorted runs (``<name>-00000.rec``, ...; none
    for no records), for `merge_runs` to merge later, here or in another process: the
    caller owns the folder and removes it."""
    runs: list[Path] = []
    chunk: list[Record] = []
    size = 0
    by_key = itemgetter(0)

    def spill() -> None:
        chunk.sort(key=by_key)
        path = folder / f"{name}-{len(runs):05d}.rec"
        with path.open("wb") as out:
            _write_records(out, chunk)
        runs.append(path)

    for record in records:
        chunk.append(record)
        size += len(record[1])
        if len(chunk) >= chunk_size or size >= max_bytes:
            spill()
            chunk, size = [], 0
    if chunk:
        spill()
    return runs


def merge_runs(runs: Iterable[Path]) -> Iterator[Record]:
    """The stable merge by key of runs written by `spill_runs` (one run is read as it is)."""
    handles = [p.open("rb") for p in runs]
    try:
        if len(handles) == 1:
            yield from _read_records(handles[0])
        else:
            yield from heapq.merge(*(_read_records(h) for h in handles), key=itemgetter(0))
    finally:
        for h in handles:
            h.close()


def write_sorted_run(path: Path, records: list[Record]) -> Path:
    """Sort ``records`` by key (stable) and write them to ``path`` as one run."""
    records.sort(key=itemgetter(0))
    with path.open("wb") as out:
        _write_records(out, records)
    return path


def write_run(path: Path, records: Iterable[Record]) -> None:
    """Write records already in key order to ``path`` as one run (`read_run`)."""
    with path.open("wb") as out:
        _write_records(out, records)


def read_run(path: Path) -> Iterator[Record]:
    """The records of one run, in the order they were written."""
    with path.open("rb") as handle:
        yield from _read_records(handle)


def spool_records(records: Iterable[Record]) -> Iterator[Record]:
    """`spooled` for records: copy them to an (already unlinked) temporary file now,
    return a reader of it that closes it when done."""
    handle = tempfile.TemporaryFile(prefix="opsgate-spool-")  # noqa: SIM115 - see spooled
    try:
        _write_records(handle, records)
        handle.seek(0)
    except BaseException:
        handle.close()
        raise
    return _read_records_and_close(handle)


def _read_records_and_close(handle: IO[bytes]) -> Iterator[Record]:
    with handle:
        yield from _read_records(handle)
