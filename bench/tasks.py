"""One measured task per process, so peak RSS is the task's own (bench/run.py).

Usage: python -m bench.tasks TASK JSON_ARGS ; prints one JSON line with the result.
Connection URLs come from the environment (BENCH_URL, BENCH_URL_B, BENCH_API_URL), never
the command line, where any user of the machine could read their passwords.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

import psycopg


def opsgate_hash(args: dict[str, Any]) -> dict[str, Any]:
    """canon.table_hash, through the call it makes, which also says how the bytes came
    (ranges, ranges per connection, bytes spooled, or why one COPY)."""
    from opsgate.verify import tablehash

    with psycopg.connect(os.environ["BENCH_URL"], autocommit=True) as conn:
        h, read = tablehash.table_hash_read(conn, args["table"])
    return {"sha256": h.sha256, "rows": h.rows, "ranges": read.ranges,
            "by_connection": list(read.by_connection), "spooled_bytes": read.spooled_bytes,
            "note": read.note}


def psycopg_copy_hash(args: dict[str, Any]) -> dict[str, Any]:
    """The bare baseline: one COPY statement streamed into hashlib, nothing else."""
    digest = hashlib.sha256()
    with psycopg.connect(os.environ["BENCH_URL"], autocommit=True) as conn:
        for k, v in args["settings"]:
            conn.execute(f"SET {k} = '{v}'")
        with conn.cursor() as cur, cur.copy(args["query"]) as cp:
            for chunk in cp:
                digest.update(chunk)
    return {"sha256": digest.hexdigest()}


def opsgate_drill(args: dict[str, Any]) -> dict[str, Any]:
    from opsgate.config import Settings
    from opsgate.verify.drill import run_drill

    # Restored on the bench's server, as the hand-run baseline restores (and as the
    # recorded figures in docs/performance.md were measured); the gate's default
    # restores into a local PostgreSQL of its own instead.
    result = run_drill(Settings.load(environ={"DATABASE_URL": os.environ["BENCH_URL"],
                                              "OPSGATE_PG_BINDIR": args["bindir"],
                                              "OPSGATE_DRILL_RESTORE": "target-scratch"}))
    return {"problems": result.problems, "timings_s": result.timings_s,
            "archive_bytes": result.archive_bytes}


def opsgate_drift(args: dict[str, Any]) -> dict[str, Any]:
    from opsgate.verify.drift import compare, payload_from_file

    with psycopg.connect(os.environ["BENCH_URL"], autocommit=True) as conn:
        result = compare(payload_from_file(args["payload"]), conn, "file")
    return _drift_out(result)


def opsgate_drift_db(args: dict[str, Any]) -> dict[str, Any]:
    """Drift with the payload read from admin_content_state, as the check does by default."""
    from opsgate.verify.drift import compare, payload_from_database

    with psycopg.connect(os.environ["BENCH_URL"], autocommit=True) as conn:
        result = compare(payload_from_database(conn), conn, "db")
    return _drift_out(result)


def _drift_out(result: Any) -> dict[str, Any]:
    return {"drifted": result.drifted, "nodes": result.payload.nodes,
            "edges": result.payload.edges, "timings_s": result.timings_s,
            "payload_graph_hash": result.payload.graph_hash,
            "kb_graph_hash": result.kb.graph_hash}


def parse_and_copy(args: dict[str, Any]) -> dict[str, Any]:
    """Baseline for drift: parse the payload (ijson) and COPY the kb tables out, no more."""
    import ijson

    items = 0
    with open(args["payload"], "rb") as f:
        for _ in ijson.items(f, "nodes.item", use_float=True):
            items += 1
    with open(args["payload"], "rb") as f:
        for _ in ijson.items(f, "edges.item", use_float=True):
            items += 1
    size = 0
    with psycopg.connect(os.environ["BENCH_URL"], autocommit=True) as conn:
        for table in ("kb_entities", "kb_entity_tags", "kb_edges", "kb_media_objects",
                      "kb_media_derivatives", "kb_entity_sources"):
            with conn.cursor() as cur, cur.copy(f"COPY {table} TO STDOUT") as cp:
                for chunk in cp:
                    size += len(chunk)
    return {"items": items, "bytes": size}


def opsgate_rowdiff(args: dict[str, Any]) -> dict[str, Any]:
    from opsgate.verify import rowdiff

    with psycopg.connect(os.environ["BENCH_URL"], autocommit=True) as a, \
            psycopg.connect(os.environ["BENCH_URL_B"], autocommit=True) as b:
        diff = rowdiff.locate(a, b, args["table"])
    return {"changed": [k[0] for k in diff.changed], "only_in_a": diff.count_only_in_a,
            "only_in_b": diff.count_only_in_b, "buckets_differing": diff.buckets_differing,
            "bucketing": diff.bucketing}


def opsgate_parity(args: dict[str, Any]) -> dict[str, Any]:
    """The parity checks' engine: one streamed fetch, validation item by item, the
    database's counts and digests in one statement (ids read only if they differ)."""
    import tempfile
    from pathlib import Path

    from opsgate.clients import web
    from opsgate.verify import parity

    with tempfile.TemporaryDirectory(prefix="bench-parity-") as tmp:
        spool = Path(tmp) / "spool"
        t = time.monotonic()
        with web.client(os.environ["BENCH_API_URL"], timeout=600) as client:
            api = parity.fetch_and_scan(client, spool)
        scanned = time.monotonic() - t
        with psycopg.connect(os.environ["BENCH_URL"]) as conn:
            db = parity.database_counts(conn)
            same = (db.node_digest, db.edge_digest) == (api.node_digest, api.edge_digest)
            if not same:
                parity.differences(spool, conn)
    return {"error": api.error, "bytes": api.bytes, "nodes": api.nodes, "edges": api.edges,
            "contract_problems": len(api.contract), "dangling": api.dangling,
            "digests_equal": same, "fetch_and_scan_s": round(scanned, 2)}


def fetch_parse_count(args: dict[str, Any]) -> dict[str, Any]:
    """Baseline for parity: one GET with httpx, json.loads of the body, the same counts
    in one SQL statement. No validation, no comparison of ids."""
    import httpx

    t = time.monotonic()
    body = httpx.get(os.environ["BENCH_API_URL"] + "/api/constellation", timeout=600).content
    fetched = time.monotonic() - t
    doc = json.loads(body)
    with psycopg.connect(os.environ["BENCH_URL"]) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM kb_entities), (SELECT count(*) FROM kb_edges), "
            "(SELECT count(*) FROM kb_entities WHERE kind = 'build'), "
            "(SELECT count(*) FROM kb_entities WHERE kind = 'note'), "
            "(SELECT array_agg(DISTINCT domain) FROM kb_entities)").fetchone()
    assert row is not None
    return {"bytes": len(body), "nodes": len(doc["nodes"]), "edges": len(doc["edges"]),
            "db_nodes": row[0], "db_edges": row[1], "fetch_s": round(fetched, 2)}


def opsgate_migration(args: dict[str, Any]) -> dict[str, Any]:
    """One migration through the runner, as ``opsgate migrate run NAME --force`` runs it
    (a dry run unless ``apply``: apply, ANALYZE, verify, then rolled back). With
    ``analyze`` false the runner's ANALYZE of what apply wrote is skipped, to see what it
    is worth. Settings from the env file in BENCH_ENV_FILE."""
    from opsgate.config import Settings
    from opsgate.migrate import runner
    from opsgate.migrate.scripts import find_script

    settings = Settings.load(environ={}, env_file=os.environ["BENCH_ENV_FILE"])
    if not args.get("analyze", True):
        runner._analyze_written = lambda conn, before: None
    script = find_script(args["migrations_dir"], args["name"])
    result = runner.run_migration(script, settings, apply=bool(args.get("apply")),
                                  force=True, reason="bench",
                                  source=args.get("source") if script.source == "legacy" else None,
                                  verbose=False)
    s = result.summary
    return {"exit_code": result.exit_code, "status": s["status"], "message": s["message"],
            "timings_s": s["timings_s"], "counts_after": s["target_counts"]["after"],
            "verify": s["verify"][:5]}


TASKS = {f.__name__: f for f in (opsgate_hash, psycopg_copy_hash, opsgate_drill, opsgate_drift,
                                 opsgate_drift_db, parse_and_copy, opsgate_rowdiff,
                                 opsgate_parity, fetch_parse_count, opsgate_migration)}

if __name__ == "__main__":
    t = time.monotonic()
    out = TASKS[sys.argv[1]](json.loads(sys.argv[2]))
    out["task_wall_s"] = round(time.monotonic() - t, 3)
    with open("/proc/self/status") as status:
        out["vm_hwm_kib"] = next(int(ln.split()[1]) for ln in status if ln.startswith("VmHWM:"))
    print(json.dumps(out))
