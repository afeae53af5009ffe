"""Every hash a run's reports show is recomputed with the recipes of
docs/canonical-hashing.md, taken out of the page as written: its psql commands run by
bash, its Python run as is (the `rfc8785` package), SHA-256 by hashlib (the bytes
sha256sum reads). A hash the page cannot explain fails here, and so does a page that
drifts from the code."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from opsgate.cli import main as opsgate_main
from opsgate.sandbox import Sandbox
from tests.gate_helpers import ROOT, clean_env, main_here, run_gate_here

pytestmark = pytest.mark.usefixtures("gate_in_process")

DOC = ROOT / "docs" / "canonical-hashing.md"
HEX64 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
REFRESH = "20261126_1006_neon_to_blob_admin_fallback_refresh"


def recipes() -> dict[str, str]:
    """The page's code blocks that open with ``# recipe: NAME``, by name."""
    found = {}
    for body in re.findall(r"^```[a-z]*\n(.*?)^```", DOC.read_text(), re.S | re.M):
        first, _, rest = body.partition("\n")
        if first.startswith("# recipe: "):
            found[first.removeprefix("# recipe: ").strip()] = rest
    return found


class Auditor:
    """Runs the page's recipes against one database, with the client tools on PATH."""

    def __init__(self, book: dict[str, str], bindir: Path) -> None:
        self.book = book
        self.path = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
        self.python: dict[str, Any] = {}
        for name in ("canon-v1", "payload-hashes", "refresh-hash", "schema-hashes"):
            exec(book[name], self.python)  # the page's own Python, word for word

    def sh(self, name: str, script: str | None = None, **env: str) -> bytes:
        done = subprocess.run(
            ["bash", "-c", "set -eo pipefail\n" + (script or self.book[name])],
            capture_output=True, check=False, timeout=120,
            env={"PATH": self.path, "HOME": os.environ.get("HOME", "/"), **env})
        assert done.returncode == 0, f"recipe {name}: {done.stderr.decode()[-500:]}"
        return done.stdout

    def table_hash(self, url: str, table: str) -> str:
        statement = self.sh("table-statement", DATABASE_URL=url, TABLE=table).decode().strip()
        assert statement.startswith("COPY (SELECT "), statement
        # The recipe ends "| sha256sum": hashlib reads the bytes sha256sum would.
        script = self.book["table-hash"].rstrip()
        assert script.endswith("| sha256sum"), script
        out = self.sh("table-hash", script.removesuffix("| sha256sum"), DATABASE_URL=url,
                      COPY_STATEMENT=statement)
        return hashlib.sha256(out).hexdigest()

    def fn(self, name: str) -> Any:
        return self.python[name]


def test_every_hash_of_the_reports_is_recomputed_from_the_docs(
        sandbox: Sandbox, tmp_path: Path) -> None:
    env = sandbox.environ()
    url = env["DATABASE_URL"]
    # The refresh's payload hash names the blob store's URL, a new port for every
    # sandbox: applied once more here, its last ledger row names this one's.
    forced = main_here(opsgate_main, [
        "migrate", f"--env-file={sandbox.env_file}", "run", REFRESH, "--apply", "--force",
        "--reason", "hashes recomputed by hand, against this sandbox's blob store"],
        env=clean_env())
    assert forced.returncode == 0, forced.stderr[-1000:]

    archive = tmp_path / "archive"
    reports = tmp_path / "reports"
    run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", f"--reports-dir={reports}",
                        env=clean_env(RUN_OPS_NEON_DRILL="true", RUN_OPS_KNOWLEDGE_DRIFT="true",
                                      RUN_OPS_BLOB_FALLBACK="true",
                                      BACKUP_OUTPUT_PATH=str(archive)))
    assert run.code == 0, run.stdout[-3000:]
    (run_dir,) = (reports / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = {t["name"]: t.get("evidence") or {} for c in summary["checks"] for t in c["tests"]}

    auditor = Auditor(recipes(), Path(env["OPSGATE_PG_BINDIR"]))
    canon_v1, load = auditor.fn("canon_v1"), auditor.fn("load")
    recomputed: dict[str, str] = {}  # hash -> what it was recomputed as

    def same(claimed: str, value: str, what: str) -> None:
        assert claimed == value, f"{what}: the report says {claimed}, the docs give {value}"
        recomputed[value] = what

    # -- the drill: every table on both sides, and the combined hashes -----------------
    drill = ev["test_backup_restores_to_identical_tables"]
    restore_db = f"audit_restore_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(restore_db)))
    try:
        restore_url = url.rsplit("/", 1)[0] + "/" + restore_db
        auditor.sh("restore-archive", RESTORE_URL=restore_url, BACKUP_OUTPUT_PATH=str(archive))
        for side, where in (("source", url), ("restored", restore_url)):
            per_table = {}
            for t in drill["tables"]:
                per_table[t["table"]] = auditor.table_hash(where, t["table"])
                same(t[f"{side}_sha256"], per_table[t["table"]], f"{t['table']} ({side})")
            same(drill["canonical_hash"][side], canon_v1(per_table), f"drill combined ({side})")
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(restore_db)))

    # -- knowledge drift and the kb backfills: the legacy payload ----------------------
    payload = load(auditor.sh("constellation-payload", DATABASE_URL=url))
    drift = ev["test_legacy_payload_matches_the_kb_graph"]
    same(drift["payload"]["graph_hash"], auditor.fn("graph_hash")(payload), "graph (payload)")
    kb_graph = load(auditor.sh("kb-graph", DATABASE_URL=url))
    same(drift["kb"]["graph_hash"], canon_v1(kb_graph), "graph (kb)")

    # -- the admin state: blob fallback, and the migrations that copy it ---------------
    state = load(auditor.sh("admin-state", DATABASE_URL=url))
    blob = ev["test_blob_and_neon_hashes_match"]
    same(blob["neon_hash"], canon_v1(state), "admin state (neon)")
    same(blob["blob_hash"], canon_v1(state), "admin state (blob)")

    # -- the ledger: every migration's payload hash, every script's checksum -----------
    store_id = env["BLOB_READ_WRITE_TOKEN"].split("_")[3]
    destination = (f"Vercel Blob at {env['VERCEL_BLOB_API_URL']} store {store_id} "
                   f"{env['ADMIN_BLOB_PREFIX']}")
    expected = {**auditor.fn("schema_hashes"),
                "20260211_1002_blob_to_neon_admin_state": canon_v1(state),
                "20260213_1004_legacy_to_neon_kb_backfill":
                    auditor.fn("kb_backfill_hash")(payload),
                "20260215_1005_legacy_to_neon_kb_workflows_backfill":
                    auditor.fn("workflows_hash")(payload),
                REFRESH: auditor.fn("refresh_hash")(state, destination)}
    migrations = ev["test_every_migration_is_applied_with_a_payload_hash"]["migrations"]
    unexplained = {m["name"] for m in migrations} ^ set(expected)
    assert not unexplained, f"migrations whose payload hash the docs do not give: {unexplained}"
    for m in migrations:
        same(m["payload_hash"], expected[m["name"]], f"ledger {m['name']}")
    for name, checksum in ev["test_no_script_changed_after_apply"]["checksums"].items():
        data = (ROOT / "migrations" / f"{name}.py").read_bytes()
        assert b"\r" not in data  # LF endings: sha256sum of the file as it is
        same(checksum, hashlib.sha256(data).hexdigest(), f"checksum {name}")

    # -- report.html's position in the history (docs/reports.md) -----------------------
    page = (run_dir / "report.html").read_text()
    shown = re.search(r"summary.json SHA-256</th><td><code class='hash'>([0-9a-f]{64})", page)
    assert shown is not None
    same(shown.group(1), hashlib.sha256((run_dir / "summary.json").read_bytes()).hexdigest(),
         "summary.json")

    # -- nothing else: every hash any of the three reports shows was recomputed above ----
    record = (run_dir / "drill-record.md").read_text()
    for name, text in (("summary.json", json.dumps(summary)), ("report.html", page),
                       ("drill-record.md", record)):
        unexplained = set(HEX64.findall(text)) - set(recomputed)
        assert not unexplained, f"{name} shows hashes the docs do not explain: {unexplained}"
    listed = re.findall(r"^    - `(\w+)`: `([0-9a-f]{64})` / `([0-9a-f]{64})`$", record, re.M)
    assert [t for t, _, _ in listed] == [t["table"] for t in drill["tables"]]
    by_table = {t["table"]: t for t in drill["tables"]}
    for table, source, restored in listed:
        assert (source, restored) == (by_table[table]["source_sha256"],
                                      by_table[table]["restored_sha256"])



def test_the_kb_recipe_reads_the_kb_not_the_payload(sandbox: Sandbox, tmp_path: Path) -> None:
    """The kb drifted from the payload (a weight with every digit a double has, a tag, a
    step out of place): drift reports a kb graph hash of its own, and the page's kb
    recipe gives it."""
    url = sandbox.environ()["DATABASE_URL"]
    first_edge = "WHERE id = (SELECT min(id) FROM kb_edges)"
    last_step = "WHERE id = (SELECT max(id) FROM kb_workflow_steps)"
    with psycopg.connect(url, autocommit=True) as conn:
        weight = conn.execute(f"SELECT weight FROM kb_edges {first_edge}").fetchone()
        conn.execute(f"UPDATE kb_edges SET weight = 0.1234567890123457 {first_edge}")
        conn.execute("INSERT INTO kb_entity_tags (entity_id, tag) "
                     "SELECT min(id), 'zz-audit' FROM kb_entities")
        conn.execute(f"UPDATE kb_workflow_steps SET position = position + 100 {last_step}")
        try:
            run = run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m",
                                "knowledge_drift", f"--reports-dir={tmp_path / 'reports'}",
                                env=clean_env())
            auditor = Auditor(recipes(), Path(sandbox.environ()["OPSGATE_PG_BINDIR"]))
            kb_graph = auditor.fn("load")(auditor.sh("kb-graph", DATABASE_URL=url))
        finally:
            conn.execute(f"UPDATE kb_edges SET weight = %s {first_edge}", weight)
            conn.execute("DELETE FROM kb_entity_tags WHERE tag = 'zz-audit'")
            conn.execute(f"UPDATE kb_workflow_steps SET position = position - 100 {last_step}")
    assert run.code == 1, run.stdout[-2000:]
    (run_dir,) = (tmp_path / "reports" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    (drift,) = [t["evidence"] for c in summary["checks"] for t in c["tests"]
                if t["name"] == "test_legacy_payload_matches_the_kb_graph"]
    assert drift["hash_match"] is False
    assert drift["differences"].keys() >= {"changed nodes", "changed edges"}, drift
    assert auditor.fn("canon_v1")(kb_graph) == drift["kb"]["graph_hash"]
