"""Sorting a stream of JSON objects in bounded memory (external merge sort).

Knowledge drift merges the legacy payload with the ``kb_*`` tables in key order; a
payload need not be sorted, and a million-node payload must not be held in memory.
No maintained library does an external sort of JSON records with a key function
(``heapq.merge`` does the merge half, and is used), so the chunking is written here.
"""

from __future__ import annotations

import heapq
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

CHUNK = 50_000


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
