"""Each check against a sandbox with one injected fault: exactly the intended check goes
red, with a message naming the fault; the clean sandbox passes every check."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from opsgate.sandbox import Sandbox
from tests.gate_helpers import ROOT, clean_env, run_gate, run_gate_here
from tests.waits import port_closed

ALL_FOUR = "preflight or parity or ledger or health"



@pytest.fixture(autouse=True)
def _gates_here(gate_in_process: None) -> None:
    """The gate runs in this process (pytester), except where the process is the point
    (xdist, pytest's own rootdir search)."""


@pytest.fixture
def clean(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.faults.clear()
    yield sandbox
    sandbox.faults.clear()


def gate(sandbox: Sandbox, tmp_path: Path, **env: str) -> Any:
    return run_gate_here(tmp_path, f"--env-file={sandbox.env_file}", "-m", ALL_FOUR,
                    env=clean_env(**env))


def test_clean_sandbox_passes_every_check(clean: Sandbox, tmp_path: Path) -> None:
    run = gate(clean, tmp_path)
    assert run.code == 0, run.stdout[-3000:]
    assert run.failed() == {}
    modules = {k.split("::")[0] for k in run.outcomes}
    assert modules == {"test_preflight", "test_parity", "test_ledger", "test_health"}


API_FAULTS = [
    ("api-missing-node", "test_node_and_edge_counts_aligned", "node ids in database but not in api"),
    ("api-extra-edge", "test_node_and_edge_counts_aligned", "edges in api but not in database"),
    ("api-dangling-edge", "test_edge_endpoint_integrity", "ghost-node-404"),
    ("api-domain-renamed", "test_domains_aligned", "renamed-craft"),
    ("api-build-as-note", "test_build_and_note_counts_aligned", "build nodes: api 95 != database 96"),
    ("overview-count-off-by-one", "test_admin_overview_counts_match_the_database",
     "admin_history: overview 4 != database 3"),
    ("api-500", "test_node_and_edge_counts_aligned", "answered HTTP 500"),
    ("api-html", "test_response_has_the_contract_shape", "did not return JSON"),
    ("api-login-redirect", "test_response_has_the_contract_shape",
     "answered HTTP 302 redirecting to /login?next=/api/constellation"),
]


@pytest.mark.parametrize(("fault", "test", "needle"), API_FAULTS, ids=[f[0] for f in API_FAULTS])
def test_api_fault_fails_parity_only(clean: Sandbox, tmp_path: Path, fault: str, test: str,
                                     needle: str) -> None:
    clean.faults.set(fault)
    run = gate(clean, tmp_path)
    assert run.code == 1
    assert run.failed_modules() == {"test_parity"}, run.failed()
    message = run.failed().get(f"test_parity::{test}")
    assert message is not None, run.failed()
    assert needle in message, message


@pytest.mark.usefixtures("quick_retries")
def test_api_that_hangs_past_the_timeout(clean: Sandbox, tmp_path: Path) -> None:
    clean.faults.set("api-hang")
    clean.faults.hang_seconds = 1
    run = run_gate_here(tmp_path, f"--env-file={clean.env_file}", "-m", "parity",
                   "-k", "counts_aligned and not build",
                   env=clean_env(OPSGATE_HTTP_TIMEOUT="0.2"))
    assert run.failed_modules() == {"test_parity"}
    (message,) = run.failed().values()
    assert "timed out (no byte of the answer for 0.2 s) after 3 attempts" in message


def test_ledger_row_deleted_fails_the_ledger_check(clean: Sandbox, tmp_path: Path) -> None:
    assert clean.pg is not None
    with clean.pg.connect("app") as conn:
        row = conn.execute("DELETE FROM admin_migrations WHERE name LIKE '%kb_schema' "
                           "RETURNING *").fetchone()
        conn.commit()
        try:
            run = gate(clean, tmp_path)
        finally:
            assert row is not None
            cols = ", ".join("%s" for _ in row)
            conn.execute(f"INSERT INTO admin_migrations VALUES ({cols})",
                         [psycopg.types.json.Jsonb(v) if isinstance(v, dict) else v for v in row])
            conn.commit()
    # Counting admin_migrations, the overview and the database still agree (both changed);
    # the expected markers (the ledger rows of fixtures/expectations/sandbox.toml) do not,
    # and the ledger check alone judges them (the ledger table's floor is its own).
    assert run.failed_modules() == {"test_ledger"}, run.failed()
    message = run.failed()["test_ledger::test_every_migration_is_applied_with_a_payload_hash"]
    assert "20260212_1003_none_to_neon_kb_schema" in message
    assert "admin_migrations has 5 rows, expected at least 6" in message


def test_script_edited_after_apply_fails_the_ledger_check(clean: Sandbox, tmp_path: Path) -> None:
    edited = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", edited)
    script = edited / "20260211_1002_blob_to_neon_admin_state.py"
    script.write_text(script.read_text() + "\n# a quiet edit after apply\n")
    run = gate(clean, tmp_path, OPSGATE_MIGRATIONS_DIR=str(edited))
    assert run.failed_modules() == {"test_ledger"}, run.failed()
    message = run.failed()["test_ledger::test_no_script_changed_after_apply"]
    assert "20260211_1002_blob_to_neon_admin_state" in message


def test_storage_backend_blob_fails_preflight(clean: Sandbox, tmp_path: Path) -> None:
    run = gate(clean, tmp_path, ADMIN_STORAGE_BACKEND="blob")
    assert run.failed_modules() == {"test_preflight"}, run.failed()
    assert "ADMIN_STORAGE_BACKEND is 'blob'" in run.failed()[
        "test_preflight::test_storage_backend_is_neon"]


def test_empty_canonical_table_fails_preflight_not_health(clean: Sandbox,
                                                         tmp_path: Path) -> None:
    """The floor is preflight's fact; health, with no earlier green run, has no trend."""
    assert clean.pg is not None
    with clean.pg.connect("app") as conn:
        conn.execute("CREATE TABLE edges_backup AS SELECT * FROM kb_edges")
        conn.execute("DELETE FROM kb_edges")
        conn.commit()
        try:
            run = run_gate_here(tmp_path, f"--env-file={clean.env_file}", "-m",
                                "preflight or health", env=clean_env())
        finally:
            conn.execute("INSERT INTO kb_edges SELECT * FROM edges_backup")
            conn.execute("DROP TABLE edges_backup")
            conn.commit()
    assert run.failed_modules() == {"test_preflight"}, run.failed()
    assert "kb_edges has 0 rows, expected at least 436" in run.failed()[
        "test_preflight::test_expected_production_markers"]


def test_gate_against_a_target_given_only_by_environment(clean: Sandbox, tmp_path: Path) -> None:
    env = clean.environ()
    run = run_gate_here(tmp_path, "-m", ALL_FOUR, env=clean_env(
        DATABASE_URL=env["DATABASE_URL"], OPS_BASE_URL=env["OPS_BASE_URL"],
        ADMIN_PASSWORD=env["ADMIN_PASSWORD"], ADMIN_STORAGE_BACKEND="neon"))
    assert run.code == 0, run.stdout[-3000:]
    assert len(run.outcomes) == 15 and not run.failed()
    assert "target 127.0.0.1 (" in run.stdout


def test_wrong_admin_password_fails_parity_without_showing_it(clean: Sandbox, tmp_path: Path) -> None:
    run = gate(clean, tmp_path, ADMIN_PASSWORD="wrong-canary-password")
    assert run.failed_modules() == {"test_parity"}
    assert "refused ADMIN_PASSWORD" in run.failed()[
        "test_parity::test_admin_overview_counts_match_the_database"]
    assert "wrong-canary-password" not in run.stdout + run.stderr


@pytest.mark.parametrize("profile", ["plain", pytest.param("neon", marks=pytest.mark.pgbouncer)])
def test_sandbox_up_serves_a_real_target_and_stops_on_sigterm(tmp_path: Path,
                                                               profile: str) -> None:
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen([sys.executable, "-m", "opsgate.cli", "sandbox", "up",
                             "--env-file", str(env_file), "--profile", profile], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"settings in {env_file}" in line, line + proc.stderr.read() if proc.stderr else ""
        assert f"({profile} profile)" in line
        variables = dict(ln.split("=", 1) for ln in env_file.read_text().splitlines()
                         if "=" in ln and not ln.startswith("#"))
        port = variables["DATABASE_URL"].split(":")[-1].split("/")[0]
        if profile == "neon":
            assert "sslmode=require" in variables["DATABASE_URL"]
            assert "channel_binding=require" in variables["DATABASE_URL_UNPOOLED"]
            assert variables["POSTGRES_URL_NON_POOLING"] == variables["DATABASE_URL_UNPOOLED"]
        run = run_gate_here(tmp_path, f"--env-file={env_file}", env=clean_env())
        assert run.code == 0 and len(run.outcomes) == 14, run.stdout[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert not env_file.exists()
    port_closed(int(port))  # the database stopped listening


def test_pytest_sandbox_under_xdist_runs_one_sandbox(tmp_path: Path) -> None:
    run = run_gate(tmp_path, "--sandbox", "-n", "2", env=clean_env(RUN_OPS_HEALTH="true"))
    assert run.code == 0, run.stdout[-3000:]
    assert len(run.outcomes) == 15
    assert "target sandbox" in run.stdout


# -- green means checked ------------------------------------------------------------


@pytest.fixture
def scratch_sandbox() -> Iterator[Sandbox]:
    """A sandbox of its own, for faults that are cheaper to build again than to undo."""
    with Sandbox.start() as sb:
        yield sb


@pytest.mark.parametrize("expectations", ["committed", "built-in"])
def test_a_wiped_graph_is_never_green(scratch_sandbox: Sandbox, tmp_path: Path,
                                      expectations: str) -> None:
    """0 nodes in the API equals 0 rows in the database: parity alone would pass."""
    assert scratch_sandbox.pg is not None
    with scratch_sandbox.pg.connect("app") as conn:
        conn.execute("TRUNCATE kb_entities, kb_edges, kb_provenance_runs CASCADE")
        conn.commit()
    extra = {"OPSGATE_EXPECTATIONS_FILE": ""} if expectations == "built-in" else {}
    run = gate(scratch_sandbox, tmp_path, **extra)
    assert run.code == 1
    assert run.failed_modules() == {"test_preflight"}, run.failed()
    message = run.failed()["test_preflight::test_expected_production_markers"]
    floor = "360" if expectations == "committed" else "1"
    assert f"kb_entities has 0 rows, expected at least {floor}" in message
    assert "kb_edges has 0 rows" in message


def test_a_table_emptied_since_the_last_green_run_turns_health_red(
    scratch_sandbox: Sandbox, tmp_path: Path
) -> None:
    """kb_entity_sources has no floor by default: only the trend can see it go."""
    assert scratch_sandbox.pg is not None
    env = {"OPSGATE_EXPECTATIONS_FILE": ""}
    first = run_gate_here(tmp_path, f"--env-file={scratch_sandbox.env_file}", "-m", "health",
                     env=clean_env(**env))
    assert first.code == 0, first.stdout[-2000:]
    with scratch_sandbox.pg.connect("app") as conn:
        conn.execute("DELETE FROM kb_entity_sources")
        conn.commit()
    second = run_gate_here(tmp_path, f"--env-file={scratch_sandbox.env_file}", "-m", "health",
                      env=clean_env(**env))
    assert second.code == 1
    message = second.failed()["test_health::test_row_counts"]
    assert "kb_entity_sources was emptied: 578 rows in run " in message and "0 now" in message


def test_narrowing_the_gate_the_pytest_way_passes(clean: Sandbox, tmp_path: Path) -> None:
    """A path, a node id or -k narrows the gate as -m does: the flags say what may run."""
    for args in (("checks/test_parity.py",),
                 ("checks/test_preflight.py::test_storage_backend_is_neon",),
                 ("-k", "counts")):
        run = run_gate_here(tmp_path, f"--env-file={clean.env_file}", *args, env=clean_env())
        assert run.code == 0, (args, run.stdout[-1500:])
        assert run.outcomes and not run.failed()
        assert "flags on but their check did not run" not in run.stdout


def test_all_seven_checks_are_green_whatever_the_checks_role_defaults(
    scratch_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A role may carry its own defaults; the checks pin what they read under inside
    their own transactions, so these change nothing on clean data."""
    assert scratch_sandbox.pg is not None
    password = "checker-" + uuid.uuid4().hex
    with scratch_sandbox.pg.connect("app", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE checker LOGIN CREATEDB PASSWORD {}").format(
            sql.Literal(password)))
        conn.execute("GRANT pg_read_all_data TO checker")
        for setting, value in (("DateStyle", "SQL, DMY"), ("TimeZone", "Asia/Kathmandu"),
                               ("extra_float_digits", "0"), ("IntervalStyle", "sql_standard"),
                               ("bytea_output", "escape")):
            conn.execute(sql.SQL("ALTER ROLE checker SET {} = {}").format(
                sql.Identifier(setting), sql.Literal(value)))
    url = scratch_sandbox.environ()["DATABASE_URL"]
    checker_url = url.replace(f"{scratch_sandbox.pg.superuser}:", "checker:", 1).replace(
        f":{scratch_sandbox.pg.url().password}@", f":{password}@", 1)
    with psycopg.connect(checker_url) as probe:
        assert probe.execute("SHOW DateStyle").fetchone() == ("SQL, DMY",)
    run = run_gate_here(tmp_path, f"--env-file={scratch_sandbox.env_file}", env=clean_env(
        DATABASE_URL=checker_url, RUN_OPS_NEON_DRILL="true", RUN_OPS_BLOB_FALLBACK="true",
        RUN_OPS_KNOWLEDGE_DRIFT="true", RUN_OPS_HEALTH="true"))
    assert run.code == 0, run.failed() or run.stdout[-2000:]
    assert {k.split("::")[0] for k in run.outcomes} == {
        "test_preflight", "test_parity", "test_ledger", "test_neon_drill", "test_blob_fallback",
        "test_knowledge_drift", "test_health"}


# -- every red path of every check, shown red ----------------------------------------


def test_a_deployment_that_answers_404_fails_preflight(clean: Sandbox, tmp_path: Path) -> None:
    clean.faults.set("site-404")
    run = gate(clean, tmp_path)
    assert run.failed_modules() == {"test_preflight"}, run.failed()
    assert "answered HTTP 404" in run.failed()["test_preflight::test_deployment_answers"]


def test_a_missing_column_and_a_missing_table_fail_preflight_only(
    scratch_sandbox: Sandbox, tmp_path: Path
) -> None:
    assert scratch_sandbox.pg is not None
    with scratch_sandbox.pg.connect("app") as conn:
        conn.execute("ALTER TABLE kb_edges DROP COLUMN weight")
        conn.execute("DROP TABLE kb_entity_sources")
        conn.commit()
    run = run_gate_here(tmp_path, f"--env-file={scratch_sandbox.env_file}", "-m",
                   "preflight or health", env=clean_env())
    schema = run.failed()["test_preflight::test_database_answers_with_the_contract_schema"]
    assert "kb_edges.weight" in schema and "kb_entity_sources" in schema
    # The schema is preflight's fact: health records the table's count as null.
    assert run.failed_modules() == {"test_preflight"}, run.failed()


@pytest.mark.parametrize(("row", "needle"), [
    (("20990101_9999_none_to_neon_ghost", "applied"),
     "unknown migrations in the ledger: 20990101_9999_none_to_neon_ghost"),
    (("20260210_1001_none_to_neon_admin_schema", "failed"),
     "20260210_1001_none_to_neon_admin_schema status failed"),
], ids=["unknown-migration", "failed-row"])
def test_ledger_rows_that_are_unknown_or_failed_fail_the_ledger(
    clean: Sandbox, tmp_path: Path, row: tuple[str, str], needle: str
) -> None:
    assert clean.pg is not None
    with clean.pg.connect("app") as conn:
        added = conn.execute(
            "INSERT INTO admin_migrations (name, mode, status, payload_hash, script_checksum, "
            "started_at) VALUES (%s, 'apply', %s, 'h', 'c', now()) RETURNING id", row).fetchone()
        conn.commit()
        try:
            run = run_gate_here(tmp_path, f"--env-file={clean.env_file}", "-m", "ledger",
                           env=clean_env())
        finally:
            conn.execute("DELETE FROM admin_migrations WHERE id = %s", added)
            conn.commit()
    message = run.failed()["test_ledger::test_ledger_names_only_known_successful_migrations"]
    assert needle in message


def test_the_drill_through_the_gate_goes_red_on_a_restore_target_that_is_not_empty(
    clean: Sandbox, tmp_path: Path
) -> None:
    assert clean.pg is not None
    occupied = clean.pg.create_database("occupied_" + uuid.uuid4().hex[:8])
    with psycopg.connect(occupied.reveal(), autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (id int)")
    try:
        run = run_gate_here(tmp_path, f"--env-file={clean.env_file}", "-m", "neon_drill",
                       env=clean_env(DRILL_DATABASE_URL=occupied.reveal()))
    finally:
        with clean.pg.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(occupied.reveal().rsplit("/", 1)[1])))
    message = run.failed()["test_neon_drill::test_backup_restores_to_identical_tables"]
    assert "is not empty (has precious)" in message and "never overwrites" in message
    assert occupied.password and occupied.password not in run.stdout


def test_sandbox_up_never_overwrites_an_existing_env_file(tmp_path: Path) -> None:
    existing = tmp_path / ".env.production.local"
    existing.write_text('DATABASE_URL="postgresql://prod@prod-pooler.example/app"\n')
    p = subprocess.run([sys.executable, "-m", "opsgate.cli", "sandbox", "up", "--env-file",
                        str(existing)], cwd=ROOT, capture_output=True, text=True,
                       env=clean_env(), timeout=60)
    assert p.returncode == 2 and "already exists" in p.stderr
    assert existing.read_text().startswith('DATABASE_URL="postgresql://prod@')


def test_gate_options_with_paths_outside_the_project(clean: Sandbox, tmp_path: Path) -> None:
    """In a checkout the options parse in the "=" spelling. pytest's rootdir search reads
    the command line before any plugin's options, so "--env-file PATH" outside the project
    sends it astray: it then finds neither the project's configuration nor its conftest
    (which loads the plugin), and refuses the unknown option itself. Where the plugin is
    loaded anyway (``-p``), it refuses in one line, naming the fix (opsgate gate pins its
    rootdir, and takes the space form: tests/integration/test_wheel.py)."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env_copy = outside / "target.env"
    env_copy.write_text(clean.env_file.read_text())
    reports = outside / "reports"
    reports.mkdir()
    run = run_gate(tmp_path, f"--env-file={env_copy}", f"--reports-dir={reports}",
                   env=clean_env(), timeout=120)
    assert run.code == 0, run.stdout[-2000:]
    assert list((reports / "runs").iterdir())
    unknown = run_gate(tmp_path, "--env-file", str(env_copy), "--reports-dir", str(reports),
                       env=clean_env(), timeout=120)
    assert unknown.code == 4
    assert "unrecognized arguments: --env-file" in unknown.stderr
    # The rootdir search went astray: not the project (which rootdir instead depends on
    # where the checkout and the temporary folder sit), and no configuration found.
    assert "inifile: None" in unknown.stderr and f"rootdir: {ROOT}\n" not in unknown.stderr
    astray = run_gate(tmp_path, "-p", "opsgate.pytest_plugin.plugin", "--env-file",
                      str(env_copy), "--reports-dir", str(reports), env=clean_env(),
                      timeout=120)
    assert astray.code == 4
    assert "took the value of --env-file for a test path" in astray.stderr
    assert "--env-file=PATH" in astray.stderr and "opsgate gate" in astray.stderr
    assert len(list((reports / "runs").iterdir())) == 1  # the refusal wrote nothing
    # Values in the space form parse too: pyproject.toml loads the plugin by name, before
    # pytest reads the command line (from conftest.py alone, "40" would be a test path,
    # and the self-tests' conftest would join the gate). And a CI job's production
    # target in the environment never reaches a sandbox run: not its direct endpoint
    # (the drill would dump production), not a URL libpq cannot even read.
    production = {"DATABASE_URL": "postgresql://prod:pw@[prod.invalid/app",
                  "DATABASE_URL_UNPOOLED": "postgresql://prod:pw@direct.prod.invalid/app",
                  "DRILL_DATABASE_URL": "postgresql://prod:pw@drill.prod.invalid/app",
                  "RUN_OPS_NEON_DRILL": "true"}
    scaled = run_gate(tmp_path, "--sandbox", "--sandbox-scale", "40", "--sandbox-profile",
                      "plain", "--no-reports", env=clean_env() | production, timeout=300)
    assert scaled.code == 0, scaled.stdout[-2000:]
    assert "target sandbox-scale-40 (" in scaled.stdout
    assert "opsgate self-tests" not in scaled.stdout and "prod.invalid" not in scaled.stdout
    assert "test_neon_drill.py" in scaled.stdout


def test_a_killed_sandbox_up_leaves_no_settings_file_behind(tmp_path: Path) -> None:
    """SIGKILL runs no cleanup of the process itself: the cluster's watchdog stops the
    server and also deletes the sandbox's folder and its settings file (passwords)."""
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen([sys.executable, "-m", "opsgate.cli", "sandbox", "up",
                             "--env-file", str(env_file)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=clean_env())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "settings in" in line, line
    port = next(ln.split(":")[-1].split("/")[0] for ln in env_file.read_text().splitlines()
                if ln.startswith("DATABASE_URL"))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while env_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not env_file.exists(), "the watchdog must delete the settings file"
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port))) != 0, "database still listening"


def test_sandbox_up_refuses_an_unknown_fault_before_building(tmp_path: Path) -> None:
    env_file = tmp_path / "s.env"
    p = subprocess.run([sys.executable, "-m", "opsgate.cli", "sandbox", "up", "--env-file",
                        str(env_file), "--fault", "vercel-nope"], cwd=ROOT, env=clean_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "unknown fault(s) vercel-nope; known: api-missing-node" in p.stderr
    assert "opsgate sandbox: building" not in p.stderr and not env_file.exists()
