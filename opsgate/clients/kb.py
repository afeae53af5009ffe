"""The knowledge graph in the ``kb_*`` tables: writing a legacy payload into them and
reading them back as a payload-shaped graph.

Writes go through COPY so a million-entity backfill is bounded by the server, not by
per-row round trips. A node's ``sources`` keep their order in ``kb_entities.body``
(the relational rows in ``kb_entity_sources`` are a set), so a graph read back hashes
like the payload it came from.

Workflows (``kb_workflows``, ``kb_workflow_steps``) are ordered like media: a node's
workflows in id order (ids are handed out in payload order), a workflow's steps by
``position``, which is the step's 0-based index in the payload's ``steps``. A node
without workflows carries no ``workflows`` key (the contract never has it empty).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb, set_json_loads

from opsgate.clients import db
from opsgate.clients.schema import KB_TABLES

GRAPH_KEYS = ("domains", "nodes", "edges")


def graph_of(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The graph part of a legacy payload (envelope fields such as version dropped)."""
    return {k: payload.get(k, []) for k in GRAPH_KEYS}


def clear(conn: psycopg.Connection[Any]) -> None:
    """Empty the graph tables (children cascade); provenance runs are kept as history."""
    conn.execute("DELETE FROM kb_entity_sources")
    conn.execute("DELETE FROM kb_entities")


def write_graph(conn: psycopg.Connection[Any], nodes: Iterable[Mapping[str, Any]],
                edges: Iterable[Mapping[str, Any]], run_id: int) -> dict[str, int]:
    """Write nodes (with tags, media, derivatives, workflows and their steps, sources) and
    edges; returns row counts.

    Nodes are streamed with COPY into a transaction-local staging table as jsonb and
    fanned out into the kb tables by the server, so the client holds one node at a time
    whatever the graph's size (COPY cannot interleave with other statements, which is
    why children are not written from the client while the entity stream is open).
    """
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE kb_stage_nodes (ord bigserial, doc jsonb NOT NULL) "
                    "ON COMMIT DROP")
        with cur.copy("COPY kb_stage_nodes (doc) FROM STDIN") as cp:
            for n in nodes:
                cp.write_row((Jsonb(n),))
        cur.execute("""
            INSERT INTO kb_entities (id, kind, slug, title, domain, summary, body)
            SELECT doc->>'id', doc->>'type', doc->>'id', doc->>'label', doc->>'domain',
                   doc->>'summary', jsonb_build_object('sources', doc->'sources')
            FROM kb_stage_nodes ORDER BY ord""")
        cur.execute("""
            INSERT INTO kb_entity_tags (entity_id, tag)
            SELECT n.doc->>'id', t FROM kb_stage_nodes n,
                   jsonb_array_elements_text(n.doc->'tags') t""")
        cur.execute("""
            INSERT INTO kb_entity_sources (entity_id, provenance_run_id, source_ref)
            SELECT n.doc->>'id', %s, s FROM kb_stage_nodes n,
                   jsonb_array_elements_text(n.doc->'sources') s""", (run_id,))
        cur.execute("""
            CREATE TEMP TABLE kb_stage_media ON COMMIT DROP AS
            SELECT nextval(pg_get_serial_sequence('kb_media_objects', 'id')) AS id,
                   entity_id, media
            FROM (SELECT n.doc->>'id' AS entity_id, m.value AS media
                  FROM kb_stage_nodes n, jsonb_array_elements(n.doc->'media')
                       WITH ORDINALITY AS m(value, pos)
                  ORDER BY n.ord, m.pos) ordered""")
        cur.execute("""
            INSERT INTO kb_media_objects (id, entity_id, url, mime, bytes, sha256)
            SELECT id, entity_id, media->>'url', media->>'mime', (media->>'bytes')::bigint,
                   media->>'sha256'
            FROM kb_stage_media ORDER BY id""")
        cur.execute("""
            INSERT INTO kb_media_derivatives (media_id, variant, url, width, height)
            SELECT sm.id, d.value->>'variant', d.value->>'url', (d.value->>'width')::int,
                   (d.value->>'height')::int
            FROM kb_stage_media sm,
                 jsonb_array_elements(COALESCE(sm.media->'derivatives', '[]'::jsonb))
                 WITH ORDINALITY AS d(value, pos)
            ORDER BY sm.id, d.pos""")
        cur.execute("DROP TABLE kb_stage_media")
        _fan_out_workflows(cur, "kb_stage_nodes")
        cur.execute("DROP TABLE kb_stage_nodes")
        with cur.copy("COPY kb_edges (source_id, target_id, relation, weight) FROM STDIN") as cp:
            for e in edges:
                cp.write_row((e["source"], e["target"], e["relation"], e["weight"]))
    return table_counts(conn, ("kb_entities", "kb_entity_tags", "kb_media_objects",
                               "kb_media_derivatives", "kb_workflows", "kb_workflow_steps",
                               "kb_entity_sources", "kb_edges"))


def _fan_out_workflows(cur: psycopg.Cursor[Any], stage: str) -> tuple[int, int]:
    """Insert the workflows (and steps) of the nodes staged in ``stage`` (``ord``, ``doc``
    with ``id`` and an optional ``workflows``); returns (workflows, steps) inserted. Ids
    are taken in (node, workflow) order, the order they are read back in."""
    cur.execute(sql.SQL("""
        CREATE TEMP TABLE kb_stage_workflows ON COMMIT DROP AS
        SELECT nextval(pg_get_serial_sequence('kb_workflows', 'id')) AS id, entity_id, wf
        FROM (SELECT n.doc->>'id' AS entity_id, w.value AS wf
              FROM {stage} n,
                   jsonb_array_elements(COALESCE(n.doc->'workflows', '[]'::jsonb))
                   WITH ORDINALITY AS w(value, pos)
              ORDER BY n.ord, w.pos) ordered""").format(stage=sql.Identifier(stage)))
    cur.execute("""
        INSERT INTO kb_workflows (id, entity_id, name, status)
        SELECT id, entity_id, wf->>'name', wf->>'status' FROM kb_stage_workflows ORDER BY id""")
    workflows = cur.rowcount
    cur.execute("""
        INSERT INTO kb_workflow_steps (workflow_id, position, name, status)
        SELECT sw.id, s.pos - 1, s.value->>'name', s.value->>'status'
        FROM kb_stage_workflows sw,
             jsonb_array_elements(COALESCE(sw.wf->'steps', '[]'::jsonb))
             WITH ORDINALITY AS s(value, pos)
        ORDER BY sw.id, s.pos""")
    steps = cur.rowcount
    cur.execute("DROP TABLE kb_stage_workflows")
    return workflows, steps


def replace_workflows(conn: psycopg.Connection[Any], nodes: Iterable[Mapping[str, Any]]
                      ) -> dict[str, int]:
    """Make each given node's workflows in the kb exactly its ``workflows`` (none when it
    has no such key); nodes not given are left as they are. Streamed like `write_graph`:
    the client holds one node at a time. Returns the rows written per table (the runner
    reports deletions from the server's own statistics). In the caller's transaction
    (as a savepoint), or in one of its own on an autocommit connection."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE kb_stage_wf_nodes (ord bigserial, doc jsonb NOT NULL) "
                    "ON COMMIT DROP")
        with cur.copy("COPY kb_stage_wf_nodes (doc) FROM STDIN") as cp:
            for n in nodes:
                doc = {"id": n["id"]}
                if n.get("workflows"):
                    doc["workflows"] = n["workflows"]
                cp.write_row((Jsonb(doc),))
        cur.execute("ANALYZE kb_stage_wf_nodes")
        # Steps go with their workflows (ON DELETE CASCADE).
        cur.execute("DELETE FROM kb_workflows w USING kb_stage_wf_nodes n "
                    "WHERE w.entity_id = n.doc->>'id'")
        workflows, steps = _fan_out_workflows(cur, "kb_stage_wf_nodes")
        cur.execute("DROP TABLE kb_stage_wf_nodes")
    return {"kb_workflows": workflows, "kb_workflow_steps": steps}


def _fast_json(cur: psycopg.Cursor[Any] | psycopg.ServerCursor[Any]) -> None:
    """Parse this cursor's jsonb columns (media, steps) with orjson instead of the
    standard library: a client-side loader, on this cursor only (nothing on the server or
    the connection changes). Reading the kb at scale spent a third of its client time in
    json.loads."""
    set_json_loads(orjson.loads, cur)


#: Planner settings of the kb reads, for their transaction only (`db.pin`: nothing
#: outlives it). The reads are two large joins of per-table aggregates, all keyed by the
#: entity and readable in key order from the primary keys. With the defaults, measured:
#: at 100k entities PostgreSQL spent longer compiling the query (JIT, 0.8 s) than
#: running it; at 1M it ran it on two parallel workers that each built every hash table
#: again (32 s), where one process merging the aggregates in index order took 13 s.
#: work_mem lets the final sort and aggregates stay in memory longer.
READ_SETTINGS: tuple[tuple[str, str], ...] = (
    ("jit", "off"), ("work_mem", "64MB"), ("max_parallel_workers_per_gather", "0"),
    ("enable_hashjoin", "off"))

#: A node's parts, each aggregated once per table and joined on the entity (a subquery
#: per entity was a million index probes at 1M entities). Tags and sources are sets in
#: the tables: they are aggregated in no order and sorted by the client, in code point
#: order whatever the database's collation (an ORDER BY inside the aggregate sorted every
#: entity's group on the server: a fifth of the query at 100k entities).
_NODES = sql.SQL("""
    WITH tg AS (
      SELECT entity_id, array_agg(tag) AS tags
      FROM kb_entity_tags GROUP BY entity_id),
    sr AS (
      SELECT entity_id, array_agg(source_ref) AS srcs
      FROM kb_entity_sources GROUP BY entity_id),
    dv AS (
      SELECT media_id, json_agg(json_build_object(
               'variant', variant, 'url', url, 'width', width, 'height', height)
             ORDER BY id) AS derivatives
      FROM kb_media_derivatives GROUP BY media_id),
    md AS (
      SELECT m.entity_id, json_agg(json_build_object(
               'url', m.url, 'mime', m.mime, 'bytes', m.bytes, 'sha256', m.sha256,
               'derivatives', COALESCE(dv.derivatives, '[]'::json)) ORDER BY m.id) AS media
      FROM kb_media_objects m LEFT JOIN dv ON dv.media_id = m.id GROUP BY m.entity_id),
    ws AS (
      SELECT workflow_id, json_agg(json_build_array(position, name, status)
                                   ORDER BY position) AS steps
      FROM kb_workflow_steps GROUP BY workflow_id),
    wf AS (
      SELECT w.entity_id, json_agg(json_build_array(
               w.name, w.status, COALESCE(ws.steps, '[]'::json)) ORDER BY w.id) AS workflows
      FROM kb_workflows w LEFT JOIN ws ON ws.workflow_id = w.id GROUP BY w.entity_id)
    SELECT e.id, e.kind, e.title, e.domain, e.summary, e.body -> 'sources',
      COALESCE(tg.tags, '{{}}'), COALESCE(sr.srcs, '{{}}'), COALESCE(md.media, '[]'::json),
      wf.workflows
    FROM kb_entities e
      LEFT JOIN tg ON tg.entity_id = e.id
      LEFT JOIN sr ON sr.entity_id = e.id
      LEFT JOIN md ON md.entity_id = e.id
      LEFT JOIN wf ON wf.entity_id = e.id
    ORDER BY {order}
""")

_WORKFLOWS = sql.SQL("""
    SELECT w.entity_id, w.name, w.status, COALESCE(st.steps, '[]'::json)
    FROM kb_workflows w LEFT JOIN (
      SELECT workflow_id, json_agg(json_build_array(position, name, status)
                                   ORDER BY position) AS steps
      FROM kb_workflow_steps GROUP BY workflow_id) st ON st.workflow_id = w.id
    ORDER BY {order}, w.id
""")

#: Whether a column sorts in code point order by itself: its collation is "C" or
#: "POSIX", or the database's when that is libc's C or POSIX (the provider column exists
#: from PostgreSQL 15; read through to_jsonb so that 14 answers too).
_CODE_POINT_COLUMNS = """
    SELECT a.attname, coll.collname IN ('C', 'POSIX') OR (
             coll.collname = 'default' AND d.datcollate IN ('C', 'POSIX')
             AND COALESCE(to_jsonb(d) ->> 'datlocprovider', 'c') = 'c')
    FROM pg_attribute a
      JOIN pg_collation coll ON coll.oid = a.attcollation
      CROSS JOIN (SELECT * FROM pg_database WHERE datname = current_database()) d
    WHERE a.attrelid = %s::regclass AND a.attname = ANY(%s)
"""


def order_by(conn: psycopg.Connection[Any], table: str, alias: str,
             columns: Iterable[str]) -> sql.Composable:
    """``ORDER BY`` terms for ``columns`` of ``table`` in code point order (the order
    Python compares strings in, and canon-v1's): ``col COLLATE "C"``, or plain ``col``
    where the column already sorts so. The two give the same order; only the plain one
    lets PostgreSQL read it from an index instead of sorting (at 1M entities, a sort of
    4M edges and one of 1M wide node rows)."""
    wanted = list(columns)
    plain = dict(conn.execute(_CODE_POINT_COLUMNS, (table, wanted)).fetchall())
    return _order_terms(alias, wanted, plain)


def _order_terms(alias: str, columns: list[str], plain: dict[str, bool]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
        if plain.get(c) else
        sql.SQL('{}.{} COLLATE "C"').format(sql.Identifier(alias), sql.Identifier(c))
        for c in columns)


#: The orders of the edges' and the nodes' reads: table, the alias its query uses, columns.
_READ_ORDERS = {"edges": ("kb_edges", "kb_edges", ["source_id", "target_id", "relation"]),
                "nodes": ("kb_entities", "e", ["id"])}

_DOMAINS_AND_CODE_POINT_COLUMNS = """
    SELECT ARRAY(SELECT DISTINCT domain COLLATE "C" FROM kb_entities ORDER BY 1),
      ARRAY(SELECT c.relname || '.' || a.attname
            FROM pg_attribute a
              JOIN pg_class c ON c.oid = a.attrelid
              JOIN pg_collation coll ON coll.oid = a.attcollation
              CROSS JOIN (SELECT * FROM pg_database WHERE datname = current_database()) d
            WHERE a.attrelid = ANY(%s::regclass[]) AND a.attname = ANY(%s)
              AND (coll.collname IN ('C', 'POSIX') OR (
                coll.collname = 'default' AND d.datcollate IN ('C', 'POSIX')
                AND COALESCE(to_jsonb(d) ->> 'datlocprovider', 'c') = 'c')))
"""


def domains_and_orders(conn: psycopg.Connection[Any]
                       ) -> tuple[list[str], dict[str, sql.Composable]]:
    """`domains`, and the `order_by` of `iter_edge_rows` (``"edges"``) and of
    `iter_nodes` (``"nodes"``), in one statement: drift reads all three in one snapshot,
    two round trips fewer than asking for each."""
    tables = sorted({table for table, _, _ in _READ_ORDERS.values()})
    columns = sorted({c for _, _, cols in _READ_ORDERS.values() for c in cols})
    row = db.one_row(conn.execute(_DOMAINS_AND_CODE_POINT_COLUMNS, (tables, columns)),
                     "the graph's domains and column types")
    found, plain = row[0], set(row[1])
    orders = {
        name: _order_terms(alias, cols, {c: f"{table}.{c}" in plain for c in cols})
        for name, (table, alias, cols) in _READ_ORDERS.items()}
    return list(found), orders


def _reading(conn: psycopg.Connection[Any]) -> AbstractContextManager[Any]:
    """The caller's transaction when one is open, else one of our own.

    Not a savepoint inside the caller's: SAVEPOINT and RELEASE would cost two network
    round trips for nothing, since settings pinned with ``set_config(..., true)`` last to
    the end of the whole transaction whether or not a savepoint is released."""
    return nullcontext() if db.in_transaction(conn) else conn.transaction()


def iter_nodes(conn: psycopg.Connection[Any], order: sql.Composable | None = None, *,
               pinned: bool = False) -> Generator[dict[str, Any], None, None]:
    """Nodes in id order, payload-shaped, streamed in bounded memory (`rows`), each with
    its workflows (aggregated in the same query: one stream, so the connection needs no
    second cursor). ``order``: `domains_and_orders`' ``"nodes"``, if already read;
    ``pinned``: the caller's transaction began with `READ_SETTINGS` pinned."""
    with _reading(conn):
        if not pinned:
            db.pin(conn, READ_SETTINGS)
        query = _NODES.format(order=order or order_by(conn, "kb_entities", "e", ["id"]))
        for (nid, kind, title, domain, summary, ordered, tags, srcs, media,
             workflows) in rows(conn, "opsgate_kb_nodes", query, 1000):
            srcs.sort()
            if not (isinstance(ordered, list) and sorted(ordered) == srcs):
                ordered = srcs
            for m in media:
                if not m["derivatives"]:
                    m["derivatives"] = []
            tags.sort()
            node = {"id": nid, "type": kind, "label": title, "domain": domain,
                    "tags": tags, "summary": summary, "media": media, "sources": ordered}
            if workflows:
                node["workflows"] = [{"name": name, "status": status,
                                      "steps": _steps(steps)}
                                     for name, status, steps in workflows]
            yield node


def rows(conn: psycopg.Connection[Any], name: str, query: sql.Composed, size: int
         ) -> Generator[tuple[Any, ...], None, None]:
    """The rows of ``query``, ``size`` at a time, json columns parsed by orjson.

    Streamed in libpq's chunked mode (libpq 17 and later): the server sends the rows as
    it makes them and the client takes them ``size`` at a time, with no round trip per
    batch (the kb's 400k edges at 100k entities: 0.21 s against 0.55 s through a
    server-side cursor fetching 5,000 at a time). With an older libpq, a server-side
    cursor named ``name``. The caller holds a transaction, runs nothing else on the
    connection until the rows end, and closes the generator (``contextlib.closing``)
    before it ends the transaction: a stream stopped at its yield holds the connection's
    lock, and a rollback would wait for it forever."""
    if psycopg.pq.version() >= 170000:
        with conn.cursor() as cur:
            _fast_json(cur)
            yield from cur.stream(query, size=size)
        return
    with conn.cursor(name=name) as named:
        named.itersize = size
        _fast_json(named)
        named.execute(query)
        yield from named


def _steps(raw: list[list[Any]]) -> list[dict[str, Any]]:
    """A workflow's steps from ``[position, name, status]`` rows in position order: a step
    whose position is not its index also carries ``"position"`` (see `iter_workflows`)."""
    steps = []
    for index, (position, step_name, step_status) in enumerate(raw):
        step: dict[str, Any] = {"name": step_name, "status": step_status}
        if position != index:
            step["position"] = position
        steps.append(step)
    return steps


def iter_workflows(conn: psycopg.Connection[Any]
                   ) -> Generator[tuple[str, list[dict[str, Any]]], None, None]:
    """(entity id, its workflows payload-shaped) for every entity that has workflows, in
    entity id order ("C" collation); workflows in id order, steps by position.

    A step is ``{"name", "status"}``; if its ``position`` is not its index among the
    workflow's steps (a gap, or a row written by hand), the step also carries
    ``"position"``, so that a comparison with the payload shows it.
    """
    with _reading(conn), conn.cursor(name="opsgate_kb_workflows") as cur:
        db.pin(conn, READ_SETTINGS)
        cur.itersize = 2000
        _fast_json(cur)
        cur.execute(_WORKFLOWS.format(
            order=order_by(conn, "kb_workflows", "w", ["entity_id"])))
        current: str | None = None
        group: list[dict[str, Any]] = []
        for entity_id, name, status, raw_steps in cur:
            if entity_id != current:
                if current is not None:
                    yield current, group
                current, group = entity_id, []
            group.append({"name": name, "status": status, "steps": _steps(raw_steps)})
        if current is not None:
            yield current, group


def iter_edges(conn: psycopg.Connection[Any]) -> Generator[dict[str, Any], None, None]:
    """Edges ordered by (source, target, relation), from a server-side cursor."""
    for s, t, r, w in iter_edge_rows(conn):
        yield {"source": s, "target": t, "relation": r, "weight": w}


def iter_edge_rows(conn: psycopg.Connection[Any], order: sql.Composable | None = None
                   ) -> Generator[tuple[str, str, str, float], None, None]:
    """`iter_edges` as rows ``(source, target, relation, weight)``: drift makes its
    records from them without a dict per edge (4M edges at 1M entities). ``order``:
    `domains_and_orders`' ``"edges"``, if already read."""
    with _reading(conn):
        order = order or order_by(conn, "kb_edges", "kb_edges",
                                  ["source_id", "target_id", "relation"])
        yield from rows(conn, "opsgate_kb_edges", sql.SQL(
            "SELECT source_id, target_id, relation, weight FROM kb_edges ORDER BY {}"
        ).format(order), 5000)


def domains(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(
        'SELECT DISTINCT domain COLLATE "C" FROM kb_entities ORDER BY 1').fetchall()]


def read_graph(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The whole graph in memory (verification, the reference API at fixture scale)."""
    return {"domains": domains(conn), "nodes": list(iter_nodes(conn)),
            "edges": list(iter_edges(conn))}


def table_counts(conn: psycopg.Connection[Any], tables: Iterable[str] = KB_TABLES
                 ) -> dict[str, int]:
    out = {}
    for t in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()
        out[t] = int(row[0]) if row else 0
    return out
