"""Every safeguard of the runner, against a real PostgreSQL, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opsgate.clients import kb
from opsgate.errors import ScriptError
from opsgate.migrate.scripts import discover_scripts, script_checksum
from opsgate.sandbox import datagen
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.verify import canon
from tests.migration_helpers import (
    ADMIN_SCHEMA,
    ALL,
    BLOB_STATE,
    KB_BACKFILL,
    KB_SCHEMA,
    MIGRATIONS,
    ROOT,
    WIDGETS,
    apply_all,
    cli,
    count,
    database_copy,
    db_fingerprint,
    ledger_rows,
    new_database,
    widget_dir,
)
from tests.waits import backends_gone

FIXTURE = json.loads((ROOT / "fixtures" / "constellation.json").read_text())


@pytest.fixture
def blob_dir(tmp_path: Path) -> Path:
    datagen.write_blob_folder(tmp_path / "blob", "admin/", FIXTURE)
    return tmp_path / "blob"


@pytest.fixture(scope="module")
def applied_template(pg: EmbeddedPostgres,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database the four runbook migrations were applied to by the real CLI, from a
    blob folder of the fixture payload (what ``blob_dir`` holds), built once per module
    (and worker) as a template. Tests whose starting point is that database get a copy
    of it (``applied_db``) instead of four CLI runs each; the test of the apply itself
    still runs them (``test_apply_writes_summary_and_one_ledger_row``)."""
    with new_database(pg, "applied_template") as (name, url):
        blob = tmp_path_factory.mktemp("applied-blob")
        datagen.write_blob_folder(blob, "admin/", FIXTURE)
        apply_all(url, blob)
        yield name


@pytest.fixture
def applied_db(pg: EmbeddedPostgres, applied_template: str) -> Iterator[str]:
    """A fresh copy of ``applied_template`` for one test; yields its URL."""
    with database_copy(pg, applied_template) as url:
        yield url


def test_dry_run_is_the_default_and_leaves_the_database_as_it_was(fresh_db: str, blob_dir: Path) -> None:
    cli(fresh_db, "run", ADMIN_SCHEMA, "--apply")
    cli(fresh_db, "run", KB_SCHEMA, "--apply")
    before = db_fingerprint(fresh_db)
    code, out, _ = cli(fresh_db, "run", BLOB_STATE, "--source", str(blob_dir))
    assert code == 0 and out["mode"] == "dry-run" and out["status"] == "planned"
    # The dry run really ran apply: its counts are the ones an apply would produce.
    assert out["changes"]["admin_content_state"]["inserted"] == 3
    assert out["target_counts"] == {"before": {"admin_content_state": 0, "admin_history": 0},
                                    "after": {"admin_content_state": 3, "admin_history": 3}}
    assert db_fingerprint(fresh_db) == before


def test_dry_run_on_an_empty_database_creates_nothing(fresh_db: str) -> None:
    before = db_fingerprint(fresh_db)
    code, out, _ = cli(fresh_db, "run", ADMIN_SCHEMA)
    assert code == 0 and out["status"] == "planned"
    assert db_fingerprint(fresh_db) == before == {"__tables__": "", "__sequences__": ""}


def test_apply_writes_summary_and_one_ledger_row(fresh_db: str, blob_dir: Path) -> None:
    apply_all(fresh_db, blob_dir)
    rows = ledger_rows(fresh_db)
    assert [r["name"] for r in rows] == list(ALL)
    code, out, err = cli(fresh_db, "run", BLOB_STATE, "--apply", "--source", str(blob_dir))
    assert code == 0 and out["status"] == "noop"
    assert "already applied" in err
    assert len(ledger_rows(fresh_db)) == 4
    row = rows[1]
    assert row["payload_hash"] == out["payload_hash"] == canon.admin_state_hash(
        *datagen.admin_state(FIXTURE))
    assert row["script_checksum"] == script_checksum(MIGRATIONS / f"{BLOB_STATE}.py")
    assert row["source_counts"] == {"content_state_keys": 3, "history_entries": 3}
    assert row["target_counts"]["after"] == {"admin_content_state": 3, "admin_history": 3}
    for key in ("migration", "mode", "status", "source_counts", "target_counts", "changes",
                "payload_hash", "script_checksum", "started_at", "finished_at", "duration_s"):
        assert key in out


def test_changed_source_is_refused_then_forced_with_a_reason(applied_db: str, blob_dir: Path) -> None:
    state = blob_dir / "admin" / "content-state.json"
    doc = json.loads(state.read_text())
    doc["homepage"]["sections"] = 5
    state.write_text(json.dumps(doc))
    before = db_fingerprint(applied_db)
    code, out, err = cli(applied_db, "run", BLOB_STATE, "--apply", "--source", str(blob_dir))
    assert code == 1 and out["status"] == "refused"
    assert "--force --reason" in err
    assert db_fingerprint(applied_db) == before

    code, out, err = cli(applied_db, "run", BLOB_STATE, "--apply", "--force")
    assert code == 1 and out["status"] == "refused" and "--reason" in err

    code, out, _ = cli(applied_db, "run", BLOB_STATE, "--apply", "--force", "--reason",
                       "INC-42: restore homepage from blob", "--source", str(blob_dir))
    assert code == 0 and out["status"] == "applied" and out["mode"] == "force"
    rows = [r for r in ledger_rows(applied_db) if r["name"] == BLOB_STATE]
    assert [r["mode"] for r in rows] == ["apply", "force"]
    assert rows[1]["reason"] == "INC-42: restore homepage from blob"
    assert rows[0]["payload_hash"] != rows[1]["payload_hash"]
    assert out["changes"]["admin_content_state"]["updated"] == 1


def test_failing_precondition_writes_nothing(fresh_db: str, blob_dir: Path) -> None:
    before = db_fingerprint(fresh_db)
    code, out, err = cli(fresh_db, "run", BLOB_STATE, "--apply", "--source", str(blob_dir))
    assert code == 1 and out["status"] == "precondition-failed"
    assert "admin_content_state does not exist" in err
    assert db_fingerprint(fresh_db) == before


def test_verify_failure_rolls_back_data_and_ledger(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path, verify='return ["widget 7 is crooked"]')
    before = db_fingerprint(fresh_db)
    code, out, err = cli(fresh_db, "run", "20260301_2001_none_to_neon_widgets", "--apply",
                         migrations=d)
    assert code == 1 and out["status"] == "verify-failed"
    assert "widget 7 is crooked" in err
    assert out["changes"]["widgets"]["inserted"] == 100  # it did write, then rolled back
    assert db_fingerprint(fresh_db) == before


def test_sigkill_during_apply_leaves_nothing_and_the_next_run_succeeds(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    marker = tmp_path / "in-apply"
    env = {**os.environ, "DATABASE_URL": fresh_db, "WIDGET_MARKER": str(marker),
           "WIDGET_SLEEP": "60"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsgate.migrate", "--migrations-dir", str(d), "run",
         "20260301_2001_none_to_neon_widgets", "--apply"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "runner never reached apply"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The server notices the dropped connection, aborts the transaction, ends the backend.
    backends_gone(fresh_db)
    assert ledger_rows(fresh_db) == []
    assert db_fingerprint(fresh_db)["__tables__"] == ""
    code, out, _ = cli(fresh_db, "run", "20260301_2001_none_to_neon_widgets", "--apply",
                       migrations=d)
    assert code == 0 and out["status"] == "applied"
    assert count(fresh_db, "widgets") == 100 and len(ledger_rows(fresh_db)) == 1


def test_two_runners_at_once_apply_exactly_once(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    env = {**os.environ, "DATABASE_URL": fresh_db, "WIDGET_SLEEP": "1.5"}
    cmd = [sys.executable, "-m", "opsgate.migrate", "--migrations-dir", str(d), "run",
           "20260301_2001_none_to_neon_widgets", "--apply"]
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    statuses = sorted(json.loads(out)["status"] for out, _ in results)
    assert statuses == ["applied", "noop"], results
    assert len(ledger_rows(fresh_db)) == 1


def test_lock_timeout_refuses_with_a_clear_message(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    marker = tmp_path / "in-apply"
    env = {**os.environ, "DATABASE_URL": fresh_db, "WIDGET_SLEEP": "20",
           "WIDGET_MARKER": str(marker)}
    first = subprocess.Popen(
        [sys.executable, "-m", "opsgate.migrate", "--migrations-dir", str(d), "run",
         "20260301_2001_none_to_neon_widgets", "--apply"], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        code, out, err = cli(fresh_db, "run", "20260301_2001_none_to_neon_widgets", "--apply",
                             "--lock-timeout", "1", migrations=d)
        assert code == 1 and out["status"] == "locked"
        assert "another runner holds the lock" in err
    finally:
        first.kill()
        first.wait()


def test_malformed_payload_file_is_one_line_and_writes_nothing(applied_db: str, tmp_path: Path) -> None:
    before = db_fingerprint(applied_db)
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [')
    code, out, err = cli(applied_db, "run", KB_BACKFILL, "--apply", "--force", "--reason", "t",
                         "--source", str(bad))
    assert code == 1 and out["status"] == "failed"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "bad.json" in err
    assert db_fingerprint(applied_db) == before


def test_schema_invalid_payload_is_refused_with_the_path(applied_db: str, tmp_path: Path) -> None:
    before = db_fingerprint(applied_db)
    doc = json.loads(json.dumps(FIXTURE))
    doc["nodes"][3]["tags"] = "not-a-list"
    bad = tmp_path / "invalid.json"
    bad.write_text(json.dumps(doc))
    code, _out, err = cli(applied_db, "run", KB_BACKFILL, "--apply", "--force", "--reason", "t",
                         "--source", str(bad))
    assert code == 1
    assert "$['nodes'][3]['tags']" in err
    assert db_fingerprint(applied_db) == before


class _Handler(BaseHTTPRequestHandler):
    mode = "500"

    def do_GET(self) -> None:
        if self.mode == "hang":
            time.sleep(15)
        self.send_response(500 if self.mode == "500" else 401)
        self.end_headers()
        self.wfile.write(b"boom")

    def log_message(self, *a: Any) -> None:
        pass


@pytest.mark.parametrize("mode", ["500", "401", "hang"])
@pytest.mark.usefixtures("quick_retries")
def test_blob_api_errors_fail_cleanly(fresh_db: str, mode: str) -> None:
    cli(fresh_db, "run", ADMIN_SCHEMA, "--apply")
    before = db_fingerprint(fresh_db)
    handler = type("H", (_Handler,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                     daemon=True).start()
    try:
        token = "vercel_blob_rw_canary-xyz-123"
        code, out, err = cli(fresh_db, "run", BLOB_STATE, "--apply", env={
            "BLOB_READ_WRITE_TOKEN": token,
            "VERCEL_BLOB_API_URL": f"http://127.0.0.1:{server.server_address[1]}",
            "OPSGATE_HTTP_TIMEOUT": "0.2",
        }, timeout=180)
    finally:
        server.shutdown()
    assert code == 1 and out["status"] == "failed"
    expected = {"500": "HTTP 500", "401": "refused BLOB_READ_WRITE_TOKEN", "hang": "timed out"}
    assert expected[mode] in err
    assert token not in err + json.dumps(out)
    assert db_fingerprint(fresh_db) == before


def test_unreachable_database_is_a_configuration_error() -> None:
    code, out, err = cli("postgresql://u:canary-pw-1@127.0.0.1:1/x", "run", ADMIN_SCHEMA)
    assert code == 2 and "cannot connect to postgresql://u:***@127.0.0.1:1/x" in err
    assert "canary-pw-1" not in err + json.dumps(out)
    assert "Traceback" not in err


def test_missing_database_url_names_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_URL")}
    p = subprocess.run([sys.executable, "-m", "opsgate.migrate", "run", ADMIN_SCHEMA],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    assert p.returncode == 2 and "DATABASE_URL" in p.stderr


def test_backfill_round_trips_to_the_same_hash(applied_db: str) -> None:
    import psycopg

    with psycopg.connect(applied_db) as conn:
        graph = kb.read_graph(conn)
    assert canon.document_hash(graph) == canon.document_hash(kb.graph_of(FIXTURE))
    assert len(graph["nodes"]) == len(FIXTURE["nodes"])


def test_status_tells_an_edited_script(fresh_db: str, tmp_path: Path, blob_dir: Path) -> None:
    d = widget_dir(tmp_path)
    cli(fresh_db, "run", "20260301_2001_none_to_neon_widgets", "--apply", migrations=d)
    code, out, _ = cli(fresh_db, "status", "--json", migrations=d)
    assert code == 0 and out["migrations"][0]["state"] == "applied"
    script = d / "20260301_2001_none_to_neon_widgets.py"
    script.write_bytes(script.read_bytes().replace(b"\n", b"\r\n"))  # line endings only
    code, out, _ = cli(fresh_db, "status", "--json", migrations=d)
    assert code == 0 and out["migrations"][0]["state"] == "applied"
    script.write_text(script.read_text() + "\n# edited\n")
    code, out, _ = cli(fresh_db, "status", "--json", migrations=d)
    assert code == 1 and out["migrations"][0]["state"] == "edited-after-apply"


@pytest.mark.parametrize("bad", ["2026_1_a_to_b_c.py", "20261399_1_a_to_b_c.py",
                                 "20260101_1_Blob_to_neon_x.py", "20260101_x_a_to_b_c.py",
                                 "20260101_1_blob_neon_x.py"])
def test_badly_named_script_is_rejected(tmp_path: Path, bad: str) -> None:
    (tmp_path / bad).write_text("")
    with pytest.raises(ScriptError, match=r"YYYYMMDD|not a date"):
        discover_scripts(tmp_path)


def test_duplicate_number_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "20260101_7_a_to_b_one.py").write_text("")
    (tmp_path / "20260101_7_a_to_b_two.py").write_text("")
    with pytest.raises(ScriptError, match="already used"):
        discover_scripts(tmp_path)


def test_cli_rejects_an_unknown_migration(fresh_db: str) -> None:
    code, _, err = cli(fresh_db, "run", "20990101_1_a_to_b_nope")
    assert code == 2 and "no migration named" in err


def test_every_migration_is_in_the_docs_index() -> None:
    index = (ROOT / "docs" / "migrations.md").read_text()
    missing = [s.name for s in discover_scripts(MIGRATIONS) if s.name not in index]
    assert not missing, f"add to docs/migrations.md: {missing}"


SLOW_SCRIPT = '''
from opsgate.migrate import Plan

SOURCE = "none"
TARGET = "neon"
DESCRIPTION = "a statement that runs for five seconds"
TARGET_TABLES = ("slow",)

def preconditions(ctx):
    return []

def plan(ctx):
    return Plan(payload={"slow": 1}, source_counts={})

def apply(ctx, plan):
    ctx.conn.execute("CREATE TABLE slow (x int)")
    ctx.conn.execute("SELECT pg_sleep(5)")

def verify(ctx, plan):
    return []
'''


@pytest.mark.parametrize("how", ["option", "environment"])
def test_statement_timeout_cancels_and_writes_nothing(fresh_db: str, tmp_path: Path,
                                                      how: str) -> None:
    d = tmp_path / "mig"
    d.mkdir()
    (d / "20260302_2002_none_to_neon_slow.py").write_text(SLOW_SCRIPT)
    args = ["--statement-timeout", "0.5"] if how == "option" else []
    env = {"OPSGATE_STATEMENT_TIMEOUT": "0.5"} if how == "environment" else {}
    t0 = time.monotonic()
    code, out, err = cli(fresh_db, "run", "20260302_2002_none_to_neon_slow", "--apply", *args,
                         migrations=d, env=env)
    assert time.monotonic() - t0 < 4.5
    assert code == 1 and out["status"] == "failed", err
    assert out["statement_timeout_s"] == 0.5
    assert "cancelled" in out["message"] and "nothing was committed" in out["message"]
    assert "Traceback" not in err
    assert db_fingerprint(fresh_db)["__tables__"] == ""


def test_options_go_before_or_after_the_command_and_tables_are_for_people(
    fresh_db: str, tmp_path: Path
) -> None:
    env_file = tmp_path / "target.env"
    env_file.write_text(f"DATABASE_URL={fresh_db}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "POSTGRES"))}
    for argv in (["migrate", f"--env-file={env_file}", "status"],
                 ["migrate", "status", "--env-file", str(env_file)]):
        p = subprocess.run([sys.executable, "-m", "opsgate.cli", *argv], capture_output=True,
                           text=True, env=env, cwd=ROOT, timeout=120)
        assert p.returncode == 0 or "pending" in p.stdout, p.stderr
        assert "state" in p.stdout.splitlines()[0] and "pending" in p.stdout
    listing = subprocess.run([sys.executable, "-m", "opsgate.cli", "migrate", "list"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert listing.stdout.splitlines()[0].split() == ["migration", "from", "to", "checksum"]
    as_json = subprocess.run([sys.executable, "-m", "opsgate.cli", "migrate", "list", "--json"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert json.loads(as_json.stdout)[0]["name"] == ADMIN_SCHEMA


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "soon"])
def test_a_bad_timeout_is_a_usage_error(fresh_db: str, value: str) -> None:
    for option in ("--statement-timeout", "--lock-timeout"):
        code, _out, err = cli(fresh_db, "run", ADMIN_SCHEMA, f"{option}={value}")
        assert code == 2 and "is not a number of seconds" in err, err
        assert "Traceback" not in err


def test_a_script_that_raises_is_one_failed_summary(fresh_db: str, tmp_path: Path) -> None:
    d = widget_dir(tmp_path, verify="raise RuntimeError('verify blew up')")
    code, out, err = cli(fresh_db, "run", WIDGETS, "--apply", migrations=d)
    assert code == 1 and out["status"] == "failed"
    assert "the script raised RuntimeError: verify blew up; nothing was committed" in \
        out["message"]
    assert "Traceback" not in err
    assert db_fingerprint(fresh_db)["__tables__"] == ""


def _sigint_as_on_a_terminal() -> None:
    """SIGINT at its default in the child, whatever this run inherited. A shell that
    starts a job in the background without job control ignores SIGINT in it; children
    inherit that, and Python then never turns SIGINT into KeyboardInterrupt: the
    migration ran to the end and this test failed for a reason of the runner's."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_apply_is_one_summary_and_nothing_written(fresh_db: str,
                                                             tmp_path: Path) -> None:
    d = widget_dir(tmp_path)
    marker = tmp_path / "in-apply"
    env = {**os.environ, "DATABASE_URL": fresh_db, "WIDGET_MARKER": str(marker),
           "WIDGET_SLEEP": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "opsgate.migrate", "--migrations-dir",
                             str(d), "run", WIDGETS, "--apply"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_as_on_a_terminal)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["status"] == "failed" and "interrupted" in summary["message"]
    assert "Traceback" not in err
    assert db_fingerprint(fresh_db)["__tables__"] == ""
