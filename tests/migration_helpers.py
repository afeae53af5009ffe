"""Helpers shared by the migration tests: run the real CLI, hash the whole database."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.verify import canon
from tests.gate_helpers import main_here

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
ADMIN_SCHEMA = "20260210_1001_none_to_neon_admin_schema"
BLOB_STATE = "20260211_1002_blob_to_neon_admin_state"
KB_SCHEMA = "20260212_1003_none_to_neon_kb_schema"
KB_BACKFILL = "20260213_1004_legacy_to_neon_kb_backfill"
ALL = (ADMIN_SCHEMA, BLOB_STATE, KB_SCHEMA, KB_BACKFILL)


def cli(url: str, *args: str, migrations: Path = MIGRATIONS, env: dict[str, str] | None = None,
        timeout: float = 120) -> tuple[int, Any, str]:
    """Run the migration CLI; returns (exit code, parsed stdout JSON, stderr).

    In this process (``opsgate.migrate.cli.main`` with this environment, directory and
    streams), or in a new one when the caller is not the main thread: the CLI's code,
    arguments and output are the same, without an interpreter start and a second import
    of opsgate per call (about 0.4 s each, some ninety calls a run). Tests whose point is
    the process (signals, concurrent runners, the command line itself) start one
    themselves."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("DATABASE_URL", "POSTGRES_URL", "BLOB_", "VERCEL_"))}
    full_env.update({"DATABASE_URL": url, **(env or {})})
    argv = ["--migrations-dir", str(migrations), *args]
    if threading.current_thread() is not threading.main_thread():
        p = subprocess.run([sys.executable, "-m", "opsgate.migrate", *argv],
                           capture_output=True, text=True, env=full_env, timeout=timeout,
                           cwd=ROOT)
    else:
        from opsgate.migrate import cli as migrate_cli

        p = main_here(lambda a: migrate_cli.main(a, prog="python -m opsgate.migrate"), argv,
                      full_env)
    code, stdout, stderr = p.returncode, p.stdout, p.stderr
    try:
        out = json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        out = stdout
    return code, out, stderr


def db_fingerprint(url: str) -> dict[str, str]:
    """canon-v1 hash of every table in public (and the list of tables itself)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        fp = {t: canon.table_hash(conn, t).sha256 for t in tables}
        seqs = conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname='public'")
        fp["__tables__"] = ",".join(tables)
        fp["__sequences__"] = ",".join(sorted(r[0] for r in seqs))
    return fp


def ledger_rows(url: str) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('admin_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        with conn.cursor(row_factory=dict_row) as cur:
            return list(cur.execute("SELECT * FROM admin_migrations ORDER BY id"))


def apply_all(url: str, blob_dir: Path) -> None:
    """The four runbook migrations applied to ``url`` by the real CLI, the blob state
    read from ``blob_dir``."""
    for name in ALL:
        extra = ["--source", str(blob_dir)] if name == BLOB_STATE else []
        code, out, err = cli(url, "run", name, "--apply", *extra)
        assert code == 0, err
        assert out["status"] == "applied", out


@contextmanager
def new_database(pg: EmbeddedPostgres, prefix: str, template: str | None = None
                 ) -> Iterator[tuple[str, str]]:
    """A new database on ``pg`` named ``<prefix>_<random>``, empty or copied from
    ``template`` (CREATE DATABASE ... TEMPLATE, file by file: no connection may be open
    on the template); yields its name and URL and drops it afterwards, also when the
    block fails."""
    name = f"{prefix[:40]}_{random.randrange(1 << 30)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with pg.connect(autocommit=True) as conn:
        conn.execute(create)
    try:
        yield name, pg.url(name).reveal()
    finally:
        with pg.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_copy(pg: EmbeddedPostgres, template: str) -> Iterator[str]:
    """A copy of ``template`` (`new_database`); yields its URL. For tests whose starting
    point is a database some CLI runs built: they build it once as a template and each
    test gets a copy of exactly that."""
    with new_database(pg, f"{template[:40]}_copy", template) as (_, url):
        yield url


def count(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


#: A small migration for runner tests: WIDGET_SLEEP seconds inside apply (its transaction
#: open, a round trip every 0.1 s), WIDGET_MARKER written when apply is reached.
WIDGETS = "20260301_2001_none_to_neon_widgets"

SCRIPT_TEMPLATE = '''
import os, time
from pathlib import Path
from opsgate.migrate import Plan

SOURCE = "none"
TARGET = "neon"
DESCRIPTION = "test migration"
TARGET_TABLES = ("widgets",)

def preconditions(ctx):
    return []

def plan(ctx):
    return Plan(payload={{"widgets": 100, "v": os.environ.get("WIDGET_VERSION", "1")}},
                source_counts={{"widgets": 100}})

def apply(ctx, plan):
    ctx.conn.execute("CREATE TABLE IF NOT EXISTS widgets (id int PRIMARY KEY)")
    ctx.conn.execute("INSERT INTO widgets SELECT g FROM generate_series(1, 100) g "
                     "ON CONFLICT DO NOTHING")
    marker = os.environ.get("WIDGET_MARKER")
    if marker:
        Path(marker).write_text("in apply")
    # Slept in short steps, each followed by a round trip, so that a terminated backend
    # is noticed at once rather than when the whole sleep ends.
    end = time.monotonic() + float(os.environ.get("WIDGET_SLEEP", "0"))
    while time.monotonic() < end:
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        ctx.conn.execute("SELECT 1")

def verify(ctx, plan):
    {verify}
'''


def widget_dir(tmp_path: Path, verify: str = "return []") -> Path:
    d = tmp_path / "mig"
    d.mkdir()
    (d / f"{WIDGETS}.py").write_text(SCRIPT_TEMPLATE.format(verify=verify))
    return d
