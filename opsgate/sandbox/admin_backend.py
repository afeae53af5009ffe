"""Where the sandbox's reference app keeps its admin state: Postgres or the blob
fallback, whichever ``ADMIN_STORAGE_BACKEND`` the *serving deployment* was built with
(`opsgate.sandbox.vercel_deploys`), as on Vercel. Editing the variable without a
redeploy changes nothing here either; that is the mistake the rollback command guards
against, so the sandbox must make it visible.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg

from opsgate.clients.blob import CONTENT_STATE, HISTORY


class _Stored(Protocol):
    data: bytes


class Bucket(Protocol):
    """What is used of `opsgate.sandbox.blob_server.BlobBucket` (which imports the
    reference app, so it is not imported here)."""

    def get(self, pathname: str) -> _Stored | None: ...

    def put(self, pathname: str, data: bytes, content_type: str = ...) -> Any: ...


class AdminBackend:
    """The app's admin storage: which one is live, and its reads and writes."""

    def __init__(self, bucket: Bucket, prefix: str, backend: Callable[[], str]) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._backend = backend
        self._lock = threading.Lock()

    def name(self) -> str:
        return self._backend()

    def _blob(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        content = self.bucket.get(self.prefix + CONTENT_STATE)
        history = self.bucket.get(self.prefix + HISTORY)
        return (json.loads(content.data) if content else {},
                json.loads(history.data) if history else [])

    def blob_counts(self) -> tuple[int, int]:
        content, history = self._blob()
        return len(content), len(history)

    def save_blob(self, key: str, payload: Any, actor: str) -> int:
        """An admin save on the fallback: the content state and one history entry, as
        the app's blob adapter writes them."""
        with self._lock:
            content, history = self._blob()
            ident = max((int(h["id"]) for h in history), default=0) + 1
            content[key] = payload
            history.append({"id": ident, "key": key, "payload": payload, "action": "save",
                            "actor": actor, "createdAt": _now()})
            self.bucket.put(self.prefix + HISTORY, json.dumps(history).encode())
            self.bucket.put(self.prefix + CONTENT_STATE, json.dumps(content).encode())
            return ident

    @staticmethod
    def save_neon(conn: psycopg.Connection[Any], key: str, payload: Any, actor: str) -> int:
        """The same save on Postgres, in one transaction."""
        with conn.transaction():
            conn.execute("LOCK TABLE admin_history IN EXCLUSIVE MODE")
            row = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM admin_history").fetchone()
            ident = int(row[0]) if row else 1
            doc = json.dumps(payload)
            conn.execute("INSERT INTO admin_content_state (key, payload) VALUES (%s, %s) "
                         "ON CONFLICT (key) DO UPDATE SET payload = EXCLUDED.payload, "
                         "version = admin_content_state.version + 1, updated_at = now()",
                         (key, doc))
            conn.execute("INSERT INTO admin_history (id, key, payload, action, actor) "
                         "VALUES (%s, %s, %s, 'save', %s)", (ident, key, doc, actor))
            return ident


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
