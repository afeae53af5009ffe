"""The blob fallback refresh (a repeatable migration), against the sandbox's Neon and
blob server, judged by the gate's own blob_fallback check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate.sandbox import Sandbox
from tests.gate_helpers import GateRun, clean_env, run_gate_here
from tests.migration_helpers import (
    MIGRATIONS,
    ROOT,
    WIDGETS,
    cli,
    db_fingerprint,
    ledger_rows,
)

#: Gate runs go through pytester in this process (verdicts, not processes).
pytestmark = pytest.mark.usefixtures("gate_in_process")

REFRESH = "20261126_1006_neon_to_blob_admin_fallback_refresh"
PREFIX = "admin/"


def migrate(sb: Sandbox, *args: str) -> tuple[int, Any, str]:
    p = subprocess.run(
        [sys.executable, "-m", "opsgate.migrate", f"--env-file={sb.env_file}",
         "--migrations-dir", str(MIGRATIONS), "run", REFRESH, *args],
        capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=120)
    return p.returncode, json.loads(p.stdout), p.stderr


def fallback_gate(sb: Sandbox, tmp_path: Path) -> GateRun:
    return run_gate_here(tmp_path, f"--env-file={sb.env_file}", "-m", "blob_fallback",
                    env=clean_env())


def admin_edit(sb: Sandbox, theme: str) -> None:
    """What the admin UI does in Neon: update a key, append a history entry."""
    with psycopg.connect(sb.environ()["DATABASE_URL"], autocommit=True) as conn, \
            conn.transaction():
        conn.execute("UPDATE admin_content_state SET payload = jsonb_set(payload, "
                     "'{theme}', to_jsonb(%s::text)), version = version + 1, "
                     "updated_at = now() WHERE key = 'site-settings'", (theme,))
        conn.execute("INSERT INTO admin_history (id, key, payload, action, actor, created_at) "
                     "SELECT max(id) + 1, 'site-settings', jsonb_build_object('theme', %s::text), "
                     "'save', 'admin', now() FROM admin_history", (theme,))


def blob_bytes(sb: Sandbox) -> dict[str, bytes]:
    return {b.pathname: b.data for b in sb.bucket.listing(PREFIX)}


def refresh_rows(sb: Sandbox) -> list[dict[str, Any]]:
    return [r for r in ledger_rows(sb.environ()["DATABASE_URL"]) if r["name"] == REFRESH]


def test_admin_edit_makes_the_fallback_red_and_the_refresh_makes_it_green(
        sandbox: Sandbox, tmp_path: Path) -> None:
    sb = sandbox
    assert [s["status"] for s in sb.migrations if s["migration"] == REFRESH] == ["applied"]
    first = fallback_gate(sb, tmp_path)
    assert first.code == 0 and not first.failed(), first.stdout[-2000:]

    admin_edit(sb, "edited-in-neon")
    stale = fallback_gate(sb, tmp_path)
    assert "test_blob_fallback::test_blob_and_neon_hashes_match" in stale.failed(), \
        stale.stdout[-2000:]
    message = stale.failed()["test_blob_fallback::test_blob_and_neon_hashes_match"]
    assert "site-settings" in message
    assert f"refresh the fallback: opsgate migrate run {REFRESH} --apply" in message

    # A dry run writes nothing to the blob store and nothing to the ledger.
    before_blobs, before_rows = blob_bytes(sb), refresh_rows(sb)
    code, out, err = migrate(sb)
    assert code == 0 and out["status"] == "planned", err
    assert out["repeatable"] is True
    assert "would apply again" in err and "applying again" not in err, err
    assert blob_bytes(sb) == before_blobs and refresh_rows(sb) == before_rows

    code, out, err = migrate(sb, "--apply")
    assert code == 0 and out["status"] == "applied" and out["mode"] == "apply", err
    assert "applying again" in err
    rows = refresh_rows(sb)
    assert len(rows) == len(before_rows) + 1
    assert rows[-1]["payload_hash"] == out["payload_hash"] != rows[-2]["payload_hash"]
    assert json.loads(blob_bytes(sb)[PREFIX + "content-state.json"])["site-settings"][
        "theme"] == "edited-in-neon"
    green = fallback_gate(sb, tmp_path)
    assert green.code == 0 and not green.failed(), green.stdout[-2000:]

    # No new edit: a loud no-op, no ledger row, no blob write.
    after_blobs = blob_bytes(sb)
    code, out, err = migrate(sb, "--apply")
    assert code == 0 and out["status"] == "noop", err
    assert len(refresh_rows(sb)) == len(rows)
    assert blob_bytes(sb) == after_blobs


def test_a_blob_store_that_refuses_writes_leaves_no_ledger_row(
        sandbox: Sandbox, tmp_path: Path) -> None:
    sb = sandbox
    admin_edit(sb, "second-edit")
    rows = refresh_rows(sb)
    env = {k: v for k, v in sb.environ().items()}
    env_file = tmp_path / "bad-token.env"
    env["BLOB_READ_WRITE_TOKEN"] = "vercel_blob_rw_not_the_token"
    env_file.write_text("".join(f'{k}="{v}"\n' for k, v in env.items()))
    p = subprocess.run(
        [sys.executable, "-m", "opsgate.migrate", f"--env-file={env_file}",
         "--migrations-dir", str(MIGRATIONS), "run", REFRESH, "--apply"],
        capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=120)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["status"] == "failed", p.stderr
    assert "refused BLOB_READ_WRITE_TOKEN" in out["message"]
    assert "vercel_blob_rw_not_the_token" not in p.stdout + p.stderr
    assert refresh_rows(sb) == rows
    # The fallback stays honestly red until a refresh succeeds.
    assert "test_blob_fallback::test_blob_and_neon_hashes_match" in fallback_gate(
        sb, tmp_path).failed()
    code, out, err = migrate(sb, "--apply")
    assert code == 0 and out["status"] == "applied", err


def test_a_repeatable_script_reapplies_on_a_new_hash_and_a_plain_one_is_refused(
        fresh_db: str, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    repeat = tmp_path / "repeat"
    repeat.mkdir()
    from tests.migration_helpers import SCRIPT_TEMPLATE

    text = SCRIPT_TEMPLATE.format(verify="return []")
    (plain / f"{WIDGETS}.py").write_text(text)
    (repeat / f"{WIDGETS}.py").write_text(text + "\nREPEATABLE = True\n")
    for folder, second in ((plain, "refused"), (repeat, "applied")):
        name = f"t_{folder.name}"
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = fresh_db.rsplit("/", 1)[0] + f"/{name}"
        try:
            code, out, _ = cli(url, "run", WIDGETS, "--apply", migrations=folder,
                               env={"WIDGET_VERSION": "1"})
            assert code == 0 and out["status"] == "applied"
            before = db_fingerprint(url)
            code, out, err = cli(url, "run", WIDGETS, "--apply", migrations=folder,
                                 env={"WIDGET_VERSION": "2"})
            assert out["status"] == second, err
            assert code == (0 if second == "applied" else 1)
            if second == "refused":
                assert db_fingerprint(url) == before
                continue
            code, out, _ = cli(url, "run", WIDGETS, "--apply", migrations=folder,
                               env={"WIDGET_VERSION": "2"})
            assert code == 0 and out["status"] == "noop"
            rows = ledger_rows(url)
            assert [r["mode"] for r in rows] == ["apply", "apply"]
            assert rows[0]["payload_hash"] != rows[1]["payload_hash"]
        finally:
            with psycopg.connect(fresh_db, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {name} WITH (FORCE)")



def read_neon_state_of(url: str) -> tuple[dict[str, object], list[dict[str, object]]]:
    from opsgate.verify.blob_parity import read_neon_state

    with psycopg.connect(url, autocommit=True) as conn:
        return read_neon_state(conn)


def test_the_refresh_writes_a_folder_too_and_it_reads_back_equal(
        fresh_db: str, tmp_path: Path) -> None:
    from opsgate.clients.blob import FileBlobStore, read_admin_state
    from opsgate.sandbox import FIXTURE_PAYLOAD, datagen
    from opsgate.verify import canon
    from opsgate.verify.blob_parity import read_neon_state
    from tests.migration_helpers import ADMIN_SCHEMA, BLOB_STATE

    source = tmp_path / "blob"
    datagen.write_blob_folder(source, PREFIX, json.loads(FIXTURE_PAYLOAD.read_text()))
    for name, extra in ((ADMIN_SCHEMA, []), (BLOB_STATE, ["--source", str(source)])):
        code, out, err = cli(fresh_db, "run", name, "--apply", *extra)
        assert code == 0, err
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("UPDATE admin_content_state SET payload = '{\"hero\": \"new\"}' "
                     "WHERE key = 'homepage'")
        neon = canon.admin_state_hash(*read_neon_state(conn))
    fallback = tmp_path / "fallback"
    code, out, err = cli(fresh_db, "run", REFRESH, "--source", str(fallback))
    assert code == 0 and out["status"] == "planned" and not fallback.exists(), err
    code, out, err = cli(fresh_db, "run", REFRESH, "--apply", "--source", str(fallback))
    assert code == 0 and out["status"] == "applied", err
    # The ledger's payload is the state and its destination: a copy bound for another
    # store is new work (a refreshed database carries production's ledger row).
    assert out["payload_hash"] == canon.document_hash({
        "admin_state": canon.admin_state_document(*read_neon_state_of(fresh_db)),
        "destination": f"folder {fallback.resolve()} {PREFIX}"})
    state = read_admin_state(FileBlobStore(fallback), PREFIX)
    assert canon.admin_state_hash(state.content_state, state.history) == neon
    assert sorted(p.name for p in (fallback / "admin").iterdir()) == [
        "content-state.json", "history.json"]
    # The same state bound for another store (a local copy refreshed from production,
    # whose ledger already holds production's row) is applied, then a no-op there.
    other = tmp_path / "other-store"
    for expected in ("applied", "noop"):
        code, out, err = cli(fresh_db, "run", REFRESH, "--apply", "--source", str(other))
        assert code == 0 and out["status"] == expected, err
    state = read_admin_state(FileBlobStore(other), PREFIX)
    assert canon.admin_state_hash(state.content_state, state.history) == neon
