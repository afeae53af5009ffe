"""Finding PostgreSQL server and client binaries, and checking their versions.

Order of search, first match per major version wins: an explicit folder
(``OPSGATE_PG_BINDIR``), ``PATH``, ``pg_config --bindir``, the Debian/Ubuntu layout
``/usr/lib/postgresql/<major>/bin``, and last the ``pgserver`` wheel, which ships
PostgreSQL with pg_dump and pg_restore so a machine with only Python still works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import PostgresUnavailableError

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
CLIENT_TOOLS = ("pg_dump", "pg_restore")
DEBIAN_ROOT = Path("/usr/lib/postgresql")


@dataclass(frozen=True, order=True)
class PgBinaries:
    """One folder of PostgreSQL binaries and the version they report."""

    major: int
    minor: int
    bindir: Path
    origin: str

    def tool(self, name: str) -> Path:
        return self.bindir / name

    def has(self, tools: Iterable[str]) -> bool:
        return all(os.access(self.bindir / t, os.X_OK) for t in tools)

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    def describe(self) -> str:
        return f"PostgreSQL {self.version} in {self.bindir} ({self.origin})"


def tool_version(path: Path) -> tuple[int, int] | None:
    """(major, minor) that ``path --version`` reports, or None when it does not run."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.search(out)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def _pgserver_bindir() -> Path | None:
    # Only the wheel's location is needed: importing it would run its own server setup.
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if bindir.is_dir() else None


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
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=20, check=False
            ).stdout.strip()
            if out:
                found.append((Path(out), "pg_config"))
        except (OSError, subprocess.SubprocessError):
            pass
    if debian_root is not None and debian_root.is_dir():
        majors = sorted(
            (d for d in debian_root.iterdir() if d.name.isdigit()),
            key=lambda d: int(d.name),
            reverse=True,
        )
        found.extend((d / "bin", "debian") for d in majors)
    if include_wheel:
        wheel = _pgserver_bindir()
        if wheel is not None:
            found.append((wheel, "pgserver wheel"))
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
        result.append(PgBinaries(v[0], v[1], bindir, origin))
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


def find_client_tools(server_major: int, explicit: str | None = None, **kw: object) -> PgBinaries:
    """pg_dump/pg_restore whose major version is at least the server's.

    pg_dump refuses newer servers, and an older one silently loses features; so an
    older client is never used: the error names the server version and what was found.
    """
    every = discover(CLIENT_TOOLS, explicit=explicit, **kw)  # type: ignore[arg-type]
    fitting = [b for b in every if b.major >= server_major]
    if fitting:
        # Prefer the closest major: it is the one most faithful to the server.
        return min(fitting, key=lambda b: (b.major, every.index(b)))
    seen = ", ".join(b.describe() for b in every) or "none"
    raise PostgresUnavailableError(
        f"server is PostgreSQL {server_major}, but no pg_dump/pg_restore of major version "
        f">= {server_major} was found (found: {seen}); set OPSGATE_PG_BINDIR to a newer client"
    )
