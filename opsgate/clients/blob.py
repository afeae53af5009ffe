"""Reading the admin state from the blob store: Vercel Blob's REST API, or a folder.

Only the subset opsgate needs: list by prefix with cursor paging, and download by the
URL the listing gives. The layout under ``ADMIN_BLOB_PREFIX`` is ``content-state.json``
(object key -> payload) and ``history.json`` (list of history entries).

``history.json`` grows with every save and is read as a stream (`BlobAdminState.entries`:
ijson over the download as it arrives), never whole; ``content-state.json`` holds one
payload per content key and is read whole.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import ijson

from opsgate.clients import web as http
from opsgate.config import in_effect
from opsgate.errors import BlobAuthError, BlobError, BlobFormatError, HttpCheckError, first_line
from opsgate.sensitive import Secret

API_VERSION = "7"
PAGE_LIMIT = 1000
CONTENT_STATE = "content-state.json"
HISTORY = "history.json"
HISTORY_FIELDS = ("id", "key", "payload", "action", "actor")


@dataclass(frozen=True)
class BlobObject:
    pathname: str
    size: int
    uploaded_at: str
    url: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"pathname": self.pathname, "size": self.size, "uploadedAt": self.uploaded_at}


class BlobStore(Protocol):
    def list(self, prefix: str) -> Iterator[BlobObject]: ...

    def read(self, obj: BlobObject) -> bytes: ...

    def stream(self, obj: BlobObject) -> AbstractContextManager[Readable]: ...

    def describe(self) -> str: ...


class Readable(Protocol):
    """What a streaming parser reads from: a binary file, or a download as it arrives."""

    def read(self, n: int = -1, /) -> bytes: ...


class VercelBlobStore:
    """Vercel Blob over its REST API (the one the official SDK speaks)."""

    def __init__(self, token: Secret, api_url: str, *, page_limit: int = PAGE_LIMIT,
                 timeout: float | None = None,
                 unreachable: dict[str, str] | None = None) -> None:
        self._token = token
        self.api_url = api_url.rstrip("/")
        self.page_limit = page_limit
        self.pages = 0
        if timeout is None:
            # Callers that do not say (the released migration 1002) still honour the
            # variable every other HTTP call of opsgate honours, env file included.
            timeout = in_effect().http_timeout
        self._client = http.client(timeout=timeout, unreachable=unreachable)

    def describe(self) -> str:
        return f"Vercel Blob at {self.api_url}"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token.reveal()}", "x-api-version": API_VERSION}

    def _check(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code in (401, 403):
            raise BlobAuthError(
                f"{what}: the blob store refused BLOB_READ_WRITE_TOKEN (HTTP {resp.status_code})"
            )

    def list(self, prefix: str) -> Iterator[BlobObject]:
        cursor: str | None = None
        pages = 0
        while True:
            params = {"prefix": prefix, "limit": str(self.page_limit)}
            if cursor:
                params["cursor"] = cursor
            try:
                resp = http.request(self._client, "GET", self.api_url + "/", what="blob list",
                                    params=params, headers=self._headers())
                self._check(resp, "blob list")
                body = http.expect_json(resp, what="blob list")
            except HttpCheckError as exc:
                raise BlobError(str(exc)) from None
            if not isinstance(body, dict) or not isinstance(body.get("blobs"), list):
                raise BlobFormatError("blob list: answer has no 'blobs' list")
            for b in body["blobs"]:
                try:
                    yield BlobObject(str(b["pathname"]), int(b["size"]), str(b["uploadedAt"]),
                                     str(b.get("downloadUrl") or b["url"]))
                except (KeyError, TypeError, ValueError):
                    raise BlobFormatError("blob list: an entry lacks pathname/size/url") from None
            pages += 1
            self.pages = pages
            if not body.get("hasMore"):
                return
            cursor = body.get("cursor")
            if not cursor or pages > 100_000:
                raise BlobFormatError("blob list: hasMore without a cursor")

    def read(self, obj: BlobObject) -> bytes:
        try:
            resp = http.request(self._client, "GET", obj.url, what=f"blob download {obj.pathname}")
        except HttpCheckError as exc:
            raise BlobError(str(exc)) from None
        self._check(resp, f"blob download {obj.pathname}")
        if resp.status_code >= 400:
            raise BlobError(f"blob download {obj.pathname}: HTTP {resp.status_code}")
        return resp.content

    @contextlib.contextmanager
    def stream(self, obj: BlobObject) -> Iterator[Readable]:
        what = f"blob download {obj.pathname}"
        try:
            with http.streamed(self._client, obj.url, what=what,
                               check=lambda resp: self._check(resp, what)) as body:
                yield body
        except HttpCheckError as exc:
            raise BlobError(str(exc)) from None


class FileBlobStore:
    """The same layout read from a folder (the ``file`` backend)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"folder {self.root}"

    def list(self, prefix: str) -> Iterator[BlobObject]:
        if not self.root.is_dir():
            raise BlobError(f"blob folder {self.root} does not exist")
        from datetime import UTC, datetime

        for p in sorted(self.root.rglob("*")):
            if p.is_file():
                rel = p.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    st = p.stat()
                    ts = datetime.fromtimestamp(st.st_mtime, UTC).isoformat()
                    yield BlobObject(rel, st.st_size, ts, str(p))

    def read(self, obj: BlobObject) -> bytes:
        return Path(obj.url).read_bytes()

    def stream(self, obj: BlobObject) -> AbstractContextManager[Readable]:
        return Path(obj.url).open("rb")


@dataclass
class AdminState:
    """The admin state as read from a blob store, validated."""

    content_state: dict[str, Any]
    history: list[dict[str, Any]]
    objects: list[BlobObject] = field(default_factory=list)


def _load_json(store: BlobStore, obj: BlobObject) -> Any:
    raw = store.read(obj)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BlobFormatError(f"{obj.pathname}: not valid JSON ({exc})") from None


def read_admin_state(store: BlobStore, prefix: str) -> AdminState:
    """Read and validate ``content-state.json`` and ``history.json`` under ``prefix``,
    both whole (the blob -> Postgres migration writes them in one transaction); the
    blob fallback check streams instead (`open_admin_state`)."""
    opened = open_admin_state(store, prefix)
    history = _load_json(store, opened.history_object)
    if not isinstance(history, list):
        raise BlobFormatError(f"{prefix}{HISTORY}: expected a list of entries")
    for i, entry in enumerate(history):
        check_entry(entry, f"{prefix}{HISTORY}[{i}]")
    return AdminState(opened.content_state, history, opened.objects)


def check_entry(entry: Any, where: str) -> dict[str, Any]:
    """A history entry as the layout requires it, or a `BlobFormatError` naming it."""
    if not isinstance(entry, dict):
        raise BlobFormatError(f"{where}: expected an object")
    lacking = [f for f in HISTORY_FIELDS if f not in entry]
    if "created_at" not in entry and "createdAt" not in entry:
        lacking.append("createdAt")
    if lacking:
        raise BlobFormatError(f"{where}: missing {', '.join(lacking)}")
    return entry


@dataclass
class BlobAdminState:
    """The admin state in a blob store, its history left in the store: `entries` reads
    it as a stream, validated entry by entry, each time it is called."""

    store: BlobStore
    prefix: str
    content_state: dict[str, Any]
    history_object: BlobObject
    objects: list[BlobObject] = field(default_factory=list)

    def entries(self) -> Iterator[dict[str, Any]]:
        name = self.prefix + HISTORY
        with self.store.stream(self.history_object) as body:
            reader = _ArrayStart(body, name)
            try:
                for i, entry in enumerate(ijson.items(reader, "item", use_float=True)):
                    yield check_entry(entry, f"{name}[{i}]")
            except ijson.JSONError as exc:
                raise BlobFormatError(f"{name}: not valid JSON ({first_line(exc)[:200]})"
                                      ) from None
            if not reader.seen:
                raise BlobFormatError(f"{name}: not valid JSON (empty)")


class _ArrayStart:
    """Passes a body through, first making sure it is a JSON array: ijson's ``item``
    prefix would read an object or a scalar as an empty history."""

    def __init__(self, inner: Readable, name: str) -> None:
        self._inner = inner
        self._name = name
        self.seen = False

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        if not self.seen and n != 0:
            head = data.lstrip()
            while not head and data:
                data = self._inner.read(n)
                head = data.lstrip()
            if head:
                self.seen = True
                if not head.startswith(b"["):
                    raise BlobFormatError(f"{self._name}: expected a list of entries")
        return data


def open_admin_state(store: BlobStore, prefix: str) -> BlobAdminState:
    """List ``prefix``, require both files, read ``content-state.json`` (validated);
    ``history.json`` is read later, streamed (`BlobAdminState.entries`)."""
    objects = list(store.list(prefix))
    by_name = {o.pathname: o for o in objects}
    missing = [n for n in (CONTENT_STATE, HISTORY) if prefix + n not in by_name]
    if missing:
        raise BlobFormatError(
            f"{store.describe()}: missing {', '.join(prefix + m for m in missing)}"
        )
    content = _load_json(store, by_name[prefix + CONTENT_STATE])
    if not isinstance(content, dict):
        raise BlobFormatError(f"{prefix}{CONTENT_STATE}: expected an object of key -> payload")
    return BlobAdminState(store, prefix, content, by_name[prefix + HISTORY], objects)


# -- writing (the blob fallback refresh) ------------------------------------------
# New functions rather than methods, at the end of the module: reads and writes evolve
# separately, and writing is only ever done by a migration under the runner.


def put_blob(store: BlobStore, pathname: str, data: bytes,
             content_type: str = "application/json") -> None:
    """Write ``data`` at ``pathname``, replacing what is there.

    Vercel Blob: ``PUT /?pathname=P`` as the official SDK sends it (``addRandomSuffix:
    false``, ``allowOverwrite: true``), so the object keeps its exact pathname. Folder:
    written beside the target and renamed over it, so a reader never sees half a file.
    """
    if isinstance(store, FileBlobStore):
        target = store.root / pathname
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data)
        partial.replace(target)
        return
    if not isinstance(store, VercelBlobStore):
        raise BlobError(f"{store.describe()}: writing is not supported")
    headers = {**store._headers(), "x-add-random-suffix": "0", "x-allow-overwrite": "1",
               "x-content-type": content_type}
    try:
        resp = http.request(store._client, "PUT", store.api_url + "/",
                            what=f"blob upload {pathname}", params={"pathname": pathname},
                            headers=headers, content=data)
    except HttpCheckError as exc:
        raise BlobError(str(exc)) from None
    store._check(resp, f"blob upload {pathname}")
    if resp.status_code >= 400:
        raise BlobError(f"blob upload {pathname}: HTTP {resp.status_code} "
                        f"{resp.text[:200]!r}")


def admin_state_files(content_state: dict[str, Any], history: list[dict[str, Any]]
                      ) -> dict[str, bytes]:
    """The blob layout of an admin state: file name -> JSON bytes (sorted keys, so the
    same state always gives the same bytes)."""
    def dump(doc: Any) -> bytes:
        return json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")

    return {CONTENT_STATE: dump(content_state), HISTORY: dump(history)}


def write_admin_state(store: BlobStore, prefix: str, content_state: dict[str, Any],
                      history: list[dict[str, Any]]) -> list[str]:
    """Write ``content-state.json`` and ``history.json`` under ``prefix``; returns the
    pathnames written. History first: a reader that sees the new content state also
    sees the history that led to it."""
    files = admin_state_files(content_state, history)
    written = []
    for name in (HISTORY, CONTENT_STATE):
        put_blob(store, prefix + name, files[name])
        written.append(prefix + name)
    return written
