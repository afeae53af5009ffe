"""The Neon-shaped target behaves like production: TLS only, SCRAM, a non-superuser
owner, and PgBouncer in transaction mode in front. Real processes throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from opsgate.clients import db, pgtools
from opsgate.errors import PostgresUnavailableError
from opsgate.sandbox.embedded import EmbeddedPostgres
from opsgate.sandbox.neon_shape import NeonShapedTarget
from opsgate.sandbox.tlsfiles import make_tls_files
from tests.waits import until

pytestmark = pytest.mark.pgbouncer


@pytest.fixture(scope="session")
def neon_target() -> Iterator[NeonShapedTarget]:
    """One Neon-shaped target per test process (each xdist worker has its own).

    Defined here because tests/integration/conftest.py belongs to another change; move
    it there when other modules need it. Tests must leave no session state behind."""
    with NeonShapedTarget() as target:
        yield target


def _with(url: str, **params: str) -> str:
    """``url`` with query parameters replaced or added."""
    base, _, query = url.partition("?")
    merged = dict(p.split("=", 1) for p in query.split("&") if p)
    merged.update(params)
    return base + "?" + "&".join(f"{k}={v}" for k, v in merged.items())


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line names ``text`` (our folders appear in every one of ours:
    postgres -D <root>/data, pgbouncer <root>/.../pgbouncer.ini)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (an orphan waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def test_plain_tcp_is_rejected_by_server_and_pooler(neon_target: NeonShapedTarget) -> None:
    direct = _with(neon_target.direct_url.reveal(), sslmode="disable", channel_binding="disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(direct, connect_timeout=10)
    pooled = _with(neon_target.pooled_url.reveal(), sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(pooled, connect_timeout=10)


def test_direct_connection_requires_and_gets_channel_binding(
    neon_target: NeonShapedTarget,
) -> None:
    assert "channel_binding=require" in neon_target.direct_url.reveal()
    with psycopg.connect(neon_target.direct_url.reveal(), connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True, neon_target.owner)


def test_pooler_cannot_offer_channel_binding(neon_target: NeonShapedTarget) -> None:
    """PgBouncer 1.18 has no SCRAM-SHA-256-PLUS: the documented limitation, pinned."""
    url = _with(neon_target.pooled_url.reveal(), channel_binding="require")
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        psycopg.connect(url, connect_timeout=10)


def test_certificates_verify_against_the_kept_ca(
    neon_target: NeonShapedTarget, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(neon_target.tls.ca_pem)
    for url in (neon_target.direct_url, neon_target.pooled_url):
        strict = _with(url.reveal(), sslmode="verify-full", sslrootcert=str(ca))
        with psycopg.connect(strict, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_owner_is_not_superuser_but_owns_its_database(neon_target: NeonShapedTarget) -> None:
    with psycopg.connect(neon_target.admin_url.reveal(), connect_timeout=10) as admin:
        role = admin.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin,"
            " pg_has_role(rolname, 'neon_superuser', 'MEMBER')"
            " FROM pg_roles WHERE rolname = %s", (neon_target.owner,)).fetchone()
        db_owner = admin.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
            (neon_target.dbname,)).fetchone()
        neon_su = admin.execute(
            "SELECT rolcanlogin, rolcreatedb, rolcreaterole FROM pg_roles"
            " WHERE rolname = 'neon_superuser'").fetchone()
    assert role == (False, True, True, True, True)
    assert db_owner == (neon_target.owner,)
    assert neon_su == (False, True, True)

    with psycopg.connect(neon_target.direct_url.reveal(), autocommit=True) as conn:
        conn.execute("CREATE TABLE owner_probe (id int)")
        conn.execute("DROP TABLE owner_probe")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER SYSTEM SET work_mem = '8MB'")


def test_fresh_pooled_settings_match_server_defaults(neon_target: NeonShapedTarget) -> None:
    by_backend = neon_target.pooled_settings_by_backend()
    assert len(by_backend) == neon_target.pool_size, "every server connection visited"
    fresh, defaults = neon_target.fresh_pooled_settings(), neon_target.server_defaults()
    assert "work_mem" in fresh
    assert fresh == defaults


def test_vercel_env_reaches_the_pooler(
    neon_target: NeonShapedTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = neon_target.vercel_env()
    assert env["DATABASE_URL"] == env["POSTGRES_URL"] == neon_target.pooled_url.reveal()
    assert env["DATABASE_URL_UNPOOLED"] == env["POSTGRES_URL_NON_POOLING"]
    assert env["DATABASE_URL_UNPOOLED"] == neon_target.direct_url.reveal()
    password = env["PGPASSWORD"]
    assert password not in str(neon_target.pooled_url) + repr(neon_target.direct_url)
    assert password not in repr(neon_target)
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("PGSSLMODE", "require")
    with psycopg.connect("", connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (
            neon_target.owner, neon_target.dbname)


def test_a_backend_ended_under_the_first_statement_closes_the_session_with_its_loss(
        neon_target: NeonShapedTarget) -> None:
    """The first statement of a read-only session travels in a pipeline with BEGIN.
    Ended under it through PgBouncer, psycopg failed to leave pipeline mode ("cannot
    exit pipeline mode while busy"), hiding the server's 57P01 and leaving the
    connection open: the run's retry of a read-only check did not see a loss."""
    conn = db.read_only_session(neon_target.pooled_url)
    conn.begin_on_next_statement(db.pin_statement(application_name="opsgate-probe"))
    with conn, psycopg.connect(neon_target.admin_url.reveal(), autocommit=True) as admin:
        admin.execute("SELECT pg_advisory_lock(4242)")  # the statement waits on it
        waiting: list[tuple[int]] = []

        def seen() -> bool:
            waiting[:] = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'opsgate-probe' "
                "AND wait_event_type = 'Lock'").fetchall()
            return bool(waiting)

        def end_it() -> None:
            until(seen, "the probe's statement waiting on the advisory lock")
            admin.execute("SELECT pg_terminate_backend(%s)", waiting[0])

        ender = threading.Thread(target=end_it)
        ender.start()
        try:
            with pytest.raises(psycopg.errors.AdminShutdown,
                               match=r"^terminating connection due to administrator command$"):
                conn.execute("SELECT pg_advisory_xact_lock_shared(4242)")
        finally:
            ender.join()
            admin.execute("SELECT pg_advisory_unlock(4242)")
        assert conn.closed


def test_transaction_pooling_shares_server_connections_and_leaks_session_state() -> None:
    target = NeonShapedTarget(pool_size=1)
    with target:
        assert target.cluster.root is not None and target.pooler is not None
        root, pooler_pid = target.cluster.root, target.pooler.pid
        pooler_folder = target.pooler.folder
        postmaster_pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
        url = target.pooled_url.reveal()
        with psycopg.connect(url, autocommit=True) as a, psycopg.connect(url, autocommit=True) as b:
            ssl = a.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
            assert ssl == (True,)
            pid_a = a.execute("SELECT pg_backend_pid()").fetchone()
            pid_b = b.execute("SELECT pg_backend_pid()").fetchone()
            assert pid_a == pid_b, "two clients, one server connection"
            a.execute("SET statement_timeout = '4321ms'")
            assert b.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
        # The leak test catches exactly this.
        fresh, defaults = target.fresh_pooled_settings(), target.server_defaults()
        assert {k for k in fresh if fresh[k] != defaults.get(k)} == {"statement_timeout"}
    target.stop()  # idempotent

    assert pooler_folder is not None and not pooler_folder.exists()
    assert not root.exists()
    assert pooler_pid is not None and _gone(pooler_pid)
    assert _gone(postmaster_pid)
    assert _processes_mentioning(str(root)) == []


def test_pooler_dies_with_its_owner() -> None:
    """SIGKILL leaves no atexit: the parent-death signal ends PgBouncer, the cluster's
    reaper ends PostgreSQL and deletes the folder, the pooler's included."""
    script = (
        "import time\n"
        "from opsgate.sandbox.neon_shape import NeonShapedTarget\n"
        "t = NeonShapedTarget(pool_size=1); t.start()\n"
        "print(t.cluster.root, t.pooler.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    root_s, pid_s = proc.stdout.readline().split()
    root, pooler_pid = Path(root_s), int(pid_s)
    assert not _gone(pooler_pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    # The reaper exits just after it deletes the folder (its command line names it):
    # wait for all three, not for the first.
    while (root.exists() or not _gone(pooler_pid) or _processes_mentioning(str(root))) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(pooler_pid), "pgbouncer must die with its parent"
    assert not root.exists(), "the reaper must delete the folders"
    assert _processes_mentioning(str(root)) == []


def test_tls_mode_refuses_binaries_without_openssl() -> None:
    wheel = next((b for b in pgtools.discover(pgtools.SERVER_TOOLS + pgtools.CLIENT_TOOLS)
                  if b.origin == "pgserver wheel"), None)
    if wheel is None:
        pytest.skip("pgserver wheel not installed")
    with pytest.raises(PostgresUnavailableError, match="built without OpenSSL"):
        EmbeddedPostgres(wheel, tls=make_tls_files()).start()
