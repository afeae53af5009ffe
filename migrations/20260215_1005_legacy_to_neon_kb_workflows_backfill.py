"""Legacy payload -> kb_workflows, kb_workflow_steps: backfill the runbook workflows.

The kb backfill (20260213_1004) ran before the payload contract had workflows, so
``kb_workflows`` and ``kb_workflow_steps`` stayed empty. This migration writes each
payload node's workflows and their steps (``position`` = the step's 0-based index) for
the entities already in the kb, and touches nothing else of the graph.

- Source: ``admin_content_state`` key ``constellation``, or ``--source FILE``; streamed
  and validated item by item against fixtures/contracts, like the backfill.
- Payload hash: canon-v1 hash of the payload's workflow projection, the document
  ``{"nodes": [{"id", "workflows"}]}`` with every node (nodes by id, ``workflows`` only
  where the node has them, workflows and steps in their order). Applied again with the
  same workflows it is a no-op, whatever else of the payload changed.
- Preconditions: the tables exist; every node that has workflows is a kb entity (else
  the backfill must run first).
- Apply: the index ``kb_workflows (entity_id, id)`` (the foreign key's cascade and a
  node's workflows need it; created if missing), then every payload node's kb workflows
  are replaced by its payload workflows (none if it has none); one provenance run.
- Verify: every payload node's workflows read back from the kb must equal the payload's
  (the projection hashes, and the nodes and places that differ when they do not).
Memory is bounded by the sort chunk (external merge sort), not by the payload.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from opsgate.errors import DriftInputError
from opsgate.migrate import MigrationContext, Plan
from opsgate.target import kb
from opsgate.verify import drift
from opsgate.verify.extsort import external_sorted

SOURCE = "legacy"
TARGET = "neon"
DESCRIPTION = "Backfill kb_workflows and kb_workflow_steps from the legacy payload's workflows"
TARGET_TABLES = ("kb_workflows", "kb_workflow_steps", "kb_provenance_runs")

REQUIRED_TABLES = ("kb_entities", "kb_workflows", "kb_workflow_steps", "kb_provenance_runs")
INDEX_DDL = "CREATE INDEX IF NOT EXISTS kb_workflows_entity_idx ON kb_workflows (entity_id, id)"
EXAMPLES = 10


def _reader(ctx: MigrationContext) -> tuple[drift.PayloadReader, str]:
    if ctx.source:
        return drift.payload_from_file(ctx.source), f"file:{ctx.source.rsplit('/', 1)[-1]}"
    if not ctx.table_exists("admin_content_state"):
        raise DriftInputError("admin_content_state does not exist; pass --source FILE")
    return drift.payload_from_database(ctx.conn), "admin_content_state:constellation"


def _projection(reader: drift.PayloadReader) -> Iterator[dict[str, Any]]:
    """Each payload node as ``{"id"}`` or ``{"id", "workflows"}``, in payload order."""
    for node in reader.nodes():
        member: dict[str, Any] = {"id": node["id"]}
        if node.get("workflows"):
            member["workflows"] = node["workflows"]
        yield member


def _by_id(reader: drift.PayloadReader) -> Iterator[dict[str, Any]]:
    return external_sorted(_projection(reader), key=drift.node_key)


def preconditions(ctx: MigrationContext) -> list[str]:
    problems = [f"table {t} does not exist (run the kb schema migration first)"
                for t in REQUIRED_TABLES if not ctx.table_exists(t)]
    if problems:
        return problems
    reader, _ = _reader(ctx)
    wanted = external_sorted((m["id"] for m in _projection(reader) if "workflows" in m),
                             key=str)
    missing: list[str] = []
    total = 0
    with ctx.conn.cursor(name="opsgate_wf_entities") as cur:
        cur.itersize = 20000
        cur.execute('SELECT id FROM kb_entities ORDER BY id COLLATE "C"')
        have = (r[0] for r in cur)
        current = next(have, None)
        for nid in wanted:
            while current is not None and current < nid:
                current = next(have, None)
            if current != nid:
                total += 1
                if len(missing) < EXAMPLES:
                    missing.append(nid)
    if total:
        problems.append(f"{total} payload node(s) with workflows are not kb entities (run the "
                        f"kb backfill first), e.g. {', '.join(missing)}")
    return problems


def plan(ctx: MigrationContext) -> Plan:
    reader, origin = _reader(ctx)
    h = drift.StreamingArrayHash("nodes")
    counts = {"nodes": 0, "nodes_with_workflows": 0, "workflows": 0, "workflow_steps": 0}
    for member in _by_id(reader):
        h.add(member)
        counts["nodes"] += 1
        wfs = member.get("workflows", [])
        counts["nodes_with_workflows"] += bool(wfs)
        counts["workflows"] += len(wfs)
        counts["workflow_steps"] += sum(len(w["steps"]) for w in wfs)
    payload_hash = h.hexdigest()
    return Plan(payload=None, payload_hash=payload_hash, source_counts=counts,
                data={"reader": reader, "origin": origin, "hash": payload_hash})


def apply(ctx: MigrationContext, plan: Plan) -> None:
    reader: drift.PayloadReader = plan.data["reader"]
    ctx.conn.execute(INDEX_DDL)
    row = ctx.conn.execute(
        "INSERT INTO kb_provenance_runs (source, input_hash, status) VALUES (%s, %s, 'running') "
        "RETURNING id", (plan.data["origin"] + "#workflows", plan.data["hash"])).fetchone()
    assert row is not None
    kb.replace_workflows(ctx.conn, _projection(reader))
    ctx.conn.execute("UPDATE kb_provenance_runs SET status = 'succeeded', "
                     "finished_at = clock_timestamp() WHERE id = %s", (row[0],))


def verify(ctx: MigrationContext, plan: Plan) -> list[str]:
    """Read every payload node's workflows back (one ordered pass over both sides)."""
    reader: drift.PayloadReader = plan.data["reader"]
    read_back = drift.StreamingArrayHash("nodes")
    examples: list[str] = []
    differing = 0
    stored = kb.iter_workflows(ctx.conn)
    try:
        pending = next(stored, None)
        for expected in _by_id(reader):
            nid = expected["id"]
            while pending is not None and pending[0] < nid:
                pending = next(stored, None)
            got: dict[str, Any] = {"id": nid}
            if pending is not None and pending[0] == nid:
                got["workflows"] = pending[1]
                pending = next(stored, None)
            if read_back.add(got) != drift.canonical_member(expected):
                differing += 1
                if len(examples) < EXAMPLES:
                    examples.append(drift.show_example(
                        drift.changed_example(nid, expected, got, ("workflows",))))
    finally:
        stored.close()
    problems = []
    if differing:
        problems.append(f"{differing} node(s) read back with other workflows than the payload's, "
                        f"e.g. {'; '.join(examples)}")
    if read_back.hexdigest() != plan.data["hash"]:
        problems.append(f"the workflows read back hash {read_back.hexdigest()}, the payload's "
                        f"{plan.data['hash']}")
    return problems
