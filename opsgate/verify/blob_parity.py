"""Blob fallback verification: the blob copy of the admin state is usable, and equal
(canon-v1) to what Postgres holds. On a mismatch, name the keys and history entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from opsgate.config import Settings
from opsgate.target.blob import AdminState, BlobStore, FileBlobStore, VercelBlobStore
from opsgate.verify import canon
from opsgate.verify.evidence import MAX_EXAMPLES, value_differences


def store_for(settings: Settings) -> BlobStore:
    if settings.blob_dir:
        return FileBlobStore(settings.blob_dir)
    return VercelBlobStore(settings.require_blob_token(), settings.vercel_blob_api_url,
                           timeout=settings.http_timeout)


def read_neon_state(conn: psycopg.Connection[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    content = dict(conn.execute("SELECT key, payload FROM admin_content_state").fetchall())
    history = [
        {"id": r[0], "key": r[1], "payload": r[2], "action": r[3], "actor": r[4],
         "created_at": r[5]}
        for r in conn.execute("SELECT id, key, payload, action, actor, created_at "
                              "FROM admin_history ORDER BY id")
    ]
    return content, history


@dataclass
class ParityResult:
    blob_hash: str
    neon_hash: str | None
    blob_counts: dict[str, int]
    neon_counts: dict[str, int] = field(default_factory=dict)
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


def compare(state: AdminState, conn: psycopg.Connection[Any]) -> ParityResult:
    blob_doc = canon.admin_state_document(state.content_state, state.history)
    content, history = read_neon_state(conn)
    neon_doc = canon.admin_state_document(content, history)
    result = ParityResult(
        canon.document_hash(blob_doc), canon.document_hash(neon_doc),
        {"content_state_keys": len(state.content_state), "history_entries": len(state.history)},
        {"content_state_keys": len(content), "history_entries": len(history)},
    )
    bk, nk = blob_doc["contentState"], neon_doc["contentState"]
    result.differences["keys missing in blob"] = sorted(set(nk) - set(bk))
    result.differences["keys missing in neon"] = sorted(set(bk) - set(nk))
    result.differences["keys with a different payload"] = _changed(bk, nk)
    bh = {str(h["id"]): h for h in blob_doc["history"]}
    nh = {str(h["id"]): h for h in neon_doc["history"]}
    result.differences["history entries missing in blob"] = sorted(set(nh) - set(bh))
    result.differences["history entries missing in neon"] = sorted(set(bh) - set(nh))
    result.differences["history entries that differ"] = _changed(bh, nh)
    return result


def _changed(blob: dict[str, Any], neon: dict[str, Any]) -> list[str]:
    """Members on both sides whose canon-v1 hashes differ, each with the JSON paths that
    differ and both values (bounded)."""
    return [f"{k} ({'; '.join(value_differences(blob[k], neon[k], 'blob', 'neon'))})"
            for k in sorted(set(blob) & set(neon))
            if canon.document_hash(blob[k]) != canon.document_hash(neon[k])]
