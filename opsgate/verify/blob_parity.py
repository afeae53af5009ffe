"""Blob fallback verification: the blob copy of the admin state is usable, and equal
(canon-v1) to what Postgres holds. On a mismatch, name the keys and history entries.

The history is the part that grows (one entry per save, for years): both copies are
streamed and merged in id order, so the client's memory does not grow with it."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from opsgate.clients import db
from opsgate.clients.blob import BlobAdminState, BlobStore, FileBlobStore, VercelBlobStore
from opsgate.config import Settings
from opsgate.verify import canon
from opsgate.verify.evidence import MAX_EXAMPLES, value_differences
from opsgate.verify.extsort import external_sorted


def store_for(settings: Settings, unreachable: dict[str, str] | None = None) -> BlobStore:
    """The blob store the settings name. ``unreachable``: the run's record of origins that
    could not be connected to (`web.client`), so a blob API that refused one check fails
    the next at once, naming the first failure, instead of waiting out its retries again
    (one that connects and then does not answer is slow, not unreachable)."""
    if settings.blob_dir:
        return FileBlobStore(settings.blob_dir)
    return VercelBlobStore(settings.require_blob_token(), settings.vercel_blob_api_url,
                           timeout=settings.http_timeout, unreachable=unreachable)


def read_neon_state(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The whole admin state from Postgres (small states; `compare` streams instead).
    Inside the caller's transaction, or a read-only one of its own: the history's
    server-side cursor needs one (an autocommit connection has none)."""
    with db.reading(conn):
        return _neon_content(conn), list(_neon_history(conn))


def _neon_content(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    return dict(conn.execute("SELECT key, payload FROM admin_content_state").fetchall())


def _neon_history(conn: psycopg.Connection[Any]) -> Generator[dict[str, Any], None, None]:
    """``admin_history`` in id order through a server-side cursor, a batch at a time."""
    with conn.cursor(name="opsgate_admin_history") as cur:
        cur.itersize = HISTORY_BATCH
        cur.execute("SELECT id, key, payload, action, actor, created_at "
                    "FROM admin_history ORDER BY id")
        for r in cur:
            yield {"id": r[0], "key": r[1], "payload": r[2], "action": r[3], "actor": r[4],
                   "created_at": r[5]}


#: Rows of admin_history fetched per round trip.
HISTORY_BATCH = 5_000


@dataclass
class ParityResult:
    blob_hash: str
    neon_hash: str | None
    blob_counts: dict[str, int]
    neon_counts: dict[str, int] = field(default_factory=dict)
    #: Bounded examples per kind (one more than shown, so a line knows there are more).
    differences: dict[str, list[str]] = field(default_factory=dict)

    @property
    def match(self) -> bool:
        return self.neon_hash is not None and self.blob_hash == self.neon_hash

    def lines(self) -> list[str]:
        out = []
        for kind, items in self.differences.items():
            if items:
                more = " …" if len(items) > MAX_EXAMPLES else ""
                out.append(f"{kind}: {', '.join(items[:MAX_EXAMPLES])}{more}")
        return out


def _entry(h: dict[str, Any]) -> dict[str, Any]:
    """A history entry as the canon-v1 admin state document holds it."""
    entry: dict[str, Any] = canon.admin_state_document({}, [h])["history"][0]
    return entry


def _order(entry: dict[str, Any]) -> tuple[str, Any]:
    """The canon-v1 order of history entries (`canon.admin_state_document`)."""
    return (str(type(entry["id"])), entry["id"])


class StateHash:
    """canon-v1 hash of ``{"contentState": ..., "history": [...]}`` with the entries fed
    one at a time in canon-v1 order: RFC 8785 writes an object's keys sorted
    ("contentState" before "history") and an array as its members joined by commas, so
    the pieces hash to exactly the bytes of the whole document's canonical form."""

    def __init__(self, content_state: dict[str, Any]) -> None:
        self._h = hashlib.sha256(b'{"contentState":' + canon.canonical_json(content_state)
                                 + b',"history":[')
        self._first = True

    def add(self, entry: dict[str, Any]) -> bytes:
        data = canon.canonical_json(entry)
        self._h.update(data if self._first else b"," + data)
        self._first = False
        return data

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(b"]}")
        return h.hexdigest()


T = TypeVar("T")


class _Unsorted(Exception):
    pass


def _in_canon_order(entries: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    last: tuple[str, Any] | None = None
    for h in entries:
        entry = _entry(h)
        key = _order(entry)
        if last is not None and key < last:
            raise _Unsorted
        last = key
        yield entry


def blob_entries(state: BlobAdminState, *, in_order: bool) -> Iterator[dict[str, Any]]:
    """The blob history's entries in canon-v1 order, streamed. ``in_order``: trust the
    file's order (the app appends in id order) and raise `_Unsorted` at the first entry
    out of order; otherwise read through an external sort, still in bounded memory."""
    if in_order:
        return _in_canon_order(state.entries())
    return external_sorted((_entry(h) for h in state.entries()), key=_order)


def _optimistic(work: Callable[[bool], T]) -> T:
    """Run ``work`` trusting the blob history's order; if it is not in order, run it
    again through the sort (a second download, only for such a history)."""
    try:
        return work(True)
    except _Unsorted:
        return work(False)


def blob_hash(state: BlobAdminState) -> tuple[str, int]:
    """The blob admin state's canon-v1 hash and its number of history entries."""

    def work(in_order: bool) -> tuple[str, int]:
        hasher = StateHash(state.content_state)
        n = 0
        for entry in blob_entries(state, in_order=in_order):
            hasher.add(entry)
            n += 1
        return hasher.hexdigest(), n

    return _optimistic(work)


def compare(state: BlobAdminState, conn: psycopg.Connection[Any]) -> ParityResult:
    """Blob against Postgres in one merge of both histories in id order: each side
    streamed (ijson over the download, a server-side cursor), neither held whole; the
    hashes computed on the way, the differences kept as bounded examples."""
    content = _neon_content(conn)
    return _optimistic(lambda in_order: _compare(state, conn, content, in_order))


def _compare(state: BlobAdminState, conn: psycopg.Connection[Any], content: dict[str, Any],
             in_order: bool) -> ParityResult:
    # As read: the hashes put each side in canon-v1 form themselves, and only members
    # that differ are normalised, for their differing paths (`_changed`); normalising
    # both whole states first cost twice the hashing of them.
    bk, nk = state.content_state, content
    blob_h, neon_h = StateHash(bk), StateHash(nk)
    diffs: dict[str, list[str]] = {kind: [] for kind in (
        "keys missing in blob", "keys missing in neon", "keys with a different payload",
        "history entries missing in blob", "history entries missing in neon",
        "history entries that differ")}
    diffs["keys missing in blob"] = sorted(set(nk) - set(bk))
    diffs["keys missing in neon"] = sorted(set(bk) - set(nk))
    diffs["keys with a different payload"] = _changed(bk, nk)
    counts = {"blob": 0, "neon": 0}
    with contextlib.closing(_neon_history(conn)) as rows:
        for kind, text in _compared(_merge(blob_entries(state, in_order=in_order),
                                           (_entry(h) for h in rows)), blob_h, neon_h, counts):
            if len(diffs[kind]) <= MAX_EXAMPLES:  # bounded: one more marks "…"
                diffs[kind].append(text)
    return ParityResult(
        blob_h.hexdigest(), neon_h.hexdigest(),
        {"content_state_keys": len(bk), "history_entries": counts["blob"]},
        {"content_state_keys": len(nk), "history_entries": counts["neon"]},
        diffs,
    )


def _compared(pairs: Iterator[tuple[dict[str, Any] | None, dict[str, Any] | None]],
              blob_h: StateHash, neon_h: StateHash, counts: dict[str, int]
              ) -> Iterator[tuple[str, str]]:
    """Hash both sides' entries as they pass; yield (kind, example) per difference."""
    for b, n in pairs:
        if b is not None:
            bb = blob_h.add(b)
            counts["blob"] += 1
        if n is not None:
            nb = neon_h.add(n)
            counts["neon"] += 1
        if n is None:
            yield "history entries missing in neon", str(b["id"])  # type: ignore[index]
        elif b is None:
            yield "history entries missing in blob", str(n["id"])
        elif bb != nb:
            yield "history entries that differ", _differ(str(b["id"]), b, n)


def _merge(blob: Iterator[dict[str, Any]], neon: Iterator[dict[str, Any]]
           ) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """Pairs of entries with the same id from two streams in canon-v1 order (None for
    the side that lacks it)."""
    b, n = next(blob, None), next(neon, None)
    while b is not None or n is not None:
        if n is None or (b is not None and _order(b) < _order(n)):
            yield b, None
            b = next(blob, None)
        elif b is None or _order(n) < _order(b):
            yield None, n
            n = next(neon, None)
        else:
            yield b, n
            b, n = next(blob, None), next(neon, None)


def _differ(key: str, blob: Any, neon: Any) -> str:
    """The member's differing JSON paths, in canon-v1 form (sets in order)."""
    paths = value_differences(canon.normalize(blob), canon.normalize(neon), "blob", "neon")
    return f"{key} ({'; '.join(paths)})"


def _changed(blob: dict[str, Any], neon: dict[str, Any]) -> list[str]:
    """Members on both sides whose canon-v1 hashes differ, each with the JSON paths that
    differ and both values (bounded)."""
    return [_differ(k, blob[k], neon[k]) for k in sorted(set(blob) & set(neon))
            if canon.document_hash(blob[k]) != canon.document_hash(neon[k])]
