"""A real PgBouncer in front of a local cluster, configured the way Neon's pooler behaves.

Production reaches Neon through its pooler in transaction mode: a client's session is
not its own, since consecutive transactions may run on different server connections,
and session state (``SET``, prepared statements, advisory locks, temporary tables) that
one client leaves on a server connection is seen by the next. Tests that must catch such
leaks need the real pooler, not a simulation, so this module runs PgBouncer itself:

* ``pool_mode=transaction``, a small ``default_pool_size`` (no reserve pool), so that
  server connections are visibly shared;
* ``auth_type=scram-sha-256`` with an auth_file holding the role's SCRAM verifier, read
  from ``pg_authid`` (`read_scram_verifier`). With the server's own verifier PgBouncer
  can log into the server with the keys of the client's SCRAM exchange, so no plain
  password is ever written to disk. A plain password works too, when that is all there is;
* TLS required on both sides (``client_tls_sslmode=require``, ``server_tls_sslmode=require``);
* 127.0.0.1 on a free port, no unix socket.

Limitation: PgBouncer 1.18 offers SCRAM-SHA-256 only, not SCRAM-SHA-256-PLUS, so
clients of the pooler cannot use ``channel_binding=require`` (libpq then refuses to
connect). Neon's own pooled endpoint accepts it, because Neon's proxy, not PgBouncer,
terminates TLS there; pooled URLs here therefore carry ``sslmode=require`` only.

PgBouncer refuses to run as root; it then runs as the service user of the embedded
cluster. It is a child process in the foreground and dies with us: `PgBouncer.stop`,
``atexit``, and a parent-death signal for the cases where neither runs (SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import psycopg

from opsgate.config import in_effect
from opsgate.errors import PostgresUnavailableError, first_line
from opsgate.processes import exited, wait_exit
from opsgate.sandbox.embedded import _free_port, _service_user
from opsgate.sandbox.lifecycle import Service
from opsgate.sandbox.tlsfiles import TlsFiles, write_private
from opsgate.sensitive import Secret, SecretUrl

DEBIAN_BINARY = Path("/usr/sbin/pgbouncer")
_START_ATTEMPTS = 5
_READY_TIMEOUT = 20.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def find_pgbouncer() -> Path:
    """``OPSGATE_PGBOUNCER`` if set, else ``pgbouncer`` on PATH, else Debian's location."""
    explicit = in_effect().pgbouncer
    if explicit:
        if os.access(explicit, os.X_OK):
            return Path(explicit)
        raise PostgresUnavailableError(
            f"OPSGATE_PGBOUNCER={explicit} is not an executable pgbouncer")
    hit = shutil.which("pgbouncer")
    if hit:
        return Path(hit)
    if os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    raise PostgresUnavailableError(
        "pgbouncer not found (searched OPSGATE_PGBOUNCER, PATH and /usr/sbin); install it "
        "(Debian/Ubuntu: apt-get install pgbouncer) or set OPSGATE_PGBOUNCER")


def read_scram_verifier(admin_url: SecretUrl, role: str) -> Secret | None:
    """The SCRAM-SHA-256 verifier of ``role`` as stored in ``pg_authid`` (readable by a
    superuser only), or None when the role has no SCRAM password (md5, none)."""
    with psycopg.connect(admin_url.reveal(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    value = row[0] if row else None
    if isinstance(value, str) and value.startswith("SCRAM-SHA-256$"):
        return Secret(value)
    return None


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel kill the child when its parent dies.

    Hand-written because ``subprocess`` has no option for it, and one prctl call is not
    worth a dependency (python-prctl). It runs after ``subprocess`` has switched to the
    service user (CPython calls preexec_fn after setreuid), which matters: a change of
    credentials clears the parent-death signal. Caveat: the signal follows the *thread*
    that forked, so start PgBouncer from a long-lived thread (the main one).
    """
    if not sys.platform.startswith("linux"):
        return lambda: None
    # Resolved before the fork: the child should do no more than the system calls.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer(Service):
    """``with PgBouncer(server_port=..., users=..., tls=...) as pooler:``; then
    ``pooler.url(role, password, dbname)``. Every database of the server is reachable."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        server_port: int,
        users: Mapping[str, Secret],
        tls: TlsFiles,
        server_host: str = "127.0.0.1",
        pool_size: int = 3,
        base_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        """``users`` maps each role to its SCRAM verifier (or plain password).
        ``base_dir`` holds the private folder; give the embedded cluster's root so that
        its reaper also removes the folder if this process is killed."""
        self.binary = Path(binary) if binary else find_pgbouncer()
        self.server_host = server_host
        self.server_port = server_port
        self.pool_size = pool_size
        self._users = dict(users)
        self._tls = tls
        self._base_dir = base_dir
        #: The pooler's user (`_service_user`, which may create it): found by `start`,
        #: so that making the object runs nothing.
        self._user: pwd.struct_passwd | None = None
        self.folder: Path | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        if self.folder is not None:
            return
        self._user = _service_user()
        self.folder = Path(tempfile.mkdtemp(prefix="opsgate-pgbouncer-", dir=self._base_dir))
        atexit.register(self.stop)
        try:
            if self._user is not None:
                os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
            self._write_files(self.folder)
            self._launch(self.folder)
        except BaseException:
            self.stop()
            raise

    def _write_files(self, folder: Path) -> None:
        self._tls.install(folder, self._user)
        lines = [f"{_quoted(name)} {_quoted(secret.reveal())}\n"
                 for name, secret in self._users.items()]
        write_private(folder / "userlist.txt", "".join(lines).encode(), self._user)

    def _ini(self, folder: Path, port: int) -> str:
        return "\n".join([
            "[databases]",
            # A fallback entry: every database of the server, under its own name.
            f"* = host={self.server_host} port={self.server_port}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            f"auth_file = {folder / 'userlist.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            "max_client_conn = 200",
            "client_tls_sslmode = require",
            f"client_tls_cert_file = {folder / 'server.crt'}",
            f"client_tls_key_file = {folder / 'server.key'}",
            "server_tls_sslmode = require",
            f"logfile = {folder / 'pgbouncer.log'}",
            "",
        ])

    def _launch(self, folder: Path) -> None:
        last = ""
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            ini = folder / "pgbouncer.ini"
            write_private(ini, self._ini(folder, port).encode(), self._user)
            # Messages before the logfile is open (a bad ini) go to stderr: keep them too.
            self._output = open(folder / "output.log", "ab")  # noqa: SIM115 (closed in stop)
            ids: dict[str, Any] = {}
            if self._user is not None:
                ids = {"user": self._user.pw_uid, "group": self._user.pw_gid,
                       "extra_groups": []}
            self._proc = subprocess.Popen(
                [str(self.binary), str(ini)], stdin=subprocess.DEVNULL, stdout=self._output,
                stderr=subprocess.STDOUT, cwd=str(folder), start_new_session=True,
                preexec_fn=_die_with_parent(), **ids,
            )
            if self._wait_ready(self._proc, port):
                self.port = port
                return
            last = self._last_log_line(folder)
            self._end_process()
            if "in use" not in last:
                break
        raise PostgresUnavailableError(f"pgbouncer did not start: {last or 'no output'}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if exited(proc):
                return False
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                if s.connect_ex((self.host, port)) == 0:
                    return True
            time.sleep(0.05)
        return False

    @staticmethod
    def _last_log_line(folder: Path) -> str:
        for name in ("pgbouncer.log", "output.log"):
            with contextlib.suppress(OSError):
                lines = [ln for ln in (folder / name).read_text(errors="replace").splitlines()
                         if ln.strip()]
                if lines:
                    return first_line(lines[-1])
        return ""

    def _end_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and not exited(proc):
            proc.terminate()  # PgBouncer 1.18: SIGTERM is an immediate shutdown
            if wait_exit(proc, 5) is None:
                proc.kill()
                wait_exit(proc, 5)
        if self._output is not None:
            self._output.close()
            self._output = None

    def stop(self) -> None:
        """End the process (terminate, then kill) and delete the folder. Idempotent."""
        folder, self.folder = self.folder, None
        try:
            self._end_process()
        finally:
            self.port = None
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)

    # -- access ------------------------------------------------------------------

    def url(self, user: str, password: Secret, dbname: str) -> SecretUrl:
        """A client URL through the pooler; TLS required, no channel binding (see above)."""
        if self.port is None:
            raise PostgresUnavailableError("pgbouncer not started")
        return SecretUrl(
            f"postgresql://{quote(user, safe='')}:{quote(password.reveal(), safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}?sslmode=require"
        )

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else "not started"
        return f"PgBouncer({where} -> {self.server_host}:{self.server_port})"
