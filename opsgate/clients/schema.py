"""The target database's tables (the app's data contract): DDL and table lists.

Column lists are the contract; types, keys and indexes are opsgate's choice. Child
tables cascade on delete so a backfill can replace the graph in one statement.
"""

from __future__ import annotations

from typing import Any

import psycopg

from opsgate.migrate.ledger import LEDGER_DDL

ADMIN_TABLES = ("admin_content_state", "admin_history", "admin_migrations")
KB_TABLES = (
    "kb_entities", "kb_entity_tags", "kb_edges", "kb_media_objects", "kb_media_derivatives",
    "kb_workflows", "kb_workflow_steps", "kb_provenance_runs", "kb_entity_sources",
)
CONTRACT_TABLES = ADMIN_TABLES + KB_TABLES

#: The admin overview's counts (the app's GET /api/admin/overview) and their tables.
OVERVIEW_COUNTS: tuple[tuple[str, str], ...] = (
    ("nodes", "kb_entities"), ("edges", "kb_edges"),
    ("admin_content_state", "admin_content_state"), ("admin_history", "admin_history"),
    ("admin_migrations", "admin_migrations"),
)

ADMIN_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS admin_content_state (
        key        text PRIMARY KEY,
        payload    jsonb NOT NULL,
        version    integer NOT NULL DEFAULT 1,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS admin_history (
        id         bigint PRIMARY KEY,
        key        text NOT NULL,
        payload    jsonb,
        action     text NOT NULL,
        actor      text,
        created_at timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS admin_history_key_idx ON admin_history (key, created_at)",
    LEDGER_DDL.strip(),
)

KB_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS kb_entities (
        id         text PRIMARY KEY,
        kind       text NOT NULL,
        slug       text NOT NULL UNIQUE,
        title      text NOT NULL,
        domain     text NOT NULL,
        summary    text NOT NULL DEFAULT '',
        body       jsonb NOT NULL DEFAULT '{}'::jsonb,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS kb_entities_kind_idx ON kb_entities (kind)",
    "CREATE INDEX IF NOT EXISTS kb_entities_domain_idx ON kb_entities (domain)",
    """CREATE TABLE IF NOT EXISTS kb_entity_tags (
        entity_id text NOT NULL REFERENCES kb_entities (id) ON DELETE CASCADE,
        tag       text NOT NULL,
        PRIMARY KEY (entity_id, tag)
    )""",
    "CREATE INDEX IF NOT EXISTS kb_entity_tags_tag_idx ON kb_entity_tags (tag)",
    """CREATE TABLE IF NOT EXISTS kb_edges (
        id        bigserial PRIMARY KEY,
        source_id text NOT NULL REFERENCES kb_entities (id) ON DELETE CASCADE,
        target_id text NOT NULL REFERENCES kb_entities (id) ON DELETE CASCADE,
        relation  text NOT NULL,
        weight    double precision NOT NULL DEFAULT 1,
        UNIQUE (source_id, target_id, relation)
    )""",
    "CREATE INDEX IF NOT EXISTS kb_edges_target_idx ON kb_edges (target_id)",
    """CREATE TABLE IF NOT EXISTS kb_media_objects (
        id        bigserial PRIMARY KEY,
        entity_id text NOT NULL REFERENCES kb_entities (id) ON DELETE CASCADE,
        url       text NOT NULL,
        mime      text NOT NULL,
        bytes     bigint NOT NULL CHECK (bytes >= 0),
        sha256    text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$')
    )""",
    "CREATE INDEX IF NOT EXISTS kb_media_objects_entity_idx ON kb_media_objects (entity_id, id)",
    """CREATE TABLE IF NOT EXISTS kb_media_derivatives (
        id       bigserial PRIMARY KEY,
        media_id bigint NOT NULL REFERENCES kb_media_objects (id) ON DELETE CASCADE,
        variant  text NOT NULL,
        url      text NOT NULL,
        width    integer,
        height   integer
    )""",
    "CREATE INDEX IF NOT EXISTS kb_media_derivatives_media_idx "
    "ON kb_media_derivatives (media_id, id)",
    """CREATE TABLE IF NOT EXISTS kb_workflows (
        id        bigserial PRIMARY KEY,
        entity_id text NOT NULL REFERENCES kb_entities (id) ON DELETE CASCADE,
        name      text NOT NULL,
        status    text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kb_workflow_steps (
        id          bigserial PRIMARY KEY,
        workflow_id bigint NOT NULL REFERENCES kb_workflows (id) ON DELETE CASCADE,
        position    integer NOT NULL,
        name        text NOT NULL,
        status      text NOT NULL,
        UNIQUE (workflow_id, position)
    )""",
    """CREATE TABLE IF NOT EXISTS kb_provenance_runs (
        id          bigserial PRIMARY KEY,
        source      text NOT NULL,
        input_hash  text NOT NULL,
        started_at  timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        status      text NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kb_entity_sources (
        entity_id         text NOT NULL REFERENCES kb_entities (id) ON DELETE CASCADE,
        provenance_run_id bigint NOT NULL REFERENCES kb_provenance_runs (id) ON DELETE CASCADE,
        source_ref        text NOT NULL,
        PRIMARY KEY (entity_id, provenance_run_id, source_ref)
    )""",
)

#: Columns each contract table must have (the contract itself; checked by preflight).
CONTRACT_COLUMNS: dict[str, tuple[str, ...]] = {
    "admin_content_state": ("key", "payload", "version", "updated_at"),
    "admin_history": ("id", "key", "payload", "action", "actor", "created_at"),
    "admin_migrations": ("id", "name", "mode", "status", "payload_hash", "script_checksum",
                         "source_counts", "target_counts", "reason", "applied_by",
                         "started_at", "finished_at"),
    "kb_entities": ("id", "kind", "slug", "title", "domain", "summary", "body", "created_at",
                    "updated_at"),
    "kb_entity_tags": ("entity_id", "tag"),
    "kb_edges": ("id", "source_id", "target_id", "relation", "weight"),
    "kb_media_objects": ("id", "entity_id", "url", "mime", "bytes", "sha256"),
    "kb_media_derivatives": ("id", "media_id", "variant", "url", "width", "height"),
    "kb_workflows": ("id", "entity_id", "name", "status"),
    "kb_workflow_steps": ("id", "workflow_id", "position", "name", "status"),
    "kb_provenance_runs": ("id", "source", "input_hash", "started_at", "finished_at", "status"),
    "kb_entity_sources": ("entity_id", "provenance_run_id", "source_ref"),
}


def missing_columns(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> list[str]:
    """'table' or 'table.column' for everything of the contract the database lacks."""
    cur = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = ANY(%s)", (list(tables),)
    )
    have: dict[str, set[str]] = {}
    for t, c in cur.fetchall():
        have.setdefault(t, set()).add(c)
    out = []
    for t in tables:
        if t not in have:
            out.append(t)
            continue
        out.extend(f"{t}.{c}" for c in CONTRACT_COLUMNS[t] if c not in have[t])
    return out
