"""A local blob server that speaks the Vercel Blob REST subset opsgate and the official
SDK use: ``GET /?prefix&limit&cursor`` (list, cursor paging), ``PUT /<pathname>``
(put), ``POST /delete``, and downloads at the URL a listing returns. Bearer token
required on the API routes; downloads are public, as Vercel's are.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsgate.sandbox.reference_app import Faults
from opsgate.sensitive import Secret


@dataclass
class StoredBlob:
    pathname: str
    data: bytes
    content_type: str
    uploaded_at: str


class BlobBucket:
    """Thread-safe in-memory objects, listed in pathname order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[str, StoredBlob] = {}

    def put(self, pathname: str, data: bytes, content_type: str = "application/json") -> StoredBlob:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        blob = StoredBlob(pathname, data, content_type, now)
        with self._lock:
            self._blobs[pathname] = blob
        return blob

    def get(self, pathname: str) -> StoredBlob | None:
        with self._lock:
            return self._blobs.get(pathname)

    def delete(self, pathname: str) -> None:
        with self._lock:
            self._blobs.pop(pathname, None)

    def listing(self, prefix: str) -> list[StoredBlob]:
        with self._lock:
            return sorted((b for p, b in self._blobs.items() if p.startswith(prefix)),
                          key=lambda b: b.pathname)


def _cursor(pathname: str) -> str:
    return base64.urlsafe_b64encode(pathname.encode()).decode()


def _uncursor(cursor: str) -> str:
    return base64.urlsafe_b64decode(cursor.encode()).decode()


@dataclass
class _BlobApi:
    """What the blob server's routes share: the token, the objects, the server's own
    URL (for each blob's ``url``) and the fault switches."""

    token: Secret
    bucket: BlobBucket
    public_base: str
    faults: Faults

    def misbehave(self) -> Response | None:
        if "blob-500" in self.faults.active:
            return JSONResponse({"error": {"code": "internal"}}, status_code=503)
        if "blob-hang" in self.faults.active:
            time.sleep(self.faults.hang_seconds)
        return None

    def authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {self.token.reveal()}".encode())

    def describe(self, b: StoredBlob) -> dict[str, Any]:
        url = f"{self.public_base}/files/{b.pathname}"
        return {"url": url, "downloadUrl": url + "?download=1", "pathname": b.pathname,
                "size": len(b.data), "uploadedAt": b.uploaded_at,
                "contentType": b.content_type, "contentDisposition": "inline"}


def _denied() -> Response:
    return JSONResponse({"error": {"code": "forbidden",
                                   "message": "Access denied, please provide a valid token"}},
                        status_code=401)


def _list_blobs(api: _BlobApi, request: Request) -> Response:
    api.faults.served["blob list"] += 1
    if not api.authorized(request):
        return _denied()
    bad = api.misbehave()
    if bad is not None:
        return bad
    max_page = api.faults.blob_page_limit
    prefix = request.query_params.get("prefix", "")
    try:
        limit = max(1, min(int(request.query_params.get("limit", max_page)), max_page))
    except ValueError:
        return JSONResponse({"error": {"code": "bad_request", "message": "limit"}}, 400)
    items = api.bucket.listing(prefix)
    cursor = request.query_params.get("cursor")
    if cursor:
        after = _uncursor(cursor)
        items = [b for b in items if b.pathname > after]
    page, more = items[:limit], len(items) > limit
    body: dict[str, Any] = {"blobs": [api.describe(b) for b in page], "hasMore": more}
    if more:
        body["cursor"] = _cursor(page[-1].pathname)
    return JSONResponse(body)


async def _put_blob(api: _BlobApi, request: Request) -> Response:
    """``PUT /?pathname=P`` (SDK 1.x and later) or ``PUT /P`` (earlier SDKs)."""
    if not api.authorized(request):
        return _denied()
    pathname = request.query_params.get("pathname") or request.path_params.get("pathname")
    if not pathname:
        return JSONResponse({"error": {"code": "bad_request",
                                       "message": "pathname is required"}}, 400)
    if request.headers.get("x-add-random-suffix") == "1":
        stem, dot, ext = pathname.rpartition(".")
        suffix = secrets.token_hex(8)
        pathname = f"{stem}-{suffix}.{ext}" if dot else f"{pathname}-{suffix}"
    elif (api.bucket.get(pathname) is not None
          and request.headers.get("x-allow-overwrite") != "1"):
        return JSONResponse({"error": {"code": "bad_request", "message":
                                       "This blob already exists, use `allowOverwrite: true`"
                                       " if you want to overwrite it."}}, 400)
    data = await request.body()
    ctype = request.headers.get("x-content-type") or "application/octet-stream"
    blob = api.bucket.put(pathname, data, ctype)
    return JSONResponse(api.describe(blob))


async def _delete_blobs(api: _BlobApi, request: Request) -> Response:
    if not api.authorized(request):
        return _denied()
    body = json.loads(await request.body() or b"{}")
    for url in body.get("urls", []):
        api.bucket.delete(str(url).split("/files/", 1)[-1])
    return JSONResponse({})


def _download(api: _BlobApi, request: Request) -> Response:
    bad = api.misbehave()
    if bad is not None:
        return bad
    blob = api.bucket.get(request.path_params["pathname"])
    if blob is None:
        return Response("not found", status_code=404)
    return Response(blob.data, media_type=blob.content_type)


def create_blob_app(token: Secret, bucket: BlobBucket, public_base: str,
                    faults: Faults | None = None) -> Starlette:
    """``public_base`` is this server's own URL, used in the ``url`` of each blob.
    ``faults`` (shared with the reference API) can make it fail or page small. The
    routes are module-level functions bound to the server's state."""
    api = _BlobApi(token, bucket, public_base, faults or Faults())
    return Starlette(routes=[
        Route("/", partial(_list_blobs, api), methods=["GET"]),
        Route("/", partial(_put_blob, api), methods=["PUT"]),
        Route("/delete", partial(_delete_blobs, api), methods=["POST"]),
        Route("/files/{pathname:path}", partial(_download, api), methods=["GET"]),
        Route("/{pathname:path}", partial(_put_blob, api), methods=["PUT"]),
    ])
