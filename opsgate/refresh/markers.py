"""The source's expected production markers, checked in the snapshot that is exported.

The same expectations the gate holds a target to (`opsgate.verify.expectations`):
floors, required domains, required migrations, pinned hashes. A refresh from a source
that fails them would copy a gutted or wrong database over a working mirror.
"""

from __future__ import annotations

from typing import Any

import psycopg

from opsgate.clients import db, kb
from opsgate.migrate import ledger
from opsgate.verify import canon, drift
from opsgate.verify.blob_parity import read_neon_state
from opsgate.verify.expectations import Expectations


def check(conn: psycopg.Connection[Any], exp: Expectations) -> tuple[list[str], dict[str, Any]]:
    """Problems (one line each, with both values) and what was seen, for the summary.
    Runs inside the caller's transaction and only reads."""
    counts = db.count_rows(conn, exp.floors)
    problems = exp.floor_problems(counts)
    seen: dict[str, Any] = {"expectations": exp.source, "counts": counts}
    if exp.required_domains:
        present = kb.domains(conn) if counts.get("kb_entities") is not None else []
        seen["domains"] = present
        missing = [d for d in exp.required_domains if d not in present]
        if missing:
            problems.append(f"required domains missing from kb_entities: {', '.join(missing)}")
    if exp.required_migrations:
        applied = {r["name"] for r in ledger.rows(conn) if r["status"] == "applied"}
        missing = [m for m in exp.required_migrations if m not in applied]
        if missing:
            problems.append(f"required migrations not applied: {', '.join(missing)}")
    pinned = exp.pinned
    if "kb_graph_sha256" in pinned:
        got = drift.kb_graph_hash(conn) if counts.get("kb_entities") is not None else "none"
        seen["kb_graph_sha256"] = got
        if got != pinned["kb_graph_sha256"]:
            problems.append(f"kb graph hash {got}, pinned {pinned['kb_graph_sha256']}")
    if "admin_state_sha256" in pinned:
        got = canon.admin_state_hash(*read_neon_state(conn))
        seen["admin_state_sha256"] = got
        if got != pinned["admin_state_sha256"]:
            problems.append(f"admin state hash {got}, pinned {pinned['admin_state_sha256']}")
    return problems, seen
