"""Legacy payload -> kb_*: backfill the knowledge graph from the constellation payload.

Source: admin_content_state key ``constellation``, or a JSON file given as
``--source FILE``. The payload must match fixtures/contracts; the graph written replaces
the previous one (a forced re-run restores the graph from the payload), and verify reads
it back and compares canon-v1 hashes of the graph before anything commits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opsgate import canon, contracts, kb
from opsgate.errors import OpsgateError
from opsgate.migrate import MigrationContext, Plan
from opsgate.schema import KB_TABLES

SOURCE = "legacy"
TARGET = "neon"
DESCRIPTION = "Backfill the kb_* graph from the legacy constellation payload"
TARGET_TABLES = KB_TABLES


def _load(ctx: MigrationContext) -> tuple[dict[str, Any], str]:
    if ctx.source:
        path = Path(ctx.source)
        try:
            return json.loads(path.read_text(encoding="utf-8")), f"file:{path.name}"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OpsgateError(f"payload file {path}: {exc}") from None
    if not ctx.table_exists("admin_content_state"):
        raise OpsgateError("admin_content_state does not exist; pass --source FILE")
    row = ctx.conn.execute(
        "SELECT payload FROM admin_content_state WHERE key = 'constellation'").fetchone()
    if row is None:
        raise OpsgateError("admin_content_state has no 'constellation' key; pass --source FILE")
    return row[0], "admin_content_state:constellation"


def preconditions(ctx: MigrationContext) -> list[str]:
    return [f"table {t} does not exist (run the kb schema migration first)"
            for t in KB_TABLES if not ctx.table_exists(t)]


def plan(ctx: MigrationContext) -> Plan:
    payload, origin = _load(ctx)
    contracts.validate("constellation-payload", payload, "the constellation payload")
    ids = {n["id"] for n in payload["nodes"]}
    dangling = [e for e in payload["edges"] if e["source"] not in ids or e["target"] not in ids]
    if dangling:
        ex = ", ".join(f"{e['source']}->{e['target']}" for e in dangling[:5])
        raise OpsgateError(f"{len(dangling)} edge(s) point at unknown nodes, e.g. {ex}")
    return Plan(payload=payload,
                source_counts={"nodes": len(payload["nodes"]), "edges": len(payload["edges"]),
                               "domains": len(payload["domains"])},
                data={"payload": payload, "origin": origin})


def apply(ctx: MigrationContext, plan: Plan) -> None:
    payload = plan.data["payload"]
    kb.clear(ctx.conn)
    row = ctx.conn.execute(
        "INSERT INTO kb_provenance_runs (source, input_hash, status) VALUES (%s, %s, 'running') "
        "RETURNING id", (plan.data["origin"], canon.document_hash(payload))).fetchone()
    assert row is not None
    kb.write_graph(ctx.conn, payload["nodes"], payload["edges"], int(row[0]))
    ctx.conn.execute("UPDATE kb_provenance_runs SET status = 'succeeded', "
                     "finished_at = clock_timestamp() WHERE id = %s", (row[0],))


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    payload = plan.data["payload"]
    expected = kb.graph_of(payload)
    got = kb.read_graph(ctx.conn)
    if canon.document_hash(got) == canon.document_hash(expected):
        return []
    problems = []
    for part in ("nodes", "edges", "domains"):
        if canon.document_hash(got[part]) != canon.document_hash(expected[part]):
            problems.append(f"{part} read back differ from the payload "
                            f"({len(got[part])} vs {len(expected[part])})")
    return problems or ["the graph read back differs from the payload"]
