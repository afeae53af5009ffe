"""Legacy payload -> kb_*: backfill the knowledge graph from the constellation payload.

Source: admin_content_state key ``constellation``, or a JSON file given as
``--source FILE``. The payload is streamed (validated item by item against
fixtures/contracts), so a million-node file is backfilled in bounded memory; the graph
written replaces the previous one (a forced re-run restores the graph from the payload),
and verify compares the graph read back with the payload, field by field, before
anything commits. Edges pointing at unknown nodes are refused by the foreign keys.
"""

from __future__ import annotations

from opsgate import drift, kb
from opsgate.migrate import MigrationContext, Plan
from opsgate.schema import KB_TABLES

SOURCE = "legacy"
TARGET = "neon"
DESCRIPTION = "Backfill the kb_* graph from the legacy constellation payload"
TARGET_TABLES = KB_TABLES


def _reader(ctx: MigrationContext) -> tuple[drift.PayloadReader, str]:
    if ctx.source:
        return drift.payload_from_file(ctx.source), f"file:{ctx.source.rsplit('/', 1)[-1]}"
    if not ctx.table_exists("admin_content_state"):
        raise drift.DriftInputError("admin_content_state does not exist; pass --source FILE")
    return drift.payload_from_database(ctx.conn), "admin_content_state:constellation"


def preconditions(ctx: MigrationContext) -> list[str]:
    return [f"table {t} does not exist (run the kb schema migration first)"
            for t in KB_TABLES if not ctx.table_exists(t)]


def plan(ctx: MigrationContext) -> Plan:
    reader, origin = _reader(ctx)
    payload_hash, graph_hash, counts = reader.hashes()
    return Plan(payload=None, payload_hash=payload_hash, source_counts=counts,
                data={"reader": reader, "origin": origin, "hash": payload_hash,
                      "graph_hash": graph_hash})


def apply(ctx: MigrationContext, plan: Plan) -> None:
    reader: drift.PayloadReader = plan.data["reader"]
    kb.clear(ctx.conn)
    row = ctx.conn.execute(
        "INSERT INTO kb_provenance_runs (source, input_hash, status) VALUES (%s, %s, 'running') "
        "RETURNING id", (plan.data["origin"], plan.data["hash"])).fetchone()
    assert row is not None
    kb.write_graph(ctx.conn, reader.nodes(), reader.edges(), int(row[0]))
    ctx.conn.execute("UPDATE kb_provenance_runs SET status = 'succeeded', "
                     "finished_at = clock_timestamp() WHERE id = %s", (row[0],))


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    """The graph read back must hash like the payload's graph; only when it does not is
    the (slower) field-by-field comparison run, to name what differs."""
    if drift.kb_graph_hash(ctx.conn) == plan.data["graph_hash"]:
        return []
    result = drift.compare(plan.data["reader"], ctx.conn, plan.data["origin"])
    return result.summary_lines() or ["the kb graph read back hashes differently"]
