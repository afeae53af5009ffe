"""Neon -> Blob: refresh the blob fallback copy of the admin state from Postgres.

After admin edits in Neon the blob copy (``content-state.json`` and ``history.json``
under ``ADMIN_BLOB_PREFIX``) is stale, and the fallback the runbook's rollback switches
to would serve old content. This writes Postgres's admin state to the blob layout.

Repeatable: each new Neon state (a new payload hash) is applied again without
``--force``, and gets its own ledger row; the same state is a no-op. The payload is the
state *and where it goes* (the store and prefix): a database refreshed from production
carries production's ledger, whose row for this script says nothing of the local store,
so the same state bound for another store is new work, not a no-op.

The blob writes cannot be part of the database transaction, so the order keeps the
ledger honest: apply writes both files, verify reads them back through the store and
compares their canon-v1 hash with the state read from Neon, and only then does the
runner commit the ledger row. A failure in between leaves no ledger row (the blob check
then says the copy is not equal). A dry run writes nothing to the store.

Target: Vercel Blob (``BLOB_READ_WRITE_TOKEN``, ``VERCEL_BLOB_API_URL``), the folder
``OPSGATE_BLOB_DIR``, or a folder given as ``--source DIR`` (the ``file`` backend).
"""

from __future__ import annotations

from typing import Any

from opsgate.errors import ConfigError
from opsgate.migrate import MigrationContext, Plan
from opsgate.target.blob import (
    BlobStore,
    FileBlobStore,
    read_admin_state,
    write_admin_state,
)
from opsgate.verify import canon
from opsgate.verify.blob_parity import store_for

SOURCE = "neon"
TARGET = "blob"
DESCRIPTION = "Refresh the blob fallback copy of the admin state from Postgres"
TARGET_TABLES = ("admin_content_state", "admin_history")  # read and counted, never written
REPEATABLE = True

#: One statement, so the content state and the history come from one snapshot even
#: while admins edit; timestamps in canon-v1's own form.
STATE_QUERY = """
SELECT (SELECT coalesce(jsonb_object_agg(key, payload), '{}'::jsonb)
          FROM admin_content_state),
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                  'id', id, 'key', key, 'payload', payload, 'action', action,
                  'actor', actor,
                  'createdAt', to_char(created_at AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                  ORDER BY id), '[]'::jsonb)
          FROM admin_history)
"""


def _store(ctx: MigrationContext) -> BlobStore:
    return FileBlobStore(ctx.source) if ctx.source else store_for(ctx.settings)


def _destination(ctx: MigrationContext) -> str:
    """Where the state is written, without secrets: a folder's path, or the blob API and
    the store id that Vercel puts in every read-write token (``vercel_blob_rw_<store>_…``)
    and the prefix."""
    store = _store(ctx)
    prefix = ctx.settings.admin_blob_prefix
    if isinstance(store, FileBlobStore):
        return f"folder {store.root.resolve()} {prefix}"
    token = ctx.settings.require_blob_token().reveal()
    parts = token.split("_")
    store_id = parts[3] if len(parts) > 4 and token.startswith("vercel_blob_rw_") else "?"
    return f"{store.describe()} store {store_id} {prefix}"


def preconditions(ctx: MigrationContext) -> list[str]:
    problems = [f"table {t} does not exist (run the admin schema migration first)"
                for t in TARGET_TABLES if not ctx.table_exists(t)]
    if not ctx.source and not ctx.settings.blob_dir:
        try:
            ctx.settings.require_blob_token()
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def plan(ctx: MigrationContext) -> Plan:
    if not all(ctx.table_exists(t) for t in TARGET_TABLES):
        return Plan(payload=None, source_counts={}, data=({}, []))
    row = ctx.conn.execute(STATE_QUERY).fetchone()
    assert row is not None
    content: dict[str, Any] = row[0]
    history: list[dict[str, Any]] = row[1]
    return Plan(payload={"admin_state": canon.admin_state_document(content, history),
                         "destination": _destination(ctx)},
                source_counts={"content_state_keys": len(content),
                               "history_entries": len(history)},
                data=(content, history))


def apply(ctx: MigrationContext, plan: Plan) -> None:
    content, history = plan.data
    store = _store(ctx)
    if ctx.mode == "dry-run":
        ctx.log(f"dry run: would write {len(content)} content key(s) and {len(history)} "
                f"history entr(ies) to {store.describe()} under "
                f"{ctx.settings.admin_blob_prefix!r}")
        return
    written = write_admin_state(store, ctx.settings.admin_blob_prefix, content, history)
    ctx.log(f"wrote {', '.join(written)} to {store.describe()}")


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    if ctx.mode == "dry-run":
        return []
    content, history = plan.data
    state = read_admin_state(_store(ctx), ctx.settings.admin_blob_prefix)
    want = canon.admin_state_hash(content, history)
    got = canon.admin_state_hash(state.content_state, state.history)
    if got != want:
        return [f"the blob copy read back hashes {got[:12]}…, Neon's admin state "
                f"{want[:12]}…: the blob store did not keep what was written"]
    return []
