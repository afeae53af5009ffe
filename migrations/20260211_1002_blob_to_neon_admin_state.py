"""Blob -> Neon: copy the admin state (content-state.json, history.json under
ADMIN_BLOB_PREFIX) into admin_content_state and admin_history.

Source: Vercel Blob (BLOB_READ_WRITE_TOKEN, VERCEL_BLOB_API_URL), or a folder with the
same layout given as ``--source DIR`` (the ``file`` backend). The payload hash is the
canon-v1 hash of the admin state read, so the blob fallback check can compare it.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from opsgate import canon
from opsgate.blob import AdminState, BlobStore, FileBlobStore, VercelBlobStore, read_admin_state
from opsgate.migrate import MigrationContext, Plan

SOURCE = "blob"
TARGET = "neon"
DESCRIPTION = "Copy the admin state from Vercel Blob into Postgres"
TARGET_TABLES = ("admin_content_state", "admin_history")


def _store(ctx: MigrationContext) -> BlobStore:
    if ctx.source:
        return FileBlobStore(ctx.source)
    return VercelBlobStore(ctx.settings.require_blob_token(), ctx.settings.vercel_blob_api_url)


def preconditions(ctx: MigrationContext) -> list[str]:
    return [f"table {t} does not exist (run the admin schema migration first)"
            for t in TARGET_TABLES if not ctx.table_exists(t)]


def plan(ctx: MigrationContext) -> Plan:
    state = read_admin_state(_store(ctx), ctx.settings.admin_blob_prefix)
    doc = canon.admin_state_document(state.content_state, state.history)
    return Plan(payload=doc,
                source_counts={"content_state_keys": len(state.content_state),
                               "history_entries": len(state.history)},
                data=state)


def apply(ctx: MigrationContext, plan: Plan) -> None:
    state: AdminState = plan.data
    with ctx.conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO admin_content_state (key, payload, version, updated_at)
            VALUES (%s, %s, 1, now())
            ON CONFLICT (key) DO UPDATE SET payload = EXCLUDED.payload,
                version = admin_content_state.version + 1, updated_at = now()
            WHERE admin_content_state.payload IS DISTINCT FROM EXCLUDED.payload
            """,
            [(k, Jsonb(v)) for k, v in state.content_state.items()],
        )
        cur.executemany(
            """
            INSERT INTO admin_history (id, key, payload, action, actor, created_at)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key, payload = EXCLUDED.payload,
                action = EXCLUDED.action, actor = EXCLUDED.actor, created_at = EXCLUDED.created_at
            WHERE (admin_history.key, admin_history.payload, admin_history.action,
                   admin_history.actor, admin_history.created_at)
                  IS DISTINCT FROM (EXCLUDED.key, EXCLUDED.payload, EXCLUDED.action,
                                    EXCLUDED.actor, EXCLUDED.created_at)
            """,
            [(h["id"], h["key"], Jsonb(h["payload"]), h["action"], h["actor"],
              canon.canonical_timestamp(h.get("createdAt", h.get("created_at"))))
             for h in state.history],
        )


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    state: AdminState = plan.data
    problems: list[str] = []
    keys = list(state.content_state)
    rows = dict(ctx.conn.execute(
        "SELECT key, payload FROM admin_content_state WHERE key = ANY(%s)", (keys,)).fetchall())
    for k in keys:
        if k not in rows:
            problems.append(f"admin_content_state lacks key {k!r}")
        elif canon.document_hash(rows[k]) != canon.document_hash(state.content_state[k]):
            problems.append(f"admin_content_state[{k!r}] differs from the blob")
    ids = [h["id"] for h in state.history]
    got: dict[Any, Any] = {r[0]: r for r in ctx.conn.execute(
        "SELECT id, key, payload, action, actor, created_at FROM admin_history "
        "WHERE id = ANY(%s)", (ids,)).fetchall()}
    for h in state.history:
        if h["id"] not in got:
            problems.append(f"admin_history lacks entry {h['id']}")
    return problems[:20]
